// Eigen's fp32 GEMM built for one instruction set: the yardstick for the CPU
// executor's hashing GEMM in bench/cpu_decode.cpp. bench/parts/cpu.cmake
// compiles this file once per ISA, with that ISA's flags and
// LSHATTN_BENCH_EIGEN_ISA set to its name (avx2, avx512); the function is then
// eigen_gemm_<isa>. Eigen is renamed to a namespace of the same suffix so that
// its instantiations, compiled with those flags, cannot stand in for anyone
// else's (one definition rule).
#ifndef LSHATTN_BENCH_EIGEN_ISA
#error "LSHATTN_BENCH_EIGEN_ISA must name the instruction set (see bench/parts/cpu.cmake)"
#endif
#define LSHATTN_BENCH_PASTE2(a, b) a##b
#define LSHATTN_BENCH_PASTE(a, b) LSHATTN_BENCH_PASTE2(a, b)
#define Eigen LSHATTN_BENCH_PASTE(lshattn_bench_eigen_, LSHATTN_BENCH_EIGEN_ISA)
#define EIGEN_DONT_PARALLELIZE
#include <Eigen/Core>
#include <cstddef>

namespace lshattn_bench {
/// C [n][P] = X [n][d] (row stride ldx) * W^T, W [P][d] row-major.
void LSHATTN_BENCH_PASTE(eigen_gemm_, LSHATTN_BENCH_EIGEN_ISA)(const float* X, std::size_t n, std::size_t ldx,
                                                              const float* W, std::size_t P, std::size_t d,
                                                              float* C) {
  using M = Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
  const Eigen::Map<const M, 0, Eigen::OuterStride<>> Xm(X, static_cast<Eigen::Index>(n), static_cast<Eigen::Index>(d),
                                                         Eigen::OuterStride<>(static_cast<Eigen::Index>(ldx)));
  const Eigen::Map<const M> Wm(W, static_cast<Eigen::Index>(P), static_cast<Eigen::Index>(d));
  Eigen::Map<M> Cm(C, static_cast<Eigen::Index>(n), static_cast<Eigen::Index>(P));
  Cm.noalias() = Xm * Wm.transpose();
}
}  // namespace lshattn_bench
