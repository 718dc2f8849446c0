#pragma once
// Tensor-core variant of attend_kernel for bf16 K/V caches (same grid, same
// partials, same semantics; merge_kernel combines its partials unchanged).
//
// Each warp owns its own 16-row tiles (block tile warp, warp + 4, ...) with
// its own cp.async stages and its own running (m, l, O), so the main loop has
// no block barrier; the four warps are merged through shared memory at the
// end. The GQA group is the M dimension of mma.m16n8k16: rows 0..7 carry the
// heads, rows 8..15 a second bf16 part of the same heads, and since the rows
// g and g + 8 of a fragment belong to the same thread, the two parts are
// summed for free:
//   S = Q K^T   A rows g / g + 8 = hi / mid bf16 part of query head g (a third
//               mma adds the lo part for float queries: 24 bits in all, so
//               the dot is the fp32 one up to accumulation order). B = K
//               through ldmatrix (rows = tokens, k = dims).
//   O += P V    A rows g / g + 8 = hi / lo bf16 part of the fp32 weights
//               (16 bits; l is summed from the fp32 weights), B = V through
//               ldmatrix.trans. The C fragment of S is the A fragment of P
//               (FlashAttention-2's register reuse), so no shuffles.
// A weight of 0 still multiplies its value row inside an mma, where 0 * NaN
// is NaN. Dense rows are attended by every head, so that matches
// attend_kernel's plain fmaf; a listed row that only some heads sampled must
// add nothing to the others, so a tile holding such a row with a non-finite
// value element takes a scalar P V with attend_kernel's select instead.

#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>
#include <type_traits>

#include "lshattn/executor/cuda/kernels.cuh"

namespace lshattn::cuda_detail {

/// Gather: the step attends LSH-listed rows (short gathered runs per block).
template <int D, int G, class TQ, class T, bool Gather = false>
struct attend_mma_shape {
  static_assert(std::is_same_v<T, bf16>, "attend_mma_kernel: bf16 K/V only");
  static_assert(D == 64 || D == 128, "attend_mma_kernel: head_dim 64 or 128");
  static_assert(G >= 1 && G <= 8, "attend_mma_kernel: GQA group of at most 8");
  static constexpr int warps = 4;
  static constexpr int threads = 32 * warps;
  static constexpr int rows = 16;      // rows per warp tile (the mma's k of P V)
  static constexpr int chunks = D / 8;  // 16-byte chunks per row
  static constexpr int tile_bytes = rows * D * 2;  // K or V of one warp tile
  // 2 (D = 128) or 3 (D = 64) resident blocks per SM, each warp keeping
  // stages - 1 tiles (K and V) in flight while it computes: 128 KB (D = 128)
  // or 144 KB (D = 64) of loads in flight per SM at the steady state.
  // Gathered rows at head_dim 128 with 16-bit queries (168 registers, no
  // spills): three blocks per SM with two stages each. Measured on the H200
  // at 128K, LSH step b8/b32: 0.187/0.684 ms against 0.209/0.778 ms with two
  // blocks of three stages; the exact step was the same at b8/b32 and 9%
  // slower at b1 that way, so it keeps two blocks of three stages.
  static constexpr bool wide = Gather && D == 128 && sizeof(TQ) == 2;
  static constexpr int stages = wide ? 2 : D == 128 ? 3 : 4;
  static constexpr int blocks_per_sm = wide ? 3 : D == 128 ? 2 : 3;
  static constexpr std::size_t kv_bytes = static_cast<std::size_t>(warps) * stages * 2 * tile_bytes;
  static constexpr std::size_t mask_bytes = static_cast<std::size_t>(warps) * stages * rows * 4;
  static constexpr std::size_t smem_bytes = kv_bytes + 2 * mask_bytes + D * 4;  // masks, then row norms
  static_assert(static_cast<std::size_t>(warps) * G * (D + 2) * 4 <= kv_bytes, "attend_mma_kernel: the final merge reuses the tiles' space");
};

/// Resident attend_mma_kernel blocks per SM (shared memory bound), for choosing a.splits.
template <int D, class TQ, bool Gather>
inline constexpr int attend_mma_blocks_per_sm = attend_mma_shape<D, 8, TQ, bf16, Gather>::blocks_per_sm;

namespace mma_detail {

/// Upper bf16 half of two floats packed into one word (x low, y high): the
/// round-toward-zero bf16 of each, exact when the low halves are zero.
__device__ __forceinline__ std::uint32_t pack_hi(float x, float y) {
  return __byte_perm(__float_as_uint(x), __float_as_uint(y), 0x7632);
}
__device__ __forceinline__ float trunc_bf16(float x) { return __uint_as_float(__float_as_uint(x) & 0xffff0000u); }

/// Round-to-nearest bf16 pair (x low, y high).
__device__ __forceinline__ std::uint32_t pack_rn(float x, float y) {
  std::uint32_t r;
  asm("cvt.rn.bf16x2.f32 %0, %1, %2;\n" : "=r"(r) : "f"(y), "f"(x));
  return r;
}

/// x = hi + mid + lo exactly (each a truncated bf16, 8 significant bits of
/// the remainder); non-finite x goes whole into hi (x - hi would be NaN).
__device__ __forceinline__ void split3(float x, float& hi, float& mid, float& lo) {
  if (!isfinite(x)) {
    hi = x != x ? __uint_as_float(0x7fc00000u) : x;
    mid = lo = 0.0f;
    return;
  }
  hi = trunc_bf16(x);
  const float r = x - hi;  // exact
  mid = trunc_bf16(r);
  lo = r - mid;  // exact, at most 8 significant bits
}

__device__ __forceinline__ void ldmatrix_x4(std::uint32_t (&r)[4], const void* p) {
  const unsigned s = static_cast<unsigned>(__cvta_generic_to_shared(p));
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0, %1, %2, %3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(s));
}
__device__ __forceinline__ void ldmatrix_x4_trans(std::uint32_t (&r)[4], const void* p) {
  const unsigned s = static_cast<unsigned>(__cvta_generic_to_shared(p));
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0, %1, %2, %3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(s));
}

/// c += A B for one m16n8k16 bf16 tile, fp32 accumulators.
__device__ __forceinline__ void mma16816(float (&c)[4], std::uint32_t a0, std::uint32_t a1, std::uint32_t a2,
                                         std::uint32_t a3, std::uint32_t b0, std::uint32_t b1) {
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, "
      "{%0, %1, %2, %3};\n"
      : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
      : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "r"(b0), "r"(b1));
}

/// Whether any of the 16 bf16 elements in 16 bytes is infinite or NaN.
__device__ __forceinline__ bool any_nonfinite16(const uint4& w) {
  const std::uint32_t x[4] = {w.x, w.y, w.z, w.w};
  bool bad = false;
#pragma unroll
  for (int i = 0; i < 4; ++i) bad = bad || (x[i] & 0x7f80u) == 0x7f80u || (x[i] & 0x7f800000u) == 0x7f800000u;
  return bad;
}

}  // namespace mma_detail

template <int D, int G, class TQ, class T, bool Gather>
__global__ void __launch_bounds__(attend_mma_shape<D, G, TQ, T, Gather>::threads,
                                  attend_mma_shape<D, G, TQ, T, Gather>::blocks_per_sm)
    attend_mma_kernel(const __grid_constant__ step_args<TQ, T> a) {
  using S = attend_mma_shape<D, G, TQ, T, Gather>;
  using namespace mma_detail;
  constexpr int R = S::rows, W = S::warps, CH = S::chunks, ST = S::stages, KS = D / 16, NB = D / 8;
  constexpr bool q_lo = std::is_same_v<TQ, float>;  // bf16 and fp16 queries fit in hi + mid exactly
  constexpr std::uint32_t all_heads = (1u << G) - 1u, full = 0xffffffffu;
  extern __shared__ __align__(16) unsigned char smem[];

  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5, g = lane >> 2, t = lane & 3;
  T* kvw = reinterpret_cast<T*>(smem) + static_cast<std::size_t>(warp) * ST * 2 * R * D;  // [ST][K, V][R][D], swizzled
  std::uint32_t* mks = reinterpret_cast<std::uint32_t*>(smem + S::kv_bytes) + warp * ST * R;  // [ST][R] row masks
  float* nms = reinterpret_cast<float*>(smem + S::kv_bytes + S::mask_bytes) + warp * ST * R;  // [ST][R] |key - mean| of listed rows
  float* ms = reinterpret_cast<float*>(smem + S::kv_bytes + 2 * S::mask_bytes);  // the index mean (LSH)

  const int split = blockIdx.x, kvh = blockIdx.y, sq = blockIdx.z;
  const seq_desc<TQ, T>& s = a.seq[sq];
  for (int e = tid; e < D; e += S::threads) ms[e] = a.lsh ? s.idx.mean[static_cast<std::size_t>(kvh) * D + e] : 0.0f;

  const T* kb = s.k + kvh * s.k_head;
  const T* vb = s.v + kvh * s.v_head;
  const attend_rows rows(a, sq, kvh, split);
  const std::uint32_t p0 = rows.p0, p1 = rows.p1;
  const int ntiles = static_cast<int>((p1 - p0 + R - 1) / R);
  const int mine = ntiles > warp ? (ntiles - warp + W - 1) / W : 0;  // this warp's tiles: warp, warp + W, ...

  // Token, mask and (listed rows) centred-key norm of row `lane` of this
  // warp's tile j (lanes < R); mask 0 marks a row past the split, which is
  // zero-filled. Loaded a tile ahead of its copies, so a listed tile's index
  // loads do not stall the issue.
  const auto fetch = [&](int j, std::uint32_t& tok, std::uint32_t& mask, float& nrm) {
    tok = 0;
    mask = 0;
    nrm = 0.0f;
    if (j < mine && lane < R) {
      const std::uint32_t p = p0 + static_cast<std::uint32_t>((warp + W * j) * R + lane);
      if (p < p1) {
        rows.at(p, all_heads, tok, mask);
        if (mask & listed_bit) nrm = rows.norm(s.idx, kvh, tok);
      }
    }
  };
  // Copies of tile j into stage j % ST (an empty group past the end keeps the wait count uniform).
  const auto issue = [&](int j, std::uint32_t tok, std::uint32_t mask, float nrm) {
    if (j < mine) {  // warp-uniform
      const int st = j % ST;
      T* kt = kvw + static_cast<std::size_t>(st) * 2 * R * D;
      T* vt = kt + R * D;
      constexpr int RP = 32 / CH;  // rows per pass of the warp
      const int col = lane % CH, r0 = lane / CH;
#pragma unroll
      for (int i = 0; i < R / RP; ++i) {
        const int r = r0 + i * RP;
        const std::uint32_t tk = __shfl_sync(full, tok, r);
        const bool valid = __shfl_sync(full, mask, r) != 0u;
        const int phys = (r * CH + (col ^ (r & 7))) * 8;
        cp_async16(kt + phys, kb + static_cast<std::size_t>(tk) * s.k_tok + col * 8, valid);
        cp_async16(vt + phys, vb + static_cast<std::size_t>(tk) * s.v_tok + col * 8, valid);
      }
      if (lane < R) {
        mks[st * R + lane] = mask;
        nms[st * R + lane] = nrm;
      }
    }
    cp_async_commit();
  };
  std::uint32_t ftok, fmask;
  float fnrm;
  fetch(0, ftok, fmask, fnrm);
#pragma unroll
  for (int j = 0; j < ST - 1; ++j) {
    const std::uint32_t tk = ftok, mk = fmask;
    const float nr = fnrm;
    fetch(j + 1, ftok, fmask, fnrm);
    issue(j, tk, mk, nr);
  }
  __syncthreads();  // the mean in shared memory

  // Query fragments, constant over the tiles: A rows g (hi) and g + 8 (mid)
  // of head g, and the lo rows for float queries (rows g + 8 zero there).
  std::uint32_t qa[KS][4], ql[KS][2];
  float qm = 0.0f, qn = 0.0f;
  {
    const bool hv = g < G;
    const TQ* qp = s.q + static_cast<std::size_t>(kvh * G + (hv ? g : 0)) * s.q_stride;
    float qq = 0.0f;
#pragma unroll
    for (int kk = 0; kk < KS; ++kk) {
#pragma unroll
      for (int half = 0; half < 2; ++half) {
        const int j = kk * 16 + half * 8 + 2 * t;
        const float x0 = hv ? to_float(qp[j]) : 0.0f, x1 = hv ? to_float(qp[j + 1]) : 0.0f;
        float h0, m0, l0, h1, m1, l1;
        split3(x0, h0, m0, l0);
        split3(x1, h1, m1, l1);
        qa[kk][2 * half] = pack_hi(h0, h1);
        qa[kk][2 * half + 1] = pack_hi(m0, m1);
        ql[kk][half] = pack_hi(l0, l1);
        qm = fmaf(x0, ms[j], fmaf(x1, ms[j + 1], qm));
        qq = fmaf(x0, x0, fmaf(x1, x1, qq));
      }
    }
#pragma unroll
    for (int o = 1; o < 4; o <<= 1) {
      qm += __shfl_xor_sync(full, qm, o);
      qq += __shfl_xor_sync(full, qq, o);
    }
    qn = sqrtf(qq);
  }

  // Running state of head g over this warp's tiles; l is this lane's share.
  float run_m = -INFINITY, run_l = 0.0f;
  float o[NB][4];
#pragma unroll
  for (int nb = 0; nb < NB; ++nb)
#pragma unroll
    for (int x = 0; x < 4; ++x) o[nb][x] = 0.0f;

  for (int j = 0; j < mine; ++j) {
    {
      const std::uint32_t tk = ftok, mk = fmask;
      const float nr = fnrm;
      fetch(j + ST, ftok, fmask, fnrm);
      issue(j + ST - 1, tk, mk, nr);
    }
    cp_async_wait<ST - 1>();
    __syncwarp();  // tile j has landed for every lane's copies
    const int st = j % ST;
    const T* kt = kvw + static_cast<std::size_t>(st) * 2 * R * D;
    const T* vt = kt + R * D;
    const std::uint32_t* mrow = mks + st * R;
    // This thread's tokens of the tile: 2t, 2t + 1 (n-tile 0), 8 + 2t, 9 + 2t (n-tile 1).
    const std::uint32_t m4[4] = {mrow[2 * t], mrow[2 * t + 1], mrow[8 + 2 * t], mrow[9 + 2 * t]};
    const std::uint32_t lrow = mrow[lane & 15];

    float c0[4] = {0.0f, 0.0f, 0.0f, 0.0f}, c1[4] = {0.0f, 0.0f, 0.0f, 0.0f};
    {
      const int m = lane >> 3, r = (m >> 1) * 8 + (lane & 7);
#pragma unroll
      for (int kk = 0; kk < KS; ++kk) {
        std::uint32_t b[4];
        ldmatrix_x4(b, kt + (r * CH + ((2 * kk + (m & 1)) ^ (r & 7))) * 8);
        mma16816(c0, qa[kk][0], qa[kk][1], qa[kk][2], qa[kk][3], b[0], b[1]);
        mma16816(c1, qa[kk][0], qa[kk][1], qa[kk][2], qa[kk][3], b[2], b[3]);
        if constexpr (q_lo) {
          mma16816(c0, ql[kk][0], 0u, ql[kk][1], 0u, b[0], b[1]);
          mma16816(c1, ql[kk][0], 0u, ql[kk][1], 0u, b[2], b[3]);
        }
      }
    }
    const float dot[4] = {c0[0] + c0[2], c0[1] + c0[3], c1[0] + c1[2], c1[1] + c1[3]};

    const bool any_listed = __any_sync(full, (lrow & listed_bit) != 0u);
    float sc[4];
    if (any_listed) {
      const float* nrow = nms + st * R;  // the index's |k - mean| of this thread's rows
      const float xr[4] = {nrow[2 * t], nrow[2 * t + 1], nrow[8 + 2 * t], nrow[9 + 2 * t]};
#pragma unroll
      for (int i = 0; i < 4; ++i) {
        sc[i] = -INFINITY;
        if ((m4[i] >> g) & 1u) {
          sc[i] = dot[i] * a.scale;
          if (m4[i] & listed_bit) {
            const float den = qn * xr[i];
            sc[i] -= inclusion_lookup(den > 0.0f ? (dot[i] - qm) / den : 0.0f, a.inc_table, a.K, a.L, a.m);
          }
        }
      }
    } else {
#pragma unroll
      for (int i = 0; i < 4; ++i) sc[i] = (m4[i] >> g) & 1u ? dot[i] * a.scale : -INFINITY;
    }

    float tmax = nan_max(nan_max(sc[0], sc[1]), nan_max(sc[2], sc[3]));
    tmax = nan_max(tmax, __shfl_xor_sync(full, tmax, 1));
    tmax = nan_max(tmax, __shfl_xor_sync(full, tmax, 2));
    const float mnew = nan_max(run_m, tmax);
    const float f = mnew == -INFINITY ? 1.0f : __expf(run_m - mnew);
    float p[4];
#pragma unroll
    for (int i = 0; i < 4; ++i) p[i] = mnew == -INFINITY ? 0.0f : __expf(sc[i] - mnew);
    run_l = fmaf(run_l, f, (p[0] + p[1]) + (p[2] + p[3]));
    run_m = mnew;
#pragma unroll
    for (int nb = 0; nb < NB; ++nb)
#pragma unroll
      for (int x = 0; x < 4; ++x) o[nb][x] *= f;

    // A tile needs the scalar P V when a row that some but not all heads
    // attend holds a non-finite value element (0 * NaN inside the mma).
    bool scalar = false;
    if (any_listed) {
      const bool partial = lrow != 0u && (lrow & all_heads) != all_heads;
      if (__any_sync(full, partial)) {
        const int r = lane >> 1, c0h = (lane & 1) * (CH / 2);
        const bool mine_partial = __shfl_sync(full, partial, r);
        bool bad = false;
        if (mine_partial) {
#pragma unroll
          for (int c = 0; c < CH / 2; ++c) {
            const int col = c0h + c;
            bad = bad || any_nonfinite16(*reinterpret_cast<const uint4*>(vt + (r * CH + (col ^ (r & 7))) * 8));
          }
        }
        scalar = __any_sync(full, bad);
      }
    }
    if (!scalar) {
      const float h[4] = {trunc_bf16(p[0]), trunc_bf16(p[1]), trunc_bf16(p[2]), trunc_bf16(p[3])};
      const std::uint32_t pa0 = pack_hi(h[0], h[1]), pa2 = pack_hi(h[2], h[3]);
      const std::uint32_t pa1 = pack_rn(p[0] - h[0], p[1] - h[1]), pa3 = pack_rn(p[2] - h[2], p[3] - h[3]);
      const int m = lane >> 3, r = (m & 1) * 8 + (lane & 7);
#pragma unroll
      for (int nb = 0; nb < NB; nb += 2) {
        std::uint32_t b[4];
        ldmatrix_x4_trans(b, vt + (r * CH + ((nb + (m >> 1)) ^ (r & 7))) * 8);
        mma16816(o[nb], pa0, pa1, pa2, pa3, b[0], b[1]);
        mma16816(o[nb + 1], pa0, pa1, pa2, pa3, b[2], b[3]);
      }
    } else {
#pragma unroll
      for (int r = 0; r < R; ++r) {
        const int which = (r >= 8 ? 2 : 0) + (r & 1);
        const float pr = __shfl_sync(full, p[which], g * 4 + ((r & 7) >> 1));
        const bool every = (mrow[r] & all_heads) == all_heads;
        if (every || pr != 0.0f) {
#pragma unroll
          for (int nb = 0; nb < NB; ++nb) {
            const std::uint32_t w = *reinterpret_cast<const std::uint32_t*>(vt + (r * CH + (nb ^ (r & 7))) * 8 + 2 * t);
            o[nb][0] = fmaf(pr, __uint_as_float(w << 16), o[nb][0]);
            o[nb][1] = fmaf(pr, __uint_as_float(w & 0xffff0000u), o[nb][1]);
          }
        }
      }
    }
    __syncwarp();  // every lane is done with stage st before it is refilled
  }
  cp_async_wait<0>();
  __syncthreads();  // every warp's tiles consumed: the merge may overwrite them

  float* red = reinterpret_cast<float*>(smem);  // [W][G][D] outputs, then [W][G] (m, l)
  float* ml = red + W * G * D;
  run_l += __shfl_xor_sync(full, run_l, 1);
  run_l += __shfl_xor_sync(full, run_l, 2);
  if (g < G) {
#pragma unroll
    for (int nb = 0; nb < NB; ++nb) {
      float* dst = red + (warp * G + g) * D + nb * 8 + 2 * t;
      dst[0] = o[nb][0] + o[nb][2];
      dst[1] = o[nb][1] + o[nb][3];
    }
    if (t == 0) {
      ml[(warp * G + g) * 2] = run_m;
      ml[(warp * G + g) * 2 + 1] = run_l;
    }
  }
  __syncthreads();
  for (int e = tid; e < G * D; e += S::threads) {
    const int h = e / D, j = e % D;
    float M = -INFINITY;
#pragma unroll
    for (int w = 0; w < W; ++w) M = nan_max(M, ml[(w * G + h) * 2]);
    float acc = 0.0f, l = 0.0f;
#pragma unroll
    for (int w = 0; w < W; ++w) {
      const float mw = ml[(w * G + h) * 2];
      const float sw = mw == -INFINITY ? 0.0f : __expf(mw - M);
      l = fmaf(ml[(w * G + h) * 2 + 1], sw, l);
      acc = fmaf(red[(w * G + h) * D + j], sw, acc);
    }
    float* out = a.partials + ((static_cast<std::size_t>(sq) * a.hq + kvh * G + h) * a.splits + split) * (D + 1);
    const bool empty = M == -INFINITY;
    out[j] = empty ? 0.0f : acc / l;
    if (j == 0) out[D] = empty ? -INFINITY : M + __logf(l);
  }
}

/// Launches attend_mma_kernel over (a.splits, a.hk, a.nseq), then merge_kernel,
/// as launch_attend_merge does for attend_kernel.
template <int D, int G, class TQ, class T, bool Gather = false>
void launch_attend_mma(const step_args<TQ, T>& a, cudaStream_t stream) {
  using S = attend_mma_shape<D, G, TQ, T, Gather>;
  auto* kernel = attend_mma_kernel<D, G, TQ, T, Gather>;
  if constexpr (S::smem_bytes > 48 * 1024)
    LSHATTN_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(S::smem_bytes)));
  // The full shared-memory carveout, so that blocks_per_sm blocks fit beside each other.
  LSHATTN_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributePreferredSharedMemoryCarveout, 100));
  kernel<<<dim3(a.splits, a.hk, a.nseq), S::threads, S::smem_bytes, stream>>>(a);
  LSHATTN_CUDA_LAUNCHED("attend_mma_kernel");
  merge_kernel<D, TQ, T><<<dim3(a.hq, a.nseq), D, 0, stream>>>(a);
  LSHATTN_CUDA_LAUNCHED("merge_kernel");
}

}  // namespace lshattn::cuda_detail
