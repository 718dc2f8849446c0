// The CPU executor's kernels, written once over an xsimd architecture and
// compiled once per instruction set: kernels_sse2.cpp, kernels_avx2.cpp and
// kernels_avx512.cpp define LSHATTN_CPU_NS (a namespace of their own),
// LSHATTN_CPU_ARCH (the xsimd architecture), LSHATTN_CPU_LEVEL (2, 256 or 512)
// and LSHATTN_CPU_TABLE (the name of the kernel_table they export), then
// include this file.
//
// Everything here lives in the per-ISA namespace and uses no std:: templates:
// an inline function instantiated under AVX-512 flags that a linker could also
// pick for the SSE2 path would be an illegal instruction waiting to happen.

#include <immintrin.h>

#include <cstddef>
#include <cstdint>
#include <xsimd/xsimd.hpp>

#include "lshattn/executor/cpu/kernels.hpp"

namespace lshattn::executor::cpu_detail::LSHATTN_CPU_NS {

using arch = LSHATTN_CPU_ARCH;
using vf = xsimd::batch<float, arch>;
constexpr std::size_t W = vf::size;
static_assert(pad % W == 0, "pad must be a multiple of every SIMD width");
constexpr std::size_t max_dpad = 1024;  // max_head_dim, padded
constexpr float neg_inf = -__builtin_inff();

inline std::size_t min_of(std::size_t a, std::size_t b) { return a < b ? a : b; }

// ---- widening loads: W elements of a key or value row as fp32 ----
inline vf load(const float* p) { return vf::load_unaligned(p); }
inline vf load(const bf16* p) {
  // bf16 is the upper half of an fp32: widen to 32 bits and shift left by 16.
#if LSHATTN_CPU_LEVEL == 512
  const __m512i w = _mm512_cvtepu16_epi32(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)));
  return vf(_mm512_castsi512_ps(_mm512_slli_epi32(w, 16)));
#elif LSHATTN_CPU_LEVEL == 256
  const __m256i w = _mm256_cvtepu16_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
  return vf(_mm256_castsi256_ps(_mm256_slli_epi32(w, 16)));
#else
  const __m128i h = _mm_loadl_epi64(reinterpret_cast<const __m128i*>(p));
  return vf(_mm_castsi128_ps(_mm_unpacklo_epi16(_mm_setzero_si128(), h)));
#endif
}
inline float scalar_float(bf16 x) {
  const std::uint32_t u = static_cast<std::uint32_t>(x.bits) << 16;
  float f;
  __builtin_memcpy(&f, &u, sizeof f);
  return f;
}
inline float scalar_float(float x) { return x; }
#if LSHATTN_CPU_LEVEL >= 256
inline vf load(const fp16* p) {
#if LSHATTN_CPU_LEVEL == 512
  return vf(_mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p))));
#else
  return vf(_mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p))));
#endif
}
inline float scalar_float(fp16 x) { return _cvtsh_ss(x.bits); }
#else
// Baseline x86-64 has no F16C: decode the half in integer arithmetic.
inline float scalar_float(fp16 x) {
  const std::uint32_t h = x.bits, sign = (h & 0x8000u) << 16;
  std::uint32_t exp = (h >> 10) & 0x1fu, man = h & 0x3ffu, out;
  if (exp == 0x1fu) {
    out = sign | 0x7f800000u | (man << 13);
  } else if (exp != 0) {
    out = sign | ((exp + 112u) << 23) | (man << 13);
  } else if (man == 0) {
    out = sign;
  } else {
    exp = 113u;
    while ((man & 0x400u) == 0) {
      man <<= 1;
      --exp;
    }
    out = sign | (exp << 23) | ((man & 0x3ffu) << 13);
  }
  float f;
  __builtin_memcpy(&f, &out, sizeof f);
  return f;
}
inline vf load(const fp16* p) {
  alignas(16) float t[W];
  for (std::size_t i = 0; i < W; ++i) t[i] = scalar_float(p[i]);
  return vf::load_aligned(t);
}
#endif

// Row of dim elements widened into dst[0..padded(dim)), zero padded.
template <class T>
inline void widen_row(const T* src, std::size_t dim, float* dst) {
  std::size_t j = 0;
  for (; j + W <= dim; j += W) load(src + j).store_unaligned(dst + j);
  for (; j < dim; ++j) dst[j] = scalar_float(src[j]);
  for (; j < padded(dim); ++j) dst[j] = 0.0f;
}

inline float dot(const float* a, const float* b, std::size_t n) {
  vf s0(0.0f), s1(0.0f);
  std::size_t j = 0;
  for (; j + 2 * W <= n; j += 2 * W) {
    s0 = xsimd::fma(vf::load_unaligned(a + j), vf::load_unaligned(b + j), s0);
    s1 = xsimd::fma(vf::load_unaligned(a + j + W), vf::load_unaligned(b + j + W), s1);
  }
  for (; j < n; j += W) s0 = xsimd::fma(vf::load_unaligned(a + j), vf::load_unaligned(b + j), s0);
  return xsimd::hadd(s0 + s1);
}

// An asm statement, not __builtin_prefetch: GCC treats the builtin as free of
// side effects and deletes a loop of them as dead code (-ffinite-loops) in
// some inlining contexts, silently turning off the gather's prefetching.
inline void prefetch_row(const void* p, std::size_t bytes) {
  const char* c = static_cast<const char*>(p);
  for (std::size_t o = 0; o < bytes; o += 64) __asm__ volatile("prefetcht0 %0" : : "m"(c[o]));
}

// ln u at cosine c (see lnu_table).
inline float lnu_of(float c, const lnu_table& t) {
  c = c > 1.0f ? 1.0f : (c < -1.0f ? -1.0f : c);
  const float x = (c + 1.0f) * 0.5f * static_cast<float>(t.intervals);
  std::size_t i = static_cast<std::size_t>(x);
  if (i >= t.intervals) i = t.intervals - 1;
  const float v = t.entries[2 * i] + t.entries[2 * i + 1] * (x - static_cast<float>(i));
  if (v == v) return v;
  return static_cast<float>(t.exact(static_cast<double>(c), t.ctx));
}

// ---- the attention kernel ----
// Prefetching: at the start of each tile of T rows, the key and value rows
// of the next tile are requested, so a row's lines have between one and two
// tiles of arithmetic (16-32 rows) to arrive. Spreading the same requests
// evenly (one row's lines per row scored, 8 or 16 rows ahead) measured slower
// on a VM with 4 KiB pages, where each row also needs a page walk and so
// wants the longer lead.

// q.k and q.x in one pass over q, each with dot()'s summation order (two
// accumulators, alternating W-wide chunks), so the values equal dot()'s.
inline void dot2(const float* q, const float* k, const float* x, std::size_t n, float& qk, float& qx) {
  vf a0(0.0f), a1(0.0f), b0(0.0f), b1(0.0f);
  std::size_t j = 0;
  for (; j + 2 * W <= n; j += 2 * W) {
    const vf q0 = vf::load_unaligned(q + j), q1 = vf::load_unaligned(q + j + W);
    a0 = xsimd::fma(q0, vf::load_aligned(k + j), a0);
    a1 = xsimd::fma(q1, vf::load_aligned(k + j + W), a1);
    b0 = xsimd::fma(q0, vf::load_aligned(x + j), b0);
    b1 = xsimd::fma(q1, vf::load_aligned(x + j + W), b1);
  }
  for (; j < n; j += W) {
    const vf q0 = vf::load_unaligned(q + j);
    a0 = xsimd::fma(q0, vf::load_aligned(k + j), a0);
    b0 = xsimd::fma(q0, vf::load_aligned(x + j), b0);
  }
  qk = xsimd::hadd(a0 + a1);
  qx = xsimd::hadd(b0 + b1);
}

// x = k - centre into xbuf; returns |x| with dot(x, x)'s summation order.
inline float centre_row(const float* k, const float* centre, std::size_t n, float* x) {
  vf s0(0.0f), s1(0.0f);
  std::size_t j = 0;
  for (; j + 2 * W <= n; j += 2 * W) {
    const vf x0 = vf::load_aligned(k + j) - vf::load_unaligned(centre + j);
    const vf x1 = vf::load_aligned(k + j + W) - vf::load_unaligned(centre + j + W);
    x0.store_aligned(x + j);
    x1.store_aligned(x + j + W);
    s0 = xsimd::fma(x0, x0, s0);
    s1 = xsimd::fma(x1, x1, s1);
  }
  for (; j < n; j += W) {
    const vf x0 = vf::load_aligned(k + j) - vf::load_unaligned(centre + j);
    x0.store_aligned(x + j);
    s0 = xsimd::fma(x0, x0, s0);
  }
  return __builtin_sqrtf(xsimd::hadd(s0 + s1));
}

template <class TK, class TV>
void attend(const attend_job& j) {
  constexpr std::size_t T = 16;  // rows per tile: scores of a tile stay in L1
  const std::size_t d = j.dim, dp = padded(d), G = j.group;
  const TK* keys = static_cast<const TK*>(j.keys);
  const TV* values = static_cast<const TV*>(j.values);
  alignas(64) float kbuf[max_dpad], xbuf[max_dpad], vbuf[max_dpad];
  float s[64 * T];
  std::uint64_t inc[T];
  const std::uint64_t all = G == 64 ? ~std::uint64_t{0} : (std::uint64_t{1} << G) - 1;
  const auto row_of = [&](std::size_t i) -> std::size_t { return j.ids ? j.ids[i] : j.first + i; };
  const auto fetch = [&](std::size_t i) {
    prefetch_row(keys + row_of(i) * j.key_stride, d * sizeof(TK));
    prefetch_row(values + row_of(i) * j.value_stride, d * sizeof(TV));
  };
#ifdef LSHATTN_CPU_ROW_PREFETCH
  // Experiment (a build with -DLSHATTN_CPU_ROW_PREFETCH=N): each row scored
  // requests the lines of the row N ahead, as the gather probe does, instead
  // of a tile's 128 lines at once. For an A/B on a machine with huge pages.
  constexpr std::size_t ahead = LSHATTN_CPU_ROW_PREFETCH;
  for (std::size_t i = 0; i < min_of(ahead, j.count); ++i) fetch(i);
#else
  for (std::size_t i = 0; i < min_of(T, j.count); ++i) fetch(i);
#endif
  for (std::size_t t0 = 0; t0 < j.count; t0 += T) {
    const std::size_t nt = min_of(T, j.count - t0);
#ifndef LSHATTN_CPU_ROW_PREFETCH
    for (std::size_t i = t0 + T; i < min_of(t0 + 2 * T, j.count); ++i) fetch(i);
#endif
    // Scores of the tile, for the heads that include each row.
    for (std::size_t r = 0; r < nt; ++r) {
      const std::size_t i = t0 + r;
#ifdef LSHATTN_CPU_ROW_PREFETCH
      if (i + ahead < j.count) fetch(i + ahead);
#endif
      std::uint64_t mask = all;
      if (j.mode == correction::lsh) {
        mask = j.member[i];
      } else if (j.mode == correction::log_pi) {
        mask = 0;
        for (std::size_t h = 0; h < G; ++h)
          if (j.log_pi[h * j.log_pi_stride + i] != neg_inf) mask |= std::uint64_t{1} << h;
      }
      inc[r] = mask;
      if (!mask) continue;
      widen_row(keys + row_of(i) * j.key_stride, d, kbuf);
      if (j.mode == correction::lsh) {
        const float xnorm = centre_row(kbuf, j.centre, dp, xbuf);
        for (std::uint64_t m = mask; m; m &= m - 1) {
          const std::size_t h = static_cast<std::size_t>(__builtin_ctzll(m));
          float qk, qx;
          dot2(j.q + h * dp, kbuf, xbuf, dp, qk, qx);
          // The cosine to the centred key, as hashed (MagicPIG's u_i).
          const float den = j.q_norm[h] * xnorm;
          const float c = den > 0.0f ? qx / den : 0.0f;
          s[h * T + r] = j.scale * qk - lnu_of(c, *j.lnu);
        }
      } else {
        for (std::uint64_t m = mask; m; m &= m - 1) {
          const std::size_t h = static_cast<std::size_t>(__builtin_ctzll(m));
          float sc = j.scale * dot(j.q + h * dp, kbuf, dp);
          if (j.mode == correction::log_pi) sc -= j.log_pi[h * j.log_pi_stride + i];
          s[h * T + r] = sc;
        }
      }
    }
    // Online softmax (Milakov & Gimelshein 2018): rescale when the max grows.
    for (std::size_t h = 0; h < G; ++h) {
      bool any = false;
      float mt = neg_inf;
      for (std::size_t r = 0; r < nt; ++r)
        if (inc[r] >> h & 1) {
          any = true;
          if (s[h * T + r] > mt) mt = s[h * T + r];
        }
      if (!any) continue;
      if (mt == neg_inf) mt = 0.0f;  // only NaN (or -inf) scores: let them reach the sum
      if (mt > j.mx[h]) {
        const float f = j.mx[h] == neg_inf ? 0.0f : __builtin_expf(j.mx[h] - mt);
        float* a = j.acc + h * dp;
        const vf fv(f);
        for (std::size_t c = 0; c < dp; c += W) (vf::load_unaligned(a + c) * fv).store_unaligned(a + c);
        j.sum[h] *= f;
        j.mx[h] = mt;
      }
      float add = 0.0f;
      for (std::size_t r = 0; r < nt; ++r) {
        const float p = (inc[r] >> h & 1) ? __builtin_expf(s[h * T + r] - j.mx[h]) : 0.0f;
        s[h * T + r] = p;
        add += p;
      }
      j.sum[h] += add;
    }
    // Weighted values: each value row read once for the group.
    for (std::size_t r = 0; r < nt; ++r) {
      if (!inc[r]) continue;
      widen_row(values + row_of(t0 + r) * j.value_stride, d, vbuf);
      for (std::uint64_t m = inc[r]; m; m &= m - 1) {
        const std::size_t h = static_cast<std::size_t>(__builtin_ctzll(m));
        const vf p(s[h * T + r]);
        float* a = j.acc + h * dp;
        for (std::size_t c = 0; c < dp; c += W)
          xsimd::fma(p, vf::load_aligned(vbuf + c), vf::load_unaligned(a + c)).store_unaligned(a + c);
      }
    }
  }
}

// ---- hashing ----
template <class T>
void centre(const void* rows, std::size_t stride, std::size_t n, const float* mean, std::size_t dim, float* X,
            std::size_t ldx, float* norms) {
  const T* src = static_cast<const T*>(rows);
  const std::size_t dp = padded(dim);
  for (std::size_t i = 0; i < n; ++i) {
    float* x = X + i * ldx;
    widen_row(src + i * stride, dim, x);
    // Subtract in scalar order-free fp32, exactly as the reference index does.
    vf acc(0.0f);
    for (std::size_t c = 0; c < dp; c += W) {
      const vf v = vf::load_unaligned(x + c) - vf::load_unaligned(mean + c);
      v.store_unaligned(x + c);
      acc = xsimd::fma(v, v, acc);
    }
    const float ss = xsimd::hadd(acc);
    if (ss > 0x1p-100f) {
      norms[i] = __builtin_sqrtf(ss) * (1.0f + 0x1p-10f);
    } else {
      // Squares of tiny elements underflow in fp32: take the norm in float64
      // so that it stays an upper bound (gemm_sign's absolute slack covers the rest).
      double sd = 0.0;
      for (std::size_t c = 0; c < dim; ++c) sd += static_cast<double>(x[c]) * static_cast<double>(x[c]);
      norms[i] = static_cast<float>(__builtin_sqrt(sd) * (1.0 + 0x1p-10)) * (1.0f + 0x1p-20f);
    }
  }
}

// W-bit masks of one vector of GEMM values a against thresholds t:
// pos = [a > 0], sure = [|a| > t].
inline void sign_masks(vf a, vf t, std::uint64_t& pos, std::uint64_t& sure) {
#if LSHATTN_CPU_LEVEL == 512
  pos = _mm512_cmp_ps_mask(a, _mm512_setzero_ps(), _CMP_GT_OQ);
  sure = _mm512_cmp_ps_mask(_mm512_abs_ps(a), t, _CMP_GT_OQ);
#elif LSHATTN_CPU_LEVEL == 256
  pos = static_cast<unsigned>(_mm256_movemask_ps(_mm256_cmp_ps(a, _mm256_setzero_ps(), _CMP_GT_OQ)));
  sure = static_cast<unsigned>(
      _mm256_movemask_ps(_mm256_cmp_ps(_mm256_andnot_ps(_mm256_set1_ps(-0.0f), a), t, _CMP_GT_OQ)));
#else
  pos = static_cast<unsigned>(_mm_movemask_ps(_mm_cmpgt_ps(a, _mm_setzero_ps())));
  sure = static_cast<unsigned>(_mm_movemask_ps(_mm_cmpgt_ps(_mm_andnot_ps(_mm_set1_ps(-0.0f), a), t)));
#endif
}
// The rounding threshold bound * norm, plus an absolute slack for underflow.
inline vf threshold(vf bound, vf norm) {
#if LSHATTN_CPU_LEVEL >= 256
  return xsimd::fma(bound, norm, vf(1e-30f));
#else
  return bound * norm + vf(1e-30f);
#endif
}

// R rows x C vectors of X W^T, fully unrolled so that the accumulators live
// in registers (without the pragmas GCC keeps the arrays in memory: a load
// and a store per FMA). The epilogue turns the accumulators into sign and
// unsure bits in registers: the values themselves never reach memory, which
// saves writing and re-reading 6 KB per row (the C matrix of a 512-row chunk
// is 3 MB, more than an L2).
template <int R, int C>
inline void micro(const float* X, std::size_t ldx, const float* Wp, std::size_t dpad, const float* bound,
                  const float* norms, unsigned shift, std::uint64_t* bits, std::uint64_t* unsure) {
  vf acc[R][C];
#pragma GCC unroll 16
  for (int r = 0; r < R; ++r)
#pragma GCC unroll 16
    for (int c = 0; c < C; ++c) acc[r][c] = vf(0.0f);
  for (std::size_t k = 0; k < dpad; ++k) {
    vf w[C];
#pragma GCC unroll 16
    for (int c = 0; c < C; ++c) w[c] = vf::load_aligned(Wp + k * gemm_panel + c * W);
#pragma GCC unroll 16
    for (int r = 0; r < R; ++r) {
      const vf x(X[r * ldx + k]);
#pragma GCC unroll 16
      for (int c = 0; c < C; ++c) acc[r][c] = xsimd::fma(x, w[c], acc[r][c]);
    }
  }
  constexpr std::uint64_t lanes = (std::uint64_t{1} << W) - 1;
#pragma GCC unroll 16
  for (int r = 0; r < R; ++r) {
    const vf nv(norms[r]);
    std::uint64_t b = 0, u = 0;
#pragma GCC unroll 16
    for (int c = 0; c < C; ++c) {
      std::uint64_t pos, sure;
      sign_masks(acc[r][c], threshold(vf::load_unaligned(bound + c * W), nv), pos, sure);
      b |= pos << (c * W);
      u |= (~sure & lanes) << (c * W);
    }
    bits[r] |= b << shift;
    unsure[r] |= u << shift;
  }
}

// Register tile: R rows x C vectors of accumulators, sized to the register file.
#if LSHATTN_CPU_LEVEL == 512
constexpr int tile_r = 6, tile_c = 4;
#elif LSHATTN_CPU_LEVEL == 256
constexpr int tile_r = 6, tile_c = 2;
#else
constexpr int tile_r = 4, tile_c = 2;
#endif

// micro<R, c> for a run-time c in [1, tile_c].
template <int R>
inline void micro_c(int c, const float* X, std::size_t ldx, const float* Wp, std::size_t dpad, const float* bound,
                    const float* norms, unsigned shift, std::uint64_t* bits, std::uint64_t* unsure) {
  switch (c) {
    case 1: micro<R, 1>(X, ldx, Wp, dpad, bound, norms, shift, bits, unsure); break;
    case 2: micro<R, 2>(X, ldx, Wp, dpad, bound, norms, shift, bits, unsure); break;
    case 3:
      if constexpr (tile_c >= 3) micro<R, 3>(X, ldx, Wp, dpad, bound, norms, shift, bits, unsure);
      break;
    default:
      if constexpr (tile_c >= 4) micro<R, 4>(X, ldx, Wp, dpad, bound, norms, shift, bits, unsure);
      break;
  }
}
// micro<r, c> for a run-time r in [1, tile_r]: the rows left over at the end
// of a block (a GQA group's 4 queries, say) still read the panel only once.
inline void micro_rc(int r, int c, const float* X, std::size_t ldx, const float* Wp, std::size_t dpad,
                     const float* bound, const float* norms, unsigned shift, std::uint64_t* bits,
                     std::uint64_t* unsure) {
  switch (r) {
    case 1: micro_c<1>(c, X, ldx, Wp, dpad, bound, norms, shift, bits, unsure); break;
    case 2: micro_c<2>(c, X, ldx, Wp, dpad, bound, norms, shift, bits, unsure); break;
    case 3: micro_c<3>(c, X, ldx, Wp, dpad, bound, norms, shift, bits, unsure); break;
    case 4: micro_c<4>(c, X, ldx, Wp, dpad, bound, norms, shift, bits, unsure); break;
    case 5:
      if constexpr (tile_r >= 5) micro_c<5>(c, X, ldx, Wp, dpad, bound, norms, shift, bits, unsure);
      break;
    default:
      if constexpr (tile_r >= 6) micro_c<6>(c, X, ldx, Wp, dpad, bound, norms, shift, bits, unsure);
      break;
  }
}

void gemm_sign(const float* X, std::size_t n, std::size_t ldx, const float* Wt, std::size_t dpad, std::size_t P,
               const float* bound, const float* norms, std::uint64_t* bits, std::uint64_t* unsure) {
  constexpr std::size_t cols = tile_c * W, rows = 32 * tile_r;
  static_assert(gemm_panel % cols == 0, "a register tile must divide a panel");
  static_assert(gemm_panel <= 64, "a panel's bits must fit a 64-bit word");
  const std::size_t words = (P + gemm_panel - 1) / gemm_panel;
  for (std::size_t i = 0; i < n * words; ++i) bits[i] = unsure[i] = 0;
  // One packed panel of Wt (dpad x 64 floats, contiguous, L1-sized at d = 128)
  // stays in cache while a block of rows streams past it. Only the vectors
  // that hold real columns are computed (P = 1500 ends 28 columns into its
  // last panel: two AVX-512 vectors of four).
  for (std::size_t i0 = 0; i0 < n; i0 += rows) {
    const std::size_t i1 = min_of(n, i0 + rows);
    for (std::size_t p0 = 0; p0 < P; p0 += gemm_panel) {
      const float* panel = Wt + p0 * dpad;
      for (std::size_t c0 = 0; c0 < gemm_panel && p0 + c0 < P; c0 += cols) {
        const int nv = static_cast<int>(min_of(tile_c, (P - p0 - c0 + W - 1) / W));
        const unsigned shift = static_cast<unsigned>(c0);
        const std::size_t w = p0 / gemm_panel;
        std::size_t i = i0;
        for (; i + tile_r <= i1; i += tile_r)
          micro_c<tile_r>(nv, X + i * ldx, ldx, panel + c0, dpad, bound + p0 + c0, norms + i, shift,
                          bits + w * n + i, unsure + w * n + i);
        if (i < i1)
          micro_rc(static_cast<int>(i1 - i), nv, X + i * ldx, ldx, panel + c0, dpad, bound + p0 + c0, norms + i,
                   shift, bits + w * n + i, unsure + w * n + i);
      }
    }
  }
}

// ---- roofline probes ----
float stream_sum(const float* data, std::size_t n) {
  vf a0(0.0f), a1(0.0f), a2(0.0f), a3(0.0f);
  std::size_t i = 0;
  for (; i + 4 * W <= n; i += 4 * W) {
    a0 += vf::load_unaligned(data + i);
    a1 += vf::load_unaligned(data + i + W);
    a2 += vf::load_unaligned(data + i + 2 * W);
    a3 += vf::load_unaligned(data + i + 3 * W);
  }
  float s = xsimd::hadd((a0 + a1) + (a2 + a3));
  for (; i < n; ++i) s += data[i];
  return s;
}

float gather_sum(const float* data, const std::uint32_t* ids, std::size_t rows, std::size_t row_floats) {
  vf a0(0.0f), a1(0.0f);
  for (std::size_t r = 0; r < rows; ++r) {
    if (r + 16 < rows) prefetch_row(data + static_cast<std::size_t>(ids[r + 16]) * row_floats, row_floats * 4);
    const float* p = data + static_cast<std::size_t>(ids[r]) * row_floats;
    std::size_t c = 0;
    for (; c + 2 * W <= row_floats; c += 2 * W) {
      a0 += vf::load_unaligned(p + c);
      a1 += vf::load_unaligned(p + c + W);
    }
    for (; c + W <= row_floats; c += W) a0 += vf::load_unaligned(p + c);
  }
  return xsimd::hadd(a0 + a1);
}

}  // namespace lshattn::executor::cpu_detail::LSHATTN_CPU_NS

namespace lshattn::executor::cpu_detail {

// Constant-initialised (constinit): no code of this translation unit runs
// before the dispatcher has checked that the processor supports it.
constexpr kernel_table make_table() {
  namespace k = LSHATTN_CPU_NS;
  kernel_table t;
  t.isa = LSHATTN_CPU_LEVEL == 512 ? cpu_isa::avx512 : LSHATTN_CPU_LEVEL == 256 ? cpu_isa::avx2 : cpu_isa::sse2;
  t.name = to_string(t.isa);
  t.width = k::W;
  t.attend[0][0] = &k::attend<float, float>;
  t.attend[0][1] = &k::attend<float, bf16>;
  t.attend[0][2] = &k::attend<float, fp16>;
  t.attend[1][0] = &k::attend<bf16, float>;
  t.attend[1][1] = &k::attend<bf16, bf16>;
  t.attend[1][2] = &k::attend<bf16, fp16>;
  t.attend[2][0] = &k::attend<fp16, float>;
  t.attend[2][1] = &k::attend<fp16, bf16>;
  t.attend[2][2] = &k::attend<fp16, fp16>;
  t.centre[0] = &k::centre<float>;
  t.centre[1] = &k::centre<bf16>;
  t.centre[2] = &k::centre<fp16>;
  t.gemm_sign = &k::gemm_sign;
  t.stream_sum = &k::stream_sum;
  t.gather_sum = &k::gather_sum;
  return t;
}

extern const kernel_table LSHATTN_CPU_TABLE;
constinit const kernel_table LSHATTN_CPU_TABLE = make_table();

}  // namespace lshattn::executor::cpu_detail
