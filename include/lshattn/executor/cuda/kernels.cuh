#pragma once
// The kernels of one CUDA decode step (see executor/cuda/executor.cuh for the
// order they run in and the workspace they share).
//
//   query_hash_kernel   codes of every query head for every table
//   retrieve_kernel     per (KV head, query head of its group, table): walk the
//                       query's bucket and the unsorted tail, count collisions
//                       per token with 16-bit lanes of a 64-bit atomic counter;
//                       the add that lifts a head's count to m marks the head in
//                       the token's flag word, and the first head to do so puts
//                       the token on the KV head's union list (MagicPIG's m-of-L
//                       rule, Chen et al. 2024, section 4). The same kernel with
//                       Clear = true walks the same buckets again and zeroes
//                       what it touched, so no O(n) clear is ever needed.
//   attend_kernel       flash-decoding over the exact tokens and the union
//                       list: each K/V row is read once for the whole GQA group;
//                       a listed token's score for head h is corrected by
//                       -ln u_h (its inclusion probability at the angle between
//                       the query and the centred key) or skipped when h did
//                       not sample it. Positions are split evenly over the
//                       blocks; each block writes a mergeable (o, lse) partial.
//   merge_kernel        merges the partials of a head (core/state.hpp's rule).

#include <cuda_runtime.h>

#include <cfloat>
#include <cstddef>
#include <cstdint>

#include "lshattn/executor/cuda/common.cuh"
#include "lshattn/executor/cuda/hash.cuh"
#include "lshattn/executor/cuda/index.cuh"

namespace lshattn::cuda_detail {

inline constexpr int max_seqs_per_launch = 16;
inline constexpr int max_splits = 64;

/// One request of the batch as the kernels see it. Exact tokens are
/// [0, dense_a) U [dense_b, n); the rest comes from the union list (LSH only).
template <class TQ, class T>
struct seq_desc {
  const TQ* q;
  std::size_t q_stride;
  const T* k;
  std::size_t k_head, k_tok;
  const T* v;
  std::size_t v_head, v_tok;
  float* out;
  std::size_t out_stride;
  float* lse;  // null when not requested
  std::uint32_t n, dense_a, dense_b;
  index_view idx;
};

/// Everything one launch of the step needs, passed by value as kernel
/// parameters (no host-to-device copy, so the step can be graph-captured).
template <class TQ, class T>
struct step_args {
  seq_desc<TQ, T> seq[max_seqs_per_launch];
  int nseq, hq, hk, group, d, K, L, m, B, splits, words;
  float scale;
  float lse_factor;  // 1 for natural log, 1/ln 2 for base 2
  bool lsh;
  double log_c_m, log_c_m1;  // ln C(L, m), ln C(L, m - 1)
  std::size_t nmax;          // token slots per (request, KV head) in counters, flags and lists
  std::uint32_t* qcodes;     // [seq][hq][L]
  unsigned long long* counters;  // [seq][hk][words][nmax]
  std::uint32_t* flags;      // [seq][hk][nmax]
  std::uint32_t* lists;      // [seq][hk][nmax]
  std::uint32_t* list_count; // [seq][hk]
  unsigned long long* stats; // [seq][2]: union keys, sampled (head, key) pairs
  float* partials;           // [seq][hq][splits][d + 1]
};

template <class TQ, class T>
__global__ void __launch_bounds__(256) query_hash_kernel(const __grid_constant__ step_args<TQ, T> a, int tables_per_block) {
  extern __shared__ float qs[];  // [hq][d] floats, then [hq][planes of this block] bits
  const seq_desc<TQ, T>& s = a.seq[blockIdx.y];
  const int d = a.d, hq = a.hq, K = a.K, L = a.L, P = K * L;
  const int l0 = blockIdx.x * tables_per_block, nt = min(tables_per_block, L - l0), pb = nt * K;
  unsigned char* bits = reinterpret_cast<unsigned char*>(qs + hq * d);
  for (int e = threadIdx.x; e < hq * d; e += blockDim.x) qs[e] = to_float(s.q[(e / d) * s.q_stride + e % d]);
  __syncthreads();
  for (int e = threadIdx.x; e < hq * pb; e += blockDim.x) {
    const int h = e / pb, pp = e % pb;
    bits[e] = query_bit(qs + h * d, s.idx.planes_t, P, l0 * K + pp, d) ? 1 : 0;
  }
  __syncthreads();
  for (int e = threadIdx.x; e < hq * nt; e += blockDim.x) {
    const int h = e / nt, lt = e % nt;
    std::uint32_t code = 0;
    for (int b = 0; b < K; ++b) code |= static_cast<std::uint32_t>(bits[h * pb + lt * K + b]) << b;
    a.qcodes[(static_cast<std::size_t>(blockIdx.y) * hq + h) * L + l0 + lt] = code;
  }
}

template <bool Clear, class TQ, class T>
__global__ void __launch_bounds__(256) retrieve_kernel(const __grid_constant__ step_args<TQ, T> a) {
  const int lane = threadIdx.x & 31;
  const int pair = blockIdx.x * 8 + (threadIdx.x >> 5);
  if (pair >= a.group * a.L) return;  // whole warps leave together
  const int hg = pair / a.L, l = pair % a.L, kvh = blockIdx.y, sq = blockIdx.z;
  const seq_desc<TQ, T>& s = a.seq[sq];
  const index_view& ix = s.idx;
  const std::size_t slot = static_cast<std::size_t>(sq) * a.hk + kvh;
  const std::uint32_t code = a.qcodes[(static_cast<std::size_t>(sq) * a.hq + kvh * a.group + hg) * a.L + l];
  const std::size_t tab = static_cast<std::size_t>(kvh) * a.L + l;
  const std::uint32_t lo = ix.offsets[tab * (a.B + 1) + code], hi = ix.offsets[tab * (a.B + 1) + code + 1];
  const std::uint32_t* ids = ix.ids + tab * ix.cap;
  const std::uint16_t* tail_codes = ix.codes + tab * ix.cap;
  unsigned long long* ctr = a.counters + (slot * a.words + hg / 4) * a.nmax;
  std::uint32_t* flg = a.flags + slot * a.nmax;
  std::uint32_t* list = a.lists + slot * a.nmax;
  const int shift = 16 * (hg % 4);
  const auto touch = [&](bool have, std::uint32_t id) {
    if constexpr (Clear) {
      if (have) {
        ctr[id] = 0;
        flg[id] = 0;
      }
    } else {
      bool first = false;
      if (have) {
        const unsigned long long old = atomicAdd(ctr + id, 1ull << shift);
        if (static_cast<int>((old >> shift) & 0xffffull) + 1 == a.m) first = atomicOr(flg + id, 1u << hg) == 0u;
      }
      const unsigned ballot = __ballot_sync(0xffffffffu, first);
      if (ballot) {  // one atomic per warp for the list slots
        const int leader = __ffs(ballot) - 1;
        std::uint32_t at = 0;
        if (lane == leader) at = atomicAdd(a.list_count + slot, static_cast<std::uint32_t>(__popc(ballot)));
        at = __shfl_sync(0xffffffffu, at, leader);
        if (first) list[at + __popc(ballot & ((1u << lane) - 1u))] = id;
      }
    }
  };
  for (std::uint32_t b = lo; b < hi; b += 32) {
    const bool have = b + lane < hi;
    touch(have, have ? ids[b + lane] : 0u);
  }
  for (std::uint32_t b = ix.csr_end; b < ix.end; b += 32) {
    const std::uint32_t t = b + lane;
    touch(t < ix.end && tail_codes[t - ix.begin] == code, t);
  }
}

/// ln u for a key at cosine c: u = P(Binomial(L, p) >= m), p = (1 - acos(c)/pi)^K,
/// summing whichever tail has decreasing positive terms (as collision/inclusion.hpp),
/// floored at DBL_MIN like estimator::lsh.
__device__ inline double log_inclusion(double c, int K, int L, int m, double log_c_m, double log_c_m1) {
  c = c > 1.0 ? 1.0 : (c < -1.0 ? -1.0 : c);
  const double P = 1.0 - acos(c) / 3.14159265358979323846;
  const double p = pow(P, static_cast<double>(K));
  double u;
  if (!(p > 0.0)) {
    u = 0.0;
  } else if (p >= 1.0) {
    u = 1.0;
  } else {
    const double lp = log(p), lq = log1p(-p), ratio = p / (1.0 - p);
    if (static_cast<double>(m) > L * p) {
      double term = exp(log_c_m + m * lp + (L - m) * lq), sum = 0.0;
      for (int j = m; j <= L && term > 0.0; ++j) {
        sum += term;
        if (term < sum * 1e-18) break;
        term *= static_cast<double>(L - j) / static_cast<double>(j + 1) * ratio;
      }
      u = sum < 1.0 ? sum : 1.0;
    } else {
      double term = exp(log_c_m1 + (m - 1) * lp + (L - m + 1) * lq), lower = 0.0;
      for (int j = m - 1; j >= 0 && term > 0.0; --j) {
        lower += term;
        if (term < lower * 1e-18) break;
        term *= static_cast<double>(j) / static_cast<double>(L - j + 1) / ratio;
      }
      u = 1.0 - lower > 0.0 ? 1.0 - lower : 0.0;
    }
  }
  return log(u > DBL_MIN ? u : DBL_MIN);
}

template <int D, int G, class T>
struct attend_shape {
  static constexpr int vec = 16 / static_cast<int>(sizeof(T));  // elements per 16-byte load
  static constexpr int lanes_per_row = D / vec;
  static constexpr int rows_per_warp = 32 / lanes_per_row;
  static constexpr int warps = 4;
  static constexpr int row_groups = warps * rows_per_warp;
  static constexpr int unroll = G <= 4 ? 4 : 2;  // rows in flight per row group
  static_assert(lanes_per_row >= 1 && lanes_per_row <= 32 && 32 % lanes_per_row == 0,
                "attend_kernel: head_dim * sizeof(T) must be 16..512 bytes and a power of two");
  static_assert(G <= lanes_per_row, "attend_kernel: GQA group larger than the lanes of a row");
};

template <int D, int G, class TQ, class T>
__global__ void __launch_bounds__(128) attend_kernel(const __grid_constant__ step_args<TQ, T> a) {
  using S = attend_shape<D, G, T>;
  constexpr int VEC = S::vec, LPR = S::lanes_per_row, NRG = S::row_groups, U = S::unroll;
  __shared__ float sm_o[NRG][G][D];
  __shared__ float sm_m[NRG][G], sm_l[NRG][G];
  const int split = blockIdx.x, kvh = blockIdx.y, sq = blockIdx.z;
  const seq_desc<TQ, T>& s = a.seq[sq];
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int sub = lane % LPR, rg = warp * S::rows_per_warp + lane / LPR, j0 = sub * VEC;
  const int row_lane0 = lane - sub;

  float q[G][VEC], mean[VEC], qm[G], qn[G];
#pragma unroll
  for (int h = 0; h < G; ++h)
#pragma unroll
    for (int i = 0; i < VEC; ++i) q[h][i] = to_float(s.q[(kvh * G + h) * s.q_stride + j0 + i]);
#pragma unroll
  for (int i = 0; i < VEC; ++i) mean[i] = a.lsh ? s.idx.mean[static_cast<std::size_t>(kvh) * D + j0 + i] : 0.0f;
#pragma unroll
  for (int h = 0; h < G; ++h) {
    float x = 0.0f, y = 0.0f;
#pragma unroll
    for (int i = 0; i < VEC; ++i) {
      x = fmaf(q[h][i], mean[i], x);
      y = fmaf(q[h][i], q[h][i], y);
    }
#pragma unroll
    for (int o = LPR / 2; o; o >>= 1) {
      x += __shfl_xor_sync(0xffffffffu, x, o);
      y += __shfl_xor_sync(0xffffffffu, y, o);
    }
    qm[h] = x;
    qn[h] = sqrtf(y);
  }
  // This lane's head for the inclusion probability (one double evaluation per head and key).
  float my_qm = 0.0f, my_qn = 0.0f;
#pragma unroll
  for (int h = 0; h < G; ++h)
    if (h == sub) {
      my_qm = qm[h];
      my_qn = qn[h];
    }

  const T* kb = s.k + kvh * s.k_head + j0;
  const T* vb = s.v + kvh * s.v_head + j0;
  const std::uint32_t n = s.n, da = s.dense_a, db = s.dense_b, nd = da + (n - db);
  const std::size_t slot = static_cast<std::size_t>(sq) * a.hk + kvh;
  const std::uint32_t listed = a.lsh ? a.list_count[slot] : 0u;
  const std::uint32_t* list = a.lists + slot * a.nmax;
  const std::uint32_t* flg = a.flags + slot * a.nmax;
  const std::uint64_t total = static_cast<std::uint64_t>(nd) + listed;
  const std::uint32_t p0 = static_cast<std::uint32_t>(total * split / a.splits);
  const std::uint32_t p1 = static_cast<std::uint32_t>(total * (split + 1) / a.splits);

  float mx[G], sum[G], o[G][VEC];
#pragma unroll
  for (int h = 0; h < G; ++h) {
    mx[h] = -INFINITY;
    sum[h] = 0.0f;
#pragma unroll
    for (int i = 0; i < VEC; ++i) o[h][i] = 0.0f;
  }

  for (std::uint32_t it = p0; it < p1; it += NRG * U) {  // uniform trip count: shuffles below need every lane
    uint4 kr[U], vr[U];
    std::uint32_t mask[U];
    bool valid[U], is_listed[U];
#pragma unroll
    for (int u = 0; u < U; ++u) {
      const std::uint32_t p = it + u * NRG + rg;
      valid[u] = p < p1;
      is_listed[u] = false;
      mask[u] = 0xffffffffu;
      kr[u] = make_uint4(0, 0, 0, 0);
      vr[u] = kr[u];
      if (valid[u]) {
        std::uint32_t tok;
        if (p < da) {
          tok = p;
        } else if (p < nd) {
          tok = db + (p - da);
        } else {
          tok = list[p - nd];
          is_listed[u] = true;
          mask[u] = flg[tok];
        }
        kr[u] = load16(kb + static_cast<std::size_t>(tok) * s.k_tok);
        vr[u] = load16(vb + static_cast<std::size_t>(tok) * s.v_tok);
      }
    }
#pragma unroll
    for (int u = 0; u < U; ++u) {
      float kf[VEC], vf[VEC], dot[G], xc2 = 0.0f;
      widen16<T>(kr[u], kf);
      widen16<T>(vr[u], vf);
#pragma unroll
      for (int h = 0; h < G; ++h) {
        float x = 0.0f;
#pragma unroll
        for (int i = 0; i < VEC; ++i) x = fmaf(q[h][i], kf[i], x);
        dot[h] = x;
      }
#pragma unroll
      for (int off = LPR / 2; off; off >>= 1)
#pragma unroll
        for (int h = 0; h < G; ++h) dot[h] += __shfl_xor_sync(0xffffffffu, dot[h], off);
      if (a.lsh) {  // uniform branch: only listed keys need the centred norm, the exact path skips it
#pragma unroll
        for (int i = 0; i < VEC; ++i) {
          const float c = kf[i] - mean[i];  // the centred key, rounded as the index hashed it
          xc2 = fmaf(c, c, xc2);
        }
#pragma unroll
        for (int off = LPR / 2; off; off >>= 1) xc2 += __shfl_xor_sync(0xffffffffu, xc2, off);
      }
      float my_corr = 0.0f;
      if (is_listed[u] && sub < G && ((mask[u] >> sub) & 1u)) {
        float my_dot = 0.0f;
#pragma unroll
        for (int h = 0; h < G; ++h)
          if (h == sub) my_dot = dot[h];
        const double den = static_cast<double>(my_qn) * sqrt(static_cast<double>(xc2));
        const double c = den > 0.0 ? (static_cast<double>(my_dot) - my_qm) / den : 0.0;
        my_corr = static_cast<float>(log_inclusion(c, a.K, a.L, a.m, a.log_c_m, a.log_c_m1));
      }
      float corr[G];
#pragma unroll
      for (int h = 0; h < G; ++h) corr[h] = __shfl_sync(0xffffffffu, my_corr, row_lane0 + h);
      if (!valid[u]) continue;
#pragma unroll
      for (int h = 0; h < G; ++h) {
        if (is_listed[u] && !((mask[u] >> h) & 1u)) continue;
        const float sc = dot[h] * a.scale - corr[h];
        if (sc > mx[h]) {
          const float f = __expf(mx[h] - sc);  // exp(-inf) = 0 on the first key
          sum[h] *= f;
#pragma unroll
          for (int i = 0; i < VEC; ++i) o[h][i] *= f;
          mx[h] = sc;
        }
        const float w = __expf(sc - mx[h]);
        sum[h] += w;
#pragma unroll
        for (int i = 0; i < VEC; ++i) o[h][i] = fmaf(w, vf[i], o[h][i]);
      }
    }
  }

  // Merge the row groups of the block; one (o, lse) partial per head.
#pragma unroll
  for (int h = 0; h < G; ++h) {
#pragma unroll
    for (int i = 0; i < VEC; ++i) sm_o[rg][h][j0 + i] = o[h][i];
    if (sub == 0) {
      sm_m[rg][h] = mx[h];
      sm_l[rg][h] = sum[h];
    }
  }
  __syncthreads();
  for (int e = threadIdx.x; e < G * D; e += blockDim.x) {
    const int h = e / D, j = e % D;
    float M = -INFINITY;
    for (int r = 0; r < NRG; ++r)
      if (sm_m[r][h] > M || sm_m[r][h] != sm_m[r][h]) M = sm_m[r][h];  // NaN wins, so it propagates
    float* out = a.partials + ((static_cast<std::size_t>(sq) * a.hq + kvh * G + h) * a.splits + split) * (D + 1);
    if (M == -INFINITY) {
      out[j] = 0.0f;
      if (j == 0) out[D] = -INFINITY;
      continue;
    }
    float ls = 0.0f, os = 0.0f;
    for (int r = 0; r < NRG; ++r) {
      const float w = sm_m[r][h] == -INFINITY ? 0.0f : __expf(sm_m[r][h] - M);
      ls = fmaf(sm_l[r][h], w, ls);
      os = fmaf(sm_o[r][h][j], w, os);
    }
    out[j] = os / ls;
    if (j == 0) out[D] = M + __logf(ls);
  }
}

template <int D, class TQ, class T>
__global__ void __launch_bounds__(D) merge_kernel(const __grid_constant__ step_args<TQ, T> a) {
  const int h = blockIdx.x, sq = blockIdx.y, j = threadIdx.x;
  const seq_desc<TQ, T>& s = a.seq[sq];
  const float* part = a.partials + (static_cast<std::size_t>(sq) * a.hq + h) * a.splits * (D + 1);
  float M = -INFINITY;
  for (int k = 0; k < a.splits; ++k) {
    const float l = part[k * (D + 1) + D];
    if (l > M || l != l) M = l;
  }
  float o = 0.0f, lse = -INFINITY;
  if (M != -INFINITY) {
    float ws = 0.0f, acc = 0.0f;
    for (int k = 0; k < a.splits; ++k) {
      const float l = part[k * (D + 1) + D];
      const float w = l == -INFINITY ? 0.0f : expf(l - M);
      ws += w;
      acc = fmaf(w, part[k * (D + 1) + j], acc);
    }
    o = acc / ws;
    lse = M + logf(ws);
  }
  s.out[h * s.out_stride + j] = o;
  if (j == 0 && s.lse) s.lse[h] = lse * a.lse_factor;
}

template <class TQ, class T>
__global__ void __launch_bounds__(256) list_stats_kernel(const __grid_constant__ step_args<TQ, T> a) {
  const std::size_t slot = static_cast<std::size_t>(blockIdx.y) * a.hk + blockIdx.x;
  const std::uint32_t c = a.list_count[slot];
  const std::uint32_t* list = a.lists + slot * a.nmax;
  const std::uint32_t* flg = a.flags + slot * a.nmax;
  unsigned long long pairs = 0;
  for (std::uint32_t i = threadIdx.x; i < c; i += blockDim.x) pairs += static_cast<unsigned>(__popc(flg[list[i]]));
  if (pairs) atomicAdd(a.stats + 2 * blockIdx.y + 1, pairs);
  if (threadIdx.x == 0) atomicAdd(a.stats + 2 * blockIdx.y, static_cast<unsigned long long>(c));
}

template <class TQ, class T>
__global__ void __launch_bounds__(256) clear_lists_kernel(const __grid_constant__ step_args<TQ, T> a) {
  const std::size_t slot = static_cast<std::size_t>(blockIdx.y) * a.hk + blockIdx.x;
  const std::uint32_t c = a.list_count[slot];
  std::uint32_t* list = a.lists + slot * a.nmax;
  for (std::uint32_t i = threadIdx.x; i < c; i += blockDim.x) list[i] = 0;
  __syncthreads();
  if (threadIdx.x == 0) a.list_count[slot] = 0;
}

}  // namespace lshattn::cuda_detail
