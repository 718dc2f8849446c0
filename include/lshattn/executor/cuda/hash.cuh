#pragma once
// SimHash on the GPU with the CPU's codes bit for bit.
//
// A bit is defined as [x . w > 0] in exact arithmetic (hash/exact_sign.hpp).
// Keys, large calls (builds): hash_rows_tc_kernel on tensor cores with its own
// certificate and a float64/exact fix-up of the uncertain pairs (derivation
// above the kernel). Keys, small calls and unsupported shapes: a tiled fp32 kernel computes every x . w with fused multiply-adds; the
// computed value differs from the exact one by at most gamma_{d+2} |x| |w|
// (Higham, Accuracy and Stability of Numerical Algorithms, eq. 3.5, with
// Cauchy-Schwarz), the same certificate hash_batch() uses. A bit whose value is
// farther from 0 than that bound has its exact sign; the rest (a fraction of
// about (d+2) 2^-24 sqrt(2 d / pi) for random directions: 7e-5 at d = 128) are
// re-decided exactly by cuda_detail::exact_dot_sign_fixed. Queries: one float64
// dot per hyperplane (products exact, Higham's bound on the sum), same fallback.
// Centring (x = key - mean, rounded to float) is done exactly as the CPU does.

#include <cuda_runtime.h>

#include <algorithm>
#include <cfloat>
#include <cmath>
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

/// [x . w > 0] given s, the float64 sum of the d exact products x_j w_j,
/// and mag, the sum of their magnitudes: certified by Higham's bound
/// gamma_{d+1} mag (as hash::dot_positive), else decided exactly.
template <class XAt, class WAt>
__device__ __forceinline__ bool certified_positive(double s, double mag, int d, XAt x_at, WAt w_at) {
  const double u = 0x1p-53 * static_cast<double>(d + 1);
  if (fabs(s) > u / (1.0 - u) * mag) return s > 0.0;
  return exact_dot_sign_fixed(x_at, w_at, d) > 0;
}

// ---------------------------------------------------------------------------
// Key hashing on tensor cores (sm_80+), with the same codes as hash_rows_kernel.
//
// Split. Every float x is written exactly as x = x1 + x2 + x3 (split_bf16x3):
// x1 = x truncated to bf16, x2 = x - x1 rounded to the nearest bf16, x3 the
// remaining float. The planes are split the same way once, on the host.
//
// Product. For each 16-wide k chunk s one mma.m16n8k16 (bf16 -> fp32, zero
// accumulator) gives t1_s ~ x1_s . w1_s and two chained ones give
// t2_s ~ x1_s . w2_s + x2_s . w1_s; the 16 values t1_s, t2_s are added in
// IEEE fp32 (plain FADDs) into v. The dropped part of x . w is
// x1 . w3 + x2 . (w2 + w3) + x3 . w.
//
// Tensor-core model (deliberately generous). Products of bf16s are exact in
// fp32, but the fp32 accumulation inside an mma is not IEEE: Fasi, Higham,
// Mikaitis and Pranesh (2021, "Numerical behavior of NVIDIA tensor cores")
// found the operands aligned to the largest one and truncated, with at least
// 24 significant bits kept, and the result normalised by truncation; so one
// mma of c + 16 products loses less than 17 * 2^-23 of max(|c|, |p_i|) plus
// 2^-23 |result|, i.e. at most 2^-18.8 (|c| + sum |p_i|). We assume only
//   |mma(c, p) - (c + sum p_i)| <= rho (|c| + sum |p_i|),  rho = 2^-17,
// which is 3.5 times that, and would still hold if the unit kept just 23 bits
// or added in several truncating stages (up to 64 operand truncations of
// 2^-23 each). tests/cuda's host suite checks the whole bound against an
// emulation of such a unit.
//
// Bound. With S11 = sum_i |x1_i w1_i| and Sx = sum_i (|x1_i w2_i| + |x2_i w1_i|):
//   t1 errors       <= rho S11
//   t2 errors       <= rho Sx + rho (|first mma| + ...) <= rho (2 + rho) Sx
//   the 16 FADDs    <= gamma_16 (|t1| + |t2| summed) <= gamma_16 (1 + 2 rho)(S11 + Sx)
// (Higham, recursive summation; u = 2^-24), so with
//   kappa = (rho + gamma_16) (1 + 2^-10)
// the computed v differs from x1.w1 + x1.w2 + x2.w1 by at most
// kappa (S11 + 2 Sx); by Cauchy-Schwarz S11 <= |x1||w1|, Sx <= |x1||w2| + |x2||w1|,
// and the dropped part is at most |x1||w3| + |x2||w2 + w3| + |x3||w|. So
//   |v - x.w| <= a1 P1 + a2 P2 + a3 P3,   a_k = |x_k|,
//   P1 = kappa (|w1| + 2 |w2|) + |w3|,  P2 = 2 kappa |w1| + |w2 + w3|,  P3 = |w|.
// The a_k are fp32 sums of squares (+ 2^-119 for underflow, then sqrtf, then
// x (1 + 2^-12) for the sum's rounding, gamma_128 < 2^-16); the P_k are
// computed in float64 on the host and rounded up. Subnormal parts or products
// that a unit might flush, underflowing FADDs and a flush-to-zero build are
// covered by an absolute term 2^-120 (12 (|x| + |w|) + 128) (each of those
// losses is at most 2^-126 per element and operand, d <= 128, sqrt(d) < 12).
// The bound itself is evaluated with four float operations on non-negative
// numbers and multiplied by 1 + 2^-10. A value with |v| above it (and
// finite) has the sign of x . w; the rest are "uncertain".
//
// Size of the bound for N(0, I) keys and Gaussian planes: kappa ~ 8.6e-6,
// |x2| ~ 2^-9 |x|, |x3| ~ 2^-18 |x|, so a1 P1 + a2 P2 + a3 P3 ~ 2e-5 |x||w| and
// a fraction ~ 2 sqrt(d / (2 pi)) 2e-5 ~ 2e-4 of the pairs is uncertain.
//
// Uncertain pairs. Appended (warp-aggregated atomic) to a list sized with ~5x
// headroom over that; hash_fixup_kernel then decides each by a float64 dot
// (products exact, Higham's gamma_{d+1} bound: certified_positive) and, if
// that is still uncertain, exact_dot_sign_fixed, and ORs the bit into the
// code. A pair that finds the list full is decided the same way inline by
// its own thread (correct, only slower), so no input can make it wrong.
// ---------------------------------------------------------------------------

namespace hash_tc {

inline constexpr int tokens = 128;   // block: tokens, split once and kept in shared memory
inline constexpr int planes = 80;    // plane tile (whole tables of K); a block loops over its plane tiles
inline constexpr int depth = 128;    // k extent: rows are zero-padded to it
inline constexpr int kchunk = 64;    // k of the planes staged in shared memory at a time (2 stages)
inline constexpr int threads = 256;  // 8 warps: 4 (tokens) x 2 (planes), 32 x 40 each
inline constexpr int warp_tokens = 32;
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ < 900
inline constexpr int min_blocks = 1;  // sm_8x: at most 164 KB of shared memory per SM, one block
#else
inline constexpr int min_blocks = 2;  // sm_90: two blocks per SM (128 registers a thread)
#endif
inline constexpr int warp_planes = 40;
inline constexpr double rho = 0x1p-17;

/// kappa of the derivation above.
inline constexpr double kappa() {
  constexpr double u = 0x1p-24, g16 = 16 * u / (1 - 16 * u);
  return (rho + g16) * (1 + 0x1p-10);
}

/// x = x1 + x2 + x3 exactly for finite x: x1 (bits hi) is x truncated to
/// bf16, x2 (bits mid) is x - x1 rounded to the nearest bf16 (ties to even),
/// x3 = x - x1 - x2 (at most 8 significant bits). x - x1 is exact (the low
/// half of x's significand); x2 cannot overflow (|x - x1| < 2^-7 |x|); x3 is
/// a rounding error of a float, representable. With flush-to-zero a
/// subnormal x - x1 may become 0: the bound's absolute term covers that.
LSHATTN_HOST_DEVICE void split_bf16x3(float x, std::uint16_t& hi, std::uint16_t& mid, float& rest) noexcept {
  const std::uint32_t u = ::lshattn::detail::bit_cast<std::uint32_t>(x) & 0xffff0000u;
  const float r = x - ::lshattn::detail::bit_cast<float>(u);
  const std::uint32_t ur = ::lshattn::detail::bit_cast<std::uint32_t>(r);
  const std::uint32_t um = (ur + 0x7fffu + ((ur >> 16) & 1u)) & 0xffff0000u;
  hi = static_cast<std::uint16_t>(u >> 16);
  mid = static_cast<std::uint16_t>(um >> 16);
  rest = r - ::lshattn::detail::bit_cast<float>(um);
}

/// float value of a bf16 bit pattern.
LSHATTN_HOST_DEVICE float bf16_value(std::uint16_t b) noexcept {
  return ::lshattn::detail::bit_cast<float>(static_cast<std::uint32_t>(b) << 16);
}

/// Per-plane factors of the bound (P1, P2, P3, Q0), rounded up, from the
/// float64 norms |w1|, |w2|, |w3|, |w2 + w3|, |w| of one plane.
inline void plane_bound(const float* w, int d, float out[4]) {
  double n1 = 0, n2 = 0, n3 = 0, n23 = 0, n = 0;
  for (int j = 0; j < d; ++j) {
    std::uint16_t h, m;
    float r;
    split_bf16x3(w[j], h, m, r);
    const double w1 = bf16_value(h), w2 = bf16_value(m), w3 = r;
    n1 += w1 * w1;
    n2 += w2 * w2;
    n3 += w3 * w3;
    n23 += (w2 + w3) * (w2 + w3);
    n += static_cast<double>(w[j]) * w[j];
  }
  n1 = std::sqrt(n1);
  n2 = std::sqrt(n2);
  n3 = std::sqrt(n3);
  n23 = std::sqrt(n23);
  n = std::sqrt(n);
  const double k = kappa(), up = 1 + 0x1p-20;  // up: float64 sums and the rounding to float
  out[0] = static_cast<float>((k * (n1 + 2 * n2) + n3) * up);
  out[1] = static_cast<float>((2 * k * n1 + n23) * up);
  out[2] = static_cast<float>(n * up);
  out[3] = static_cast<float>(0x1p-120 * 12 * n * up);
}

/// Bound on |v - x . w| for row factors (a1, a2, a3, R0) and plane factors (P1, P2, P3, Q0).
LSHATTN_HOST_DEVICE float bound(const float (&r)[4], const float (&p)[4]) noexcept {
  return (r[0] * p[0] + (r[1] * p[1] + (r[2] * p[2] + (r[3] + p[3])))) * (1.0f + 0x1p-10f);
}

/// Row factors from the fp32 sums of squares of x1, x2, x3 and x.
LSHATTN_HOST_DEVICE void row_factors(float s1, float s2, float s3, float sx, float out[4]) noexcept {
  constexpr float up = 1.0f + 0x1p-12f, tiny = 0x1p-119f;
  out[0] = std::sqrt(s1 + tiny) * up;
  out[1] = std::sqrt(s2 + tiny) * up;
  out[2] = std::sqrt(s3 + tiny) * up;
  out[3] = 0x1p-120f * (12.0f * (std::sqrt(sx + tiny) * up) + 128.0f);
}

/// Dynamic shared memory of hash_rows_tc_kernel: the block's split keys (x1, x2
/// over the whole depth), two stages of plane parts, row factors, two tiles'
/// plane factors and two tiles' bit words (4 per token). 115200 bytes: two
/// blocks per SM on sm_90 (228 KB).
inline constexpr std::size_t smem_bytes = 2u * tokens * depth * 2 + 2u * 2 * planes * kchunk * 2 + tokens * 16u +
                                          2u * planes * 16 + 2u * tokens * 4 * 4;

__device__ __forceinline__ void ldsm_x4(std::uint32_t (&r)[4], const void* p) {
  const unsigned s = static_cast<unsigned>(__cvta_generic_to_shared(p));
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0, %1, %2, %3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(s));
}
__device__ __forceinline__ void ldsm_x2(std::uint32_t (&r)[2], const void* p) {
  const unsigned s = static_cast<unsigned>(__cvta_generic_to_shared(p));
  asm volatile("ldmatrix.sync.aligned.m8n8.x2.shared.b16 {%0, %1}, [%2];\n" : "=r"(r[0]), "=r"(r[1]) : "r"(s));
}
__device__ __forceinline__ void mma_bf16(float (&c)[4], const std::uint32_t (&a)[4], std::uint32_t b0, std::uint32_t b1) {
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, "
      "{%0, %1, %2, %3};\n"
      : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}
__device__ __forceinline__ void cp16(void* smem, const void* gmem, bool valid) {
  const unsigned s = static_cast<unsigned>(__cvta_generic_to_shared(smem));
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(s), "l"(gmem), "r"(valid ? 16 : 0));
}

}  // namespace hash_tc

/// Arguments of hash_rows_tc_kernel and hash_fixup_kernel.
template <class T, class Code>
struct hash_tc_args {
  hash_rows_args<T, Code> r;
  const std::uint16_t* wparts;  ///< [K*L][2][depth] bf16 bits of w1, w2 (zero-padded)
  const float4* wbound;         ///< [K*L] (P1, P2, P3, Q0)
  uint2* list;                  ///< uncertain pairs: (t - t0, head << 16 | plane)
  unsigned long long* count;    ///< pairs found (may exceed cap: the rest were decided inline)
  unsigned cap;
  float4 wmax;                  ///< componentwise maximum of wbound over all planes (the epilogue's screen)
  int plane_tiles;              ///< plane tiles of r.tables_per_tile tables
  int tiles_per_group;          ///< plane tiles per block (blockIdx.y: group of plane tiles)
  int kchunks;                  ///< k chunks of hash_tc::kchunk holding the dim (the rest is zero)
};

/// OR bit into *c, whatever the code word's width (16-bit codes through their 32-bit word).
template <class Code>
__device__ __forceinline__ void or_code_bit(Code* c, unsigned bit) {
  if constexpr (sizeof(Code) == 4) {
    atomicOr(reinterpret_cast<unsigned*>(c), bit);
  } else if constexpr (sizeof(Code) == 8) {
    atomicOr(reinterpret_cast<unsigned long long*>(c), static_cast<unsigned long long>(bit));
  } else {
    static_assert(sizeof(Code) == 2, "codes of 16, 32 or 64 bits");
    const std::uintptr_t p = reinterpret_cast<std::uintptr_t>(c);
    atomicOr(reinterpret_cast<unsigned*>(p & ~std::uintptr_t{3}), bit << ((p & 2u) ? 16 : 0));
  }
}

/// [x . w > 0] for token t of head, plane p, by one thread (float64 dot, certified, else exact).
template <class T, class Code>
__device__ bool decide_serial(const hash_rows_args<T, Code>& a, int head, std::size_t t, int p) {
  const T* row = a.rows + head * a.head_stride + t * a.token_stride;
  const float* mean = a.mean ? a.mean + static_cast<std::size_t>(head) * a.dim : nullptr;
  const float* w = a.planes + static_cast<std::size_t>(p) * a.dim;
  double s = 0.0, mag = 0.0;
  for (int j = 0; j < a.dim; ++j) {
    const double pr = static_cast<double>(centred(row, mean, j)) * w[j];  // exact
    s += pr;
    mag += fabs(pr);
  }
  return certified_positive(s, mag, a.dim, [&](int j) { return centred(row, mean, j); }, [&](int j) { return w[j]; });
}

// One block: 128 tokens of one head against the plane tiles of its group
// (blockIdx.y). The keys are centred and split once, at the start, into x1, x2
// over the whole depth (shared memory, for every plane tile), with the row
// factors of the bound summed in the order the derivation's a_k were always
// summed (two threads per row, each over 32-element halves of 64-wide chunks).
// The plane parts stream through two cp.async stages of 64 k, one chunk ahead,
// across plane tiles. After a tile's last chunk each warp decides its 32 x 40
// values: a screen against the bound with the largest plane factors (a
// per-row constant, >= every plane's bound, so "above it" implies "certain"
// under the exact rule) settles almost all; the rest take the per-plane
// bound, which alone decides, so the certain set, the bits and the list are
// what the per-plane test gives everywhere.
template <class T, class Code>
__global__ void __launch_bounds__(hash_tc::threads, hash_tc::min_blocks) hash_rows_tc_kernel(const __grid_constant__ hash_tc_args<T, Code> a) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  using namespace hash_tc;
  constexpr int TT = tokens, TP = planes, KC = kchunk, CH = KC / 8, XC = depth / 8, WP = warp_planes, WT = warp_tokens;
  static_assert(TT == 4 * WT && TP == 2 * WP && WP == 40 && threads == 2 * TT, "warp layout of the epilogue and split");
  constexpr std::uint32_t full = 0xffffffffu;
  extern __shared__ __align__(16) unsigned char smem[];
  std::uint16_t* xs = reinterpret_cast<std::uint16_t*>(smem);      // [2 parts][TT][depth], 16-byte chunks swizzled
  std::uint16_t* ws = xs + 2 * TT * depth;                           // [2 stages][2 parts][TP][KC], same
  float4* rowb = reinterpret_cast<float4*>(ws + 2 * 2 * TP * KC);    // [TT] (a1, a2, a3, R0)
  float4* colb = rowb + TT;                                          // [2 tiles][TP] (P1, P2, P3, Q0)
  std::uint32_t* bits = reinterpret_cast<std::uint32_t*>(colb + 2 * TP);  // [2 tiles][TT][4 words], plane p at bit p

  const hash_rows_args<T, Code>& r = a.r;
  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5, g = lane >> 2, t4 = lane & 3;
  const int wm = warp & 3, wn = warp >> 2;
  const int head = blockIdx.z;
  const std::size_t tok0 = r.t0 + static_cast<std::size_t>(blockIdx.x) * TT;
  const int tile0 = static_cast<int>(blockIdx.y) * a.tiles_per_group;
  const int nkc = a.kchunks, nchunks = min(a.tiles_per_group, a.plane_tiles - tile0) * nkc;
  const int tpt = r.tables_per_tile;
  const T* base = r.rows + head * r.head_stride;
  const float* mean = r.mean ? r.mean + static_cast<std::size_t>(head) * r.dim : nullptr;

  // Chunk c: k chunk c % nkc of plane tile tile0 + c / nkc, into stage c & 1
  // (with the tile's plane factors at its first chunk); one commit group each.
  const auto stage = [&](int c) {
    const int lt = c / nkc, kc = c - lt * nkc, l0 = (tile0 + lt) * tpt;
    const int p0 = l0 * r.K, np = min(tpt, r.L - l0) * r.K;
    std::uint16_t* dst = ws + (c & 1) * 2 * TP * KC;
    for (int e = tid; e < 2 * TP * CH; e += threads) {
      const int part = e / (TP * CH), rem = e - part * (TP * CH), p = rem / CH, ch = rem % CH;
      const bool ok = p < np;
      const std::uint16_t* src = a.wparts + (static_cast<std::size_t>(p0 + (ok ? p : 0)) * 2 + part) * depth + kc * KC + ch * 8;
      cp16(dst + ((part * TP + p) * CH + (ch ^ (p & 7))) * 8, src, ok);
    }
    if (kc == 0 && tid < TP) cp16(colb + (lt & 1) * TP + tid, a.wbound + p0 + (tid < np ? tid : 0), tid < np);
    asm volatile("cp.async.commit_group;\n" ::);
  };
  stage(0);
  for (int e = tid; e < TT * 4; e += threads) bits[e] = 0u;

  // Split, once: thread tid owns row tid / 2, elements [32 (tid & 1), +32) of each 64-wide k chunk.
  {
    const int lr = tid >> 1, lh = tid & 1;
    const bool row_ok = tok0 + lr < r.t1;
    const T* lrow = base + (row_ok ? (tok0 + lr) : r.t0) * r.token_stride;
    float sx = 0.f, s1 = 0.f, s2 = 0.f, s3 = 0.f;
#pragma unroll 1
    for (int kc = 0; kc < nkc; ++kc) {
#pragma unroll 1  // once per block; unrolled, it spills (fp16 keys)
      for (int q = 0; q < 4; ++q) {
        std::uint32_t hw[4], mw[4];
#pragma unroll
        for (int i = 0; i < 8; i += 2) {
          std::uint16_t h[2], m[2];
#pragma unroll
          for (int k = 0; k < 2; ++k) {
            const int j = kc * KC + lh * 32 + q * 8 + i + k;
            const float v = row_ok && j < r.dim ? centred(lrow, mean, j) : 0.0f;
            float rest;
            split_bf16x3(v, h[k], m[k], rest);
            const float v1 = bf16_value(h[k]), v2 = bf16_value(m[k]);
            sx = fmaf(v, v, sx);
            s1 = fmaf(v1, v1, s1);
            s2 = fmaf(v2, v2, s2);
            s3 = fmaf(rest, rest, s3);
          }
          hw[i / 2] = static_cast<std::uint32_t>(h[0]) | (static_cast<std::uint32_t>(h[1]) << 16);
          mw[i / 2] = static_cast<std::uint32_t>(m[0]) | (static_cast<std::uint32_t>(m[1]) << 16);
        }
        const int ch = kc * CH + lh * 4 + q, phys = (lr * XC + (ch ^ (lr & 7))) * 8;
        *reinterpret_cast<uint4*>(xs + phys) = make_uint4(hw[0], hw[1], hw[2], hw[3]);
        *reinterpret_cast<uint4*>(xs + TT * depth + phys) = make_uint4(mw[0], mw[1], mw[2], mw[3]);
      }
    }
    // The chunks past nkc hold zeros: their squares would leave the sums as they are.
    sx += __shfl_xor_sync(full, sx, 1);
    s1 += __shfl_xor_sync(full, s1, 1);
    s2 += __shfl_xor_sync(full, s2, 1);
    s3 += __shfl_xor_sync(full, s3, 1);
    if (lh == 0) {
      float f[4];
      row_factors(s1, s2, s3, sx, f);
      rowb[lr] = make_float4(f[0], f[1], f[2], f[3]);
    }
  }
  __syncthreads();

  float acc[2][5][4];
#pragma unroll
  for (int mi = 0; mi < 2; ++mi)
#pragma unroll
    for (int nt = 0; nt < 5; ++nt)
#pragma unroll
      for (int e = 0; e < 4; ++e) acc[mi][nt][e] = 0.f;

#pragma unroll 1
  for (int c = 0; c < nchunks; ++c) {
    asm volatile("cp.async.wait_group 0;\n" ::);
    __syncthreads();  // chunk c landed for all; every warp is done with chunk c - 1's stage
    if (c + 1 < nchunks) stage(c + 1);
    const int lt = c / nkc, kc = c - lt * nkc;
    const std::uint16_t* wc = ws + (c & 1) * 2 * TP * KC;
#pragma unroll 1  // unrolled, the 128-register budget (2 blocks of 256) spills
    for (int ks = 0; ks < KC / 16; ++ks) {
      std::uint32_t ax[2][2][4];  // [m16 tile][part]
#pragma unroll
      for (int mi = 0; mi < 2; ++mi)
#pragma unroll
        for (int part = 0; part < 2; ++part) {
          const int row = wm * WT + mi * 16 + (lane & 15), ch = kc * CH + 2 * ks + (lane >> 4);
          ldsm_x4(ax[mi][part], xs + part * TT * depth + (row * XC + (ch ^ (row & 7))) * 8);
        }
      const int m = lane >> 3;
#pragma unroll
      for (int jp = 0; jp < 3; ++jp) {
        std::uint32_t b1[4], b2[4];
        if (jp < 2) {
          const int pr = wn * WP + jp * 16 + (m >> 1) * 8 + (lane & 7), ch = 2 * ks + (m & 1);
          ldsm_x4(b1, wc + (pr * CH + (ch ^ (pr & 7))) * 8);
          ldsm_x4(b2, wc + ((TP + pr) * CH + (ch ^ (pr & 7))) * 8);
        } else {  // the fifth n8 tile: planes 32..39 of the warp
          const int pr = wn * WP + 32 + (lane & 7), ch = 2 * ks + (m & 1);
          std::uint32_t h1[2], h2[2];
          ldsm_x2(h1, wc + (pr * CH + (ch ^ (pr & 7))) * 8);
          ldsm_x2(h2, wc + ((TP + pr) * CH + (ch ^ (pr & 7))) * 8);
          b1[0] = h1[0];
          b1[1] = h1[1];
          b2[0] = h2[0];
          b2[1] = h2[1];
          b1[2] = b1[3] = b2[2] = b2[3] = 0u;
        }
#pragma unroll
        for (int mi = 0; mi < 2; ++mi)
#pragma unroll
          for (int nn = 0; nn < (jp < 2 ? 2 : 1); ++nn) {
            float t1[4] = {0.f, 0.f, 0.f, 0.f}, t2[4] = {0.f, 0.f, 0.f, 0.f};
            mma_bf16(t1, ax[mi][0], b1[2 * nn], b1[2 * nn + 1]);  // x1 . w1
            mma_bf16(t2, ax[mi][0], b2[2 * nn], b2[2 * nn + 1]);  // x1 . w2
            mma_bf16(t2, ax[mi][1], b1[2 * nn], b1[2 * nn + 1]);  // + x2 . w1
#pragma unroll
            for (int e = 0; e < 4; ++e) acc[mi][2 * jp + nn][e] = (acc[mi][2 * jp + nn][e] + t1[e]) + t2[e];
          }
      }
    }
    if (kc != nkc - 1) continue;

    // Epilogue of plane tile tile0 + lt.
    const int l0 = (tile0 + lt) * tpt, ntab = min(tpt, r.L - l0), p0 = l0 * r.K, np = ntab * r.K;
    const float4* cb = colb + (lt & 1) * TP;
    std::uint32_t* bt = bits + (lt & 1) * TT * 4;
    // This thread's rows: ri -> wm * 32 + (ri >> 1) * 16 + g + (ri & 1) * 8.
    // Screen = the bound with the largest plane factors, times 1 + 2^-16 so
    // that no rounding or contraction difference can put it under a plane's
    // own bound. Rows past t1 (all zero, never listed) screen at -1: always
    // "certain". (Recomputed per tile: registers are what limits this kernel.)
    float scr[4];
#pragma unroll
    for (int ri = 0; ri < 4; ++ri) {
      const int row = wm * WT + (ri >> 1) * 16 + g + (ri & 1) * 8;
      const float4 rb = rowb[row];
      const float rf[4] = {rb.x, rb.y, rb.z, rb.w}, pm[4] = {a.wmax.x, a.wmax.y, a.wmax.z, a.wmax.w};
      scr[ri] = tok0 + row < r.t1 ? bound(rf, pm) * (1.0f + 0x1p-16f) : -1.0f;
    }
    std::uint32_t mlo[4] = {0u, 0u, 0u, 0u}, mhi[4] = {0u, 0u, 0u, 0u}, unc[2] = {0u, 0u};
    bool slow[4] = {false, false, false, false};
#pragma unroll
    for (int ri = 0; ri < 4; ++ri)
#pragma unroll
      for (int nt = 0; nt < 5; ++nt)
#pragma unroll
        for (int cbit = 0; cbit < 2; ++cbit) {
          const float v = acc[ri >> 1][nt][(ri & 1) * 2 + cbit], av = fabsf(v);
          const bool fast = av > scr[ri] && av <= FLT_MAX;  // NaN and inf are never fast
          const std::uint32_t bit = 1u << ((nt & 3) * 8 + 2 * t4 + cbit);
          if (fast && v > 0.f) (nt < 4 ? mlo[ri] : mhi[ri]) |= bit;
          slow[ri] |= !fast && wn * WP + nt * 8 + 2 * t4 + cbit < np;
        }
#pragma unroll
    for (int ri = 0; ri < 4; ++ri) {
      if (!slow[ri]) continue;  // rare: about 3e-4 of the pairs for random keys
      const int row = wm * WT + (ri >> 1) * 16 + g + (ri & 1) * 8;
      const float4 rb = rowb[row];
      const float rf[4] = {rb.x, rb.y, rb.z, rb.w};
#pragma unroll
      for (int nt = 0; nt < 5; ++nt)
#pragma unroll
        for (int cbit = 0; cbit < 2; ++cbit) {
          const int mi = ri >> 1, e = (ri & 1) * 2 + cbit, col = wn * WP + nt * 8 + 2 * t4 + cbit;
          const float v = acc[mi][nt][e], av = fabsf(v);
          if ((av > scr[ri] && av <= FLT_MAX) || col >= np) continue;
          const float4 c4 = cb[col];
          const float pf[4] = {c4.x, c4.y, c4.z, c4.w};
          const bool certain = av > bound(rf, pf) && av <= FLT_MAX;
          if (certain && v > 0.f) (nt < 4 ? mlo[ri] : mhi[ri]) |= 1u << ((nt & 3) * 8 + 2 * t4 + cbit);
          const int idx = (mi * 5 + nt) * 4 + e;
          if (!certain) unc[idx >> 5] |= 1u << (idx & 31);
        }
    }
    // Masks of the quad's rows, combined; lane t4 stores row ri = t4 (plane bit wn * 40 + pos).
#pragma unroll
    for (int ri = 0; ri < 4; ++ri) {
      mlo[ri] |= __shfl_xor_sync(full, mlo[ri], 1);
      mlo[ri] |= __shfl_xor_sync(full, mlo[ri], 2);
      mhi[ri] |= __shfl_xor_sync(full, mhi[ri], 1);
      mhi[ri] |= __shfl_xor_sync(full, mhi[ri], 2);
    }
    {
      const std::uint32_t lo = t4 == 0 ? mlo[0] : t4 == 1 ? mlo[1] : t4 == 2 ? mlo[2] : mlo[3];
      const std::uint32_t hi = t4 == 0 ? mhi[0] : t4 == 1 ? mhi[1] : t4 == 2 ? mhi[2] : mhi[3];
      std::uint32_t* w = bt + (wm * WT + (t4 >> 1) * 16 + g + (t4 & 1) * 8) * 4;
      if (wn == 0) {  // planes 0..39: word 0, bits 0..7 of word 1
        atomicOr(w, lo);
        atomicOr(w + 1, hi);
      } else {  // planes 40..79: bits 8..31 of word 1, word 2
        atomicOr(w + 1, lo << 8);
        atomicOr(w + 2, (lo >> 24) | (hi << 8));
      }
    }

    // Uncertain pairs: one atomic per warp for the list slots.
    const int n_unc = __popc(unc[0]) + __popc(unc[1]);
    if (__any_sync(full, n_unc != 0)) {
      int incl = n_unc;
#pragma unroll
      for (int o = 1; o < 32; o <<= 1) {
        const int v = __shfl_up_sync(full, incl, o);
        if (lane >= o) incl += v;
      }
      unsigned long long slot0 = 0;
      if (lane == 31) slot0 = atomicAdd(a.count, static_cast<unsigned long long>(incl));
      unsigned long long slot = __shfl_sync(full, slot0, 31) + static_cast<unsigned long long>(incl - n_unc);
#pragma unroll
      for (int w = 0; w < 2; ++w) {
        std::uint32_t f = unc[w];
        while (f) {
          const int idx = w * 32 + __ffs(f) - 1;
          f &= f - 1;
          const int mi = idx / 20, nt = (idx >> 2) % 5, e = idx & 3;
          const int row = wm * WT + mi * 16 + g + (e >> 1) * 8;
          const int p = wn * WP + nt * 8 + 2 * t4 + (e & 1);
          const std::size_t t = tok0 + row;
          if (slot < a.cap) {
            a.list[slot] = make_uint2(static_cast<unsigned>(t - r.t0), (static_cast<unsigned>(head) << 16) | static_cast<unsigned>(p0 + p));
          } else if (decide_serial(r, head, t, p0 + p)) {
            atomicOr(&bt[row * 4 + (p >> 5)], 1u << (p & 31));
          }
          ++slot;
        }
      }
    }
    __syncthreads();

    // Codes: consecutive threads take consecutive tokens of one table (coalesced stores).
    for (int e = tid; e < TT * ntab; e += threads) {
      const int i = e % TT, ltab = e / TT;
      const std::size_t t = tok0 + i;
      if (t >= r.t1) continue;
      const int p = ltab * r.K, q = p >> 5, s = p & 31;  // p < 80: q <= 2
      const std::uint32_t* w = bt + i * 4;
      std::uint64_t v = (static_cast<std::uint64_t>(w[q + 1]) << 32 | w[q]) >> s;
      if (s != 0 && q + 2 < 4) v |= static_cast<std::uint64_t>(w[q + 2]) << (64 - s);
      if (r.K < 64) v &= (std::uint64_t{1} << r.K) - 1;
      r.codes[head * r.head_codes + static_cast<std::size_t>(l0 + ltab) * r.table_codes + (t - r.t0) * r.token_codes + r.first] =
          static_cast<Code>(v);
    }
    // The other tile's words were last read before this tile's first barrier; cleared for the next tile.
    for (int e = tid; e < TT * 4; e += threads) bits[((lt + 1) & 1) * TT * 4 + e] = 0u;
#pragma unroll
    for (int mi = 0; mi < 2; ++mi)
#pragma unroll
      for (int nt = 0; nt < 5; ++nt)
#pragma unroll
        for (int e = 0; e < 4; ++e) acc[mi][nt][e] = 0.f;
  }
#else
  __trap();  // the host launches this kernel only on sm_80 and later
#endif
}

/// Decides the listed uncertain pairs (a warp each: float64 dot, then the
/// exact sign if needed) and ORs their bits into the codes.
template <class T, class Code>
__global__ void __launch_bounds__(256) hash_fixup_kernel(const __grid_constant__ hash_tc_args<T, Code> a) {
  const hash_rows_args<T, Code>& r = a.r;
  const unsigned n = static_cast<unsigned>(min(*a.count, static_cast<unsigned long long>(a.cap)));
  const int lane = threadIdx.x & 31;
  const unsigned nw = gridDim.x * (blockDim.x / 32);
  for (unsigned i = blockIdx.x * (blockDim.x / 32) + (threadIdx.x >> 5); i < n; i += nw) {
    const uint2 e = a.list[i];
    const int head = static_cast<int>(e.y >> 16), p = static_cast<int>(e.y & 0xffffu);
    const std::size_t t = r.t0 + e.x;
    const T* row = r.rows + head * r.head_stride + t * r.token_stride;
    const float* mean = r.mean ? r.mean + static_cast<std::size_t>(head) * r.dim : nullptr;
    const float* w = r.planes + static_cast<std::size_t>(p) * r.dim;
    double s = 0.0, mag = 0.0;
    for (int j = lane; j < r.dim; j += 32) {
      const double pr = static_cast<double>(centred(row, mean, j)) * w[j];  // exact
      s += pr;
      mag += fabs(pr);
    }
#pragma unroll
    for (int o = 16; o; o >>= 1) {
      s += __shfl_xor_sync(0xffffffffu, s, o);
      mag += __shfl_xor_sync(0xffffffffu, mag, o);
    }
    if (lane == 0 &&
        certified_positive(s, mag, r.dim, [&](int j) { return centred(row, mean, j); }, [&](int j) { return w[j]; })) {
      const int l = p / r.K, b = p % r.K;
      or_code_bit(r.codes + head * r.head_codes + static_cast<std::size_t>(l) * r.table_codes + e.x * r.token_codes + r.first,
                  1u << b);
    }
  }
}

/// Which kernel hashes keys: tensor cores where supported (default), or the fp32 tile kernel.
enum class hash_path { automatic, tensor_cores, simt };

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
    // Tensor-core path: dim <= 128, list entries hold the plane in 16 bits,
    // sm_80+ with 113 KB of shared memory per block (sm_80, sm_90; not sm_86/89).
    int dev = 0, major = 0, smem_optin = 0;
    LSHATTN_CUDA_CHECK(cudaGetDevice(&dev));
    LSHATTN_CUDA_CHECK(cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, dev));
    LSHATTN_CUDA_CHECK(cudaDeviceGetAttribute(&smem_optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, dev));
    tc_ok_ = major >= 8 && static_cast<std::size_t>(smem_optin) >= hash_tc::smem_bytes && d <= static_cast<std::size_t>(hash_tc::depth) && P <= 0xffffu && f.bits() <= hash_tc::planes;
    if (tc_ok_) {
      std::vector<std::uint16_t> parts(P * 2 * hash_tc::depth, 0);
      std::vector<float4> bounds(P);
      for (std::size_t r = 0; r < P; ++r) {
        const float* w = f.hyperplanes() + r * d;
        for (std::size_t j = 0; j < d; ++j) {
          float rest;
          hash_tc::split_bf16x3(w[j], parts[(r * 2) * hash_tc::depth + j], parts[(r * 2 + 1) * hash_tc::depth + j], rest);
        }
        float b[4];
        hash_tc::plane_bound(w, static_cast<int>(d), b);
        bounds[r] = make_float4(b[0], b[1], b[2], b[3]);
        wmax_ = make_float4(std::max(wmax_.x, b[0]), std::max(wmax_.y, b[1]), std::max(wmax_.z, b[2]), std::max(wmax_.w, b[3]));
      }
      wparts_.reset(parts.size());
      wbound_.reset(P);
      LSHATTN_CUDA_CHECK(cudaMemcpy(wparts_.data(), parts.data(), parts.size() * 2, cudaMemcpyHostToDevice));
      LSHATTN_CUDA_CHECK(cudaMemcpy(wbound_.data(), bounds.data(), P * sizeof(float4), cudaMemcpyHostToDevice));
      count_.reset(1);
      LSHATTN_CUDA_CHECK(cudaMemset(count_.data(), 0, sizeof(unsigned long long)));
      LSHATTN_CUDA_CHECK(cudaDeviceGetAttribute(&sms_, cudaDevAttrMultiProcessorCount, dev));
    }
  }
  [[nodiscard]] const hash::simhash<>& family() const noexcept { return family_; }
  [[nodiscard]] const float* planes() const noexcept { return planes_.data(); }
  [[nodiscard]] const float* planes_t() const noexcept { return planes_t_.data(); }
  [[nodiscard]] const double* norms() const noexcept { return norms_.data(); }
  /// Whether hash() can take the tensor-core path (sm_80+ with 113 KB of shared memory per block, dim <= 128, K * L < 2^16).
  [[nodiscard]] bool tensor_cores_supported() const noexcept { return tc_ok_; }
  /// Uncertain (token, plane) pairs of the last tensor-core hash() call
  /// (synchronising; for tests and benchmarks). Above list_capacity() the
  /// excess was decided inline by the main kernel.
  [[nodiscard]] std::size_t last_uncertain() const {
    unsigned long long n = 0;
    if (count_.data()) {
      LSHATTN_CUDA_CHECK(cudaDeviceSynchronize());
      LSHATTN_CUDA_CHECK(cudaMemcpy(&n, count_.data(), sizeof n, cudaMemcpyDeviceToHost));
    }
    return n;
  }
  [[nodiscard]] std::size_t list_capacity() const noexcept { return list_.size(); }

  /// Codes of rows [t0, t1) of every head of a device cache, centred by mean
  /// ([heads][dim] device floats, or null). The code of (h, l, t) goes to
  /// codes[h * head_codes + l * table_codes + (t - t0) * token_codes + first].
  /// path: automatic takes the tensor-core kernels for calls of 4096 rows or
  /// more where supported; tensor_cores forces them (errc::unsupported where
  /// not supported); simt forces the fp32 kernel. Every path gives the same codes.
  template <element_type T, class Code>
  void hash(const T* rows, std::size_t heads, std::size_t head_stride, std::size_t token_stride, const float* mean,
            std::size_t t0, std::size_t t1, Code* codes, std::size_t head_codes, std::size_t table_codes,
            std::size_t token_codes, std::size_t first, cudaStream_t stream,
            hash_path path = hash_path::automatic) const {
    if (t1 <= t0 || heads == 0) return;
    LSHATTN_REQUIRE(path != hash_path::tensor_cores || tc_ok_, unsupported, "path",
                    "the tensor-core hashing path needs sm_80+ with 113 KB of shared memory per block, dim <= 128 and K * L < 65536");
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
    // automatic: tensor cores for builds and merges; a few appended tokens
    // (a decode step's sync) stay on the one-launch fp32 kernel.
    const bool big = heads * (t1 - t0) >= 4096;
    if (tc_ok_ && (path == hash_path::tensor_cores || (path == hash_path::automatic && big)) && heads <= 0xffffu &&
        t1 - t0 <= 0xffffffffu) {
      hash_tensor_cores(a, heads, stream);
      return;
    }
    const dim3 grid(static_cast<unsigned>((t1 - t0 + hash_tile_tokens - 1) / hash_tile_tokens),
                    static_cast<unsigned>((L + a.tables_per_tile - 1) / a.tables_per_tile), static_cast<unsigned>(heads));
    hash_rows_kernel<T, Code><<<grid, 256, 0, stream>>>(a);
    LSHATTN_CUDA_LAUNCHED("hash_rows_kernel");
  }

 private:
  template <class T, class Code>
  void hash_tensor_cores(const hash_rows_args<T, Code>& r, std::size_t heads, cudaStream_t stream) const {
    namespace tc = hash_tc;
    hash_tc_args<T, Code> a{};
    a.r = r;
    a.r.tables_per_tile = tc::planes / r.K;
    a.plane_tiles = (r.L + a.r.tables_per_tile - 1) / a.r.tables_per_tile;
    a.kchunks = (r.dim + tc::kchunk - 1) / tc::kchunk;
    a.wmax = wmax_;
    const std::size_t n = r.t1 - r.t0, ttiles = (n + tc::tokens - 1) / tc::tokens;
    LSHATTN_REQUIRE(ttiles <= 0x7fffffffu, unsupported, "tokens", "hashing ", n, " tokens at once exceeds the grid");
    // A block splits its tokens once and runs all the plane tiles of its group:
    // one group unless that leaves fewer than two waves of blocks (two per SM),
    // as small calls would.
    const std::size_t base = ttiles * heads, fill = 4 * static_cast<std::size_t>(std::max(sms_, 1));
    const std::size_t groups = base >= fill ? 1 : std::min<std::size_t>(a.plane_tiles, (fill + base - 1) / base);
    a.tiles_per_group = static_cast<int>((a.plane_tiles + groups - 1) / groups);
    const unsigned gy = static_cast<unsigned>((a.plane_tiles + a.tiles_per_group - 1) / a.tiles_per_group);
    // ~2e-4 of the pairs are uncertain for random keys (see the derivation):
    // room for 1/1024 of them, plus a floor for small calls.
    const std::size_t pairs = heads * n * static_cast<std::size_t>(r.K) * r.L;
    const std::size_t want = std::min<std::size_t>(pairs / 1024 + 65536, 0xffffffffu);
    if (list_.size() < want) list_.reset(want);
    a.wparts = wparts_.data();
    a.wbound = wbound_.data();
    a.list = list_.data();
    a.count = count_.data();
    a.cap = static_cast<unsigned>(list_.size());
    LSHATTN_CUDA_CHECK(cudaMemsetAsync(count_.data(), 0, sizeof(unsigned long long), stream));
    auto* kernel = hash_rows_tc_kernel<T, Code>;
    LSHATTN_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(tc::smem_bytes)));
    // Two blocks of 113 KB per SM need the largest shared-memory carveout.
    LSHATTN_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributePreferredSharedMemoryCarveout, cudaSharedmemCarveoutMaxShared));
    kernel<<<dim3(static_cast<unsigned>(ttiles), gy, static_cast<unsigned>(heads)), tc::threads, tc::smem_bytes, stream>>>(a);
    LSHATTN_CUDA_LAUNCHED("hash_rows_tc_kernel");
    // A full machine of warps, each looping over list entries (the count is only known on the device).
    hash_fixup_kernel<T, Code><<<static_cast<unsigned>(std::max(sms_, 1) * 8), 256, 0, stream>>>(a);
    LSHATTN_CUDA_LAUNCHED("hash_fixup_kernel");
  }

  hash::simhash<> family_;
  device_buffer<float> planes_, planes_t_;
  device_buffer<double> norms_;
  bool tc_ok_ = false;
  device_buffer<std::uint16_t> wparts_;  // [K*L][2][128] bf16 bits of w1, w2
  device_buffer<float4> wbound_;         // [K*L] bound factors
  float4 wmax_{};                        // their componentwise maximum
  // Scratch of the tensor-core path (grown by hash(), a plan-side call): not
  // shared between concurrent hash() calls of one family on two streams.
  mutable device_buffer<uint2> list_;
  device_buffer<unsigned long long> count_;
  int sms_ = 0;
};

}  // namespace lshattn::cuda_detail
