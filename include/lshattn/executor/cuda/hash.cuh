#pragma once
// SimHash on the GPU with the CPU's codes bit for bit.
//
// A bit is defined as [x . w > 0] in exact arithmetic (hash/exact_sign.hpp).
// Keys: a tiled fp32 kernel computes every x . w with fused multiply-adds; the
// computed value differs from the exact one by at most gamma_{d+2} |x| |w|
// (Higham, Accuracy and Stability of Numerical Algorithms, eq. 3.5, with
// Cauchy-Schwarz), the same certificate hash_batch() uses. A bit whose value is
// farther from 0 than that bound has its exact sign; the rest (a fraction of
// about (d+2) 2^-24 sqrt(2 d / pi) for random directions: 7e-5 at d = 128) are
// re-decided exactly by cuda_detail::exact_dot_sign_fixed. Queries: one float64
// dot per hyperplane (products exact, Higham's bound on the sum), same fallback.
// Centring (x = key - mean, rounded to float) is done exactly as the CPU does.

#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>
#include <vector>

#include "lshattn/executor/cuda/common.cuh"
#include "lshattn/hash/simhash.hpp"

namespace lshattn::cuda_detail {

inline constexpr int hash_tile_tokens = 64;
inline constexpr int hash_tile_planes = 160;
inline constexpr int hash_tile_depth = 32;

/// Arguments of hash_rows_kernel: rows [heads][t0, t1) of a strided cache.
template <class T, class Code>
struct hash_rows_args {
  const T* rows;
  std::size_t head_stride, token_stride;
  int dim, K, L, tables_per_tile;
  const float* mean;         ///< [heads][dim] or null (no centring)
  const float* planes;       ///< [K*L][dim]
  const double* plane_norm;  ///< [K*L]
  double gamma;              ///< relative bound of the fp32 dot
  std::size_t t0, t1;
  Code* codes;               ///< code of (head h, table l, token t) at codes[h*head_codes + l*table_codes + (t - t0)*token_codes + first]
  std::size_t head_codes, table_codes, token_codes, first;
};

template <class T>
__device__ __forceinline__ float centred(const T* row, const float* mean, int j) {
  const float v = to_float(row[j]);
  return mean ? v - mean[j] : v;  // one float subtraction, as lsh_index::hash_range does
}

template <class T, class Code>
__global__ void __launch_bounds__(256) hash_rows_kernel(const __grid_constant__ hash_rows_args<T, Code> a) {
  constexpr int TT = hash_tile_tokens, TP = hash_tile_planes, TD = hash_tile_depth;
  struct tiles {
    float x[TT][TD + 1];
    float w[TP][TD + 1];
  };
  union smem_u {
    tiles t;
    float dots[TT][TP + 1];
  };
  __shared__ smem_u sm;
  __shared__ double xnorm[TT];
  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  const int head = blockIdx.z;
  const std::size_t tok0 = a.t0 + static_cast<std::size_t>(blockIdx.x) * TT;
  const int l0 = blockIdx.y * a.tables_per_tile;
  const int ntab = min(a.tables_per_tile, a.L - l0);
  const int p0 = l0 * a.K, np = ntab * a.K;
  const T* base = a.rows + head * a.head_stride;
  const float* mean = a.mean ? a.mean + static_cast<std::size_t>(head) * a.dim : nullptr;

  // Norms of the centred rows, float64 (warp w: rows w, w+8, ...).
  for (int i = warp; i < TT; i += 8) {
    double s = 0.0;
    if (tok0 + i < a.t1) {
      const T* row = base + (tok0 + i) * a.token_stride;
      for (int j = lane; j < a.dim; j += 32) {
        const double v = centred(row, mean, j);
        s += v * v;
      }
    }
#pragma unroll
    for (int o = 16; o; o >>= 1) s += __shfl_xor_sync(0xffffffffu, s, o);
    if (lane == 0) xnorm[i] = sqrt(s);
  }

  const int ty = tid >> 4, tx = tid & 15;  // rows ty*4..+3, planes tx + 16 c
  float acc[4][10] = {};
  for (int d0 = 0; d0 < a.dim; d0 += TD) {
    for (int e = tid; e < TT * TD; e += 256) {
      const int i = e / TD, j = e % TD;
      float v = 0.0f;
      if (tok0 + i < a.t1 && d0 + j < a.dim) v = centred(base + (tok0 + i) * a.token_stride, mean, d0 + j);
      sm.t.x[i][j] = v;
    }
    for (int e = tid; e < TP * TD; e += 256) {
      const int p = e / TD, j = e % TD;
      sm.t.w[p][j] = (p < np && d0 + j < a.dim) ? a.planes[static_cast<std::size_t>(p0 + p) * a.dim + d0 + j] : 0.0f;
    }
    __syncthreads();
#pragma unroll 4
    for (int j = 0; j < TD; ++j) {
      float xv[4], wv[10];
#pragma unroll
      for (int r = 0; r < 4; ++r) xv[r] = sm.t.x[ty * 4 + r][j];
#pragma unroll
      for (int c = 0; c < 10; ++c) wv[c] = sm.t.w[tx + 16 * c][j];
#pragma unroll
      for (int r = 0; r < 4; ++r)
#pragma unroll
        for (int c = 0; c < 10; ++c) acc[r][c] = fmaf(xv[r], wv[c], acc[r][c]);
    }
    __syncthreads();
  }
#pragma unroll
  for (int r = 0; r < 4; ++r)
#pragma unroll
    for (int c = 0; c < 10; ++c) sm.dots[ty * 4 + r][tx + 16 * c] = acc[r][c];
  __syncthreads();

  // Decide and pack: consecutive threads take consecutive tokens of one table (coalesced stores).
  for (int e = tid; e < TT * ntab; e += 256) {
    const int i = e % TT, lt = e / TT;
    const std::size_t t = tok0 + i;
    if (t >= a.t1) continue;
    const T* row = base + t * a.token_stride;
    Code code = 0;
    for (int b = 0; b < a.K; ++b) {
      const int p = lt * a.K + b;
      const float v = sm.dots[i][p];
      const double bound = a.gamma * xnorm[i] * a.plane_norm[p0 + p] + 0x1p-120;
      bool bit;
      if (fabs(static_cast<double>(v)) > bound) {
        bit = v > 0.0f;
      } else {
        const float* w = a.planes + static_cast<std::size_t>(p0 + p) * a.dim;
        bit = exact_dot_sign_fixed([&](int j) { return centred(row, mean, j); }, [&](int j) { return w[j]; }, a.dim) > 0;
      }
      if (bit) code = static_cast<Code>(code | (Code{1} << b));
    }
    a.codes[head * a.head_codes + static_cast<std::size_t>(l0 + lt) * a.table_codes + (t - a.t0) * a.token_codes + a.first] = code;
  }
}

/// A SimHash family's hyperplanes on the device, plus their float64 norms
/// and a transposed copy for the per-query kernel. Built from the host
/// family, so both sides hash with the very same floats.
class device_simhash {
 public:
  device_simhash() = default;
  explicit device_simhash(const hash::simhash<>& f) : family_(f) {
    const std::size_t P = static_cast<std::size_t>(f.bits()) * f.tables(), d = f.dim();
    std::vector<double> norms(P);
    std::vector<float> t(P * d);
    for (std::size_t r = 0; r < P; ++r) {
      double s = 0.0;
      for (std::size_t j = 0; j < d; ++j) {
        const double v = f.hyperplanes()[r * d + j];
        s += v * v;
        t[j * P + r] = f.hyperplanes()[r * d + j];
      }
      norms[r] = std::sqrt(s);
    }
    planes_.reset(P * d);
    planes_t_.reset(P * d);
    norms_.reset(P);
    LSHATTN_CUDA_CHECK(cudaMemcpy(planes_.data(), f.hyperplanes(), P * d * sizeof(float), cudaMemcpyHostToDevice));
    LSHATTN_CUDA_CHECK(cudaMemcpy(planes_t_.data(), t.data(), P * d * sizeof(float), cudaMemcpyHostToDevice));
    LSHATTN_CUDA_CHECK(cudaMemcpy(norms_.data(), norms.data(), P * sizeof(double), cudaMemcpyHostToDevice));
  }
  [[nodiscard]] const hash::simhash<>& family() const noexcept { return family_; }
  [[nodiscard]] const float* planes() const noexcept { return planes_.data(); }
  [[nodiscard]] const float* planes_t() const noexcept { return planes_t_.data(); }
  [[nodiscard]] const double* norms() const noexcept { return norms_.data(); }

  /// Codes of rows [t0, t1) of every head of a device cache, centred by mean
  /// ([heads][dim] device floats, or null). The code of (h, l, t) goes to
  /// codes[h * head_codes + l * table_codes + (t - t0) * token_codes + first].
  template <element_type T, class Code>
  void hash(const T* rows, std::size_t heads, std::size_t head_stride, std::size_t token_stride, const float* mean,
            std::size_t t0, std::size_t t1, Code* codes, std::size_t head_codes, std::size_t table_codes,
            std::size_t token_codes, std::size_t first, cudaStream_t stream) const {
    if (t1 <= t0 || heads == 0) return;
    const int K = family_.bits(), L = family_.tables();
    LSHATTN_REQUIRE(K <= static_cast<int>(sizeof(Code) * 8), unsupported, "K", "K = ", K, " does not fit the code type");
    hash_rows_args<T, Code> a{};
    a.rows = rows;
    a.head_stride = head_stride;
    a.token_stride = token_stride;
    a.dim = static_cast<int>(family_.dim());
    a.K = K;
    a.L = L;
    a.tables_per_tile = hash_tile_planes / K;
    a.mean = mean;
    a.planes = planes_.data();
    a.plane_norm = norms_.data();
    const double u = 0x1p-24 * static_cast<double>(family_.dim() + 2);
    a.gamma = u / (1.0 - u) * 1.0001;  // margin for the norms' own rounding, as hash_batch
    a.t0 = t0;
    a.t1 = t1;
    a.codes = codes;
    a.head_codes = head_codes;
    a.table_codes = table_codes;
    a.token_codes = token_codes;
    a.first = first;
    const dim3 grid(static_cast<unsigned>((t1 - t0 + hash_tile_tokens - 1) / hash_tile_tokens),
                    static_cast<unsigned>((L + a.tables_per_tile - 1) / a.tables_per_tile), static_cast<unsigned>(heads));
    hash_rows_kernel<T, Code><<<grid, 256, 0, stream>>>(a);
    LSHATTN_CUDA_LAUNCHED("hash_rows_kernel");
  }

 private:
  hash::simhash<> family_;
  device_buffer<float> planes_, planes_t_;
  device_buffer<double> norms_;
};

/// [x . w > 0] given s, the float64 sum of the d exact products x_j w_j,
/// and mag, the sum of their magnitudes: certified by Higham's bound
/// gamma_{d+1} mag (as hash::dot_positive), else decided exactly.
template <class XAt, class WAt>
__device__ __forceinline__ bool certified_positive(double s, double mag, int d, XAt x_at, WAt w_at) {
  const double u = 0x1p-53 * static_cast<double>(d + 1);
  if (fabs(s) > u / (1.0 - u) * mag) return s > 0.0;
  return exact_dot_sign_fixed(x_at, w_at, d) > 0;
}

}  // namespace lshattn::cuda_detail
