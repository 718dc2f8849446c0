// Eigen's fp32 GEMM built for avx2: the yardstick for the CPU executor's
// hashing GEMM in bench/cpu_decode.cpp. Eigen is renamed to a namespace of
// this translation unit so that its instantiations, compiled with avx2
// flags, cannot stand in for anyone else's (one definition rule).
#define Eigen lshattn_bench_eigen_avx2
#define EIGEN_DONT_PARALLELIZE
#include <Eigen/Core>
#include <cstddef>

namespace lshattn_bench {
/// C [n][P] = X [n][d] (row stride ldx) * W^T, W [P][d] row-major.
void eigen_gemm_avx2(const float* X, std::size_t n, std::size_t ldx, const float* W, std::size_t P, std::size_t d,
                     float* C) {
  using M = Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
  const Eigen::Map<const M, 0, Eigen::OuterStride<>> Xm(X, static_cast<Eigen::Index>(n), static_cast<Eigen::Index>(d),
                                                         Eigen::OuterStride<>(static_cast<Eigen::Index>(ldx)));
  const Eigen::Map<const M> Wm(W, static_cast<Eigen::Index>(P), static_cast<Eigen::Index>(d));
  Eigen::Map<M> Cm(C, static_cast<Eigen::Index>(n), static_cast<Eigen::Index>(P));
  Cm.noalias() = Xm * Wm.transpose();
}
}  // namespace lshattn_bench
