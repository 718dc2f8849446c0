#pragma once
// The kernels of one CUDA decode step (see executor/cuda/executor.cuh for the
// order they run in and the workspace they share).
//
//   query_hash_kernel   codes of every query head for every table: a thread per
//                       hyperplane, float64 dots for 8 heads at a time (exact
//                       products, certified, else decided exactly).
//   select_kernel       per (request, KV head, token chunk): count every
//                       query head's collisions with the chunk's tokens in
//                       shared-memory bit planes over the chunk's slice of
//                       its L buckets (the table build's per-chunk bucket
//                       starts) and the unsorted tail, keep the tokens that collide in at
//                       least m tables (MagicPIG's m-of-L rule, Chen et al.
//                       2024, section 4), and append the union of the group's
//                       sets to the KV head's list, each token with the mask
//                       of the heads that sampled it. Nothing O(n) lives in
//                       global memory and nothing needs clearing afterwards.
//   attend_kernel       flash-decoding over the exact tokens and the union
//                       list: 32-row K/V tiles stream through a cp.async
//                       pipeline into shared memory (gathered rows as cheaply
//                       as contiguous ones), each row read once for the whole
//                       GQA group; a listed row's score for head h is corrected
//                       by -ln u_h (its inclusion probability at the angle
//                       between the query and the centred key), or dropped
//                       when h did not sample it. Each block writes a
//                       mergeable (o, lse) partial per head.
//   merge_kernel        merges the partials of a head (core/state.hpp's rule)
//                       and zeroes them for the next step.

#include <cuda_runtime.h>

#include <algorithm>
#include <cfloat>
#include <cmath>
#include <cstddef>
#include <cstdint>

#include "lshattn/collision/inclusion.hpp"
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
  int nseq, hq, hk, group, d, K, L, m, B, splits;
  float scale;
  float lse_factor;  // 1 for natural log, 1/ln 2 for base 2
  bool lsh;
  std::size_t nmax;          // token slots per (request, KV head) in the lists
  std::uint32_t chunk;       // tokens per select_kernel block (a multiple of 32)
  std::uint32_t* qcodes;     // [seq][hq][L]
  std::uint32_t* lists;      // [seq][hk][nmax]: the union list, tokens
  std::uint8_t* list_masks;  // [seq][hk][nmax]: bit h set when query head h of the group sampled the listed token
  const float* inc_table;    // [inclusion_table_size + 3]: ln u over the cosine (inclusion_table.cuh)
  std::uint32_t* list_count; // [seq][hk]
  unsigned long long* stats; // [seq][2]: union keys, sampled (head, key) pairs
  float* partials;           // [seq][hq][splits][d + 1]
};

/// 16-byte asynchronous copy global -> shared (cp.async, L2 only: the rows are
/// streamed once); valid = false zero-fills the destination and reads nothing.
__device__ __forceinline__ void cp_async16(void* smem, const void* gmem, bool valid) {
  const unsigned s = static_cast<unsigned>(__cvta_generic_to_shared(smem));
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(s), "l"(gmem), "r"(valid ? 16 : 0));
}
__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;\n" ::); }
template <int N>
__device__ __forceinline__ void cp_async_wait() {
  asm volatile("cp.async.wait_group %0;\n" ::"n"(N));
}

/// Heads per query_hash_kernel thread (8 fp32 accumulators in registers) and
/// threads per block.
inline constexpr int hash_heads_per_block = 8;
inline constexpr int query_hash_threads = 128;

/// Grid (table blocks, requests, head groups of 8). Thread p of a block owns
/// hyperplane p of its tables and computes its dot with 8 query heads in fp32
/// (the plane is read once for all 8, 32 elements at a time as eight 16-byte
/// loads in flight; the queries sit transposed in shared memory, so one j is
/// two 16-byte broadcasts). A bit is
/// certified when the fp32 value is farther from 0 than Higham's bound for
/// an FMA recursion, gamma_d sum |q_j w_j| <= gamma_d |q| |w| (Accuracy and
/// Stability of Numerical Algorithms, eq. 3.5, with Cauchy-Schwarz); |q| is
/// a float64 sum, |w| an fp32 sum of squares whose own error (at most
/// gamma_d |w|^2) is covered by dividing by 1 - gamma_d. On N(0, I) data
/// about 1e-4 of the dots fail it; those are recomputed in float64 (exact
/// products) with hash.cuh's certificate and exact fallback. (ncu at 128K/b8
/// on the H200: the float64 kernel this replaces took 37 us, latency-bound
/// with 0.28 instructions issued per scheduler cycle; this one 21 us. A
/// variant staging each block's planes in shared memory with cp.async and 16
/// heads per thread took 29 us: half the blocks. Both read the transposed
/// planes a column element at a time.)
template <class TQ, class T>
__global__ void __launch_bounds__(query_hash_threads) query_hash_kernel(const __grid_constant__ step_args<TQ, T> a,
                                                                        int tables_per_block) {
  constexpr int HB = hash_heads_per_block;
  extern __shared__ float4 qs4[];  // [d][HB] floats (transposed queries), [HB] doubles (norms), [HB][planes] bits
  float* qt = reinterpret_cast<float*>(qs4);
  double* qnorm = reinterpret_cast<double*>(qt + HB * a.d);
  unsigned char* bits = reinterpret_cast<unsigned char*>(qnorm + HB);
  const seq_desc<TQ, T>& s = a.seq[blockIdx.y];
  const int d = a.d, K = a.K, L = a.L, h0 = blockIdx.z * HB, nh = min(HB, a.hq - h0);
  const int l0 = blockIdx.x * tables_per_block, nt = min(tables_per_block, L - l0), pb = nt * K;
  for (int e = threadIdx.x; e < HB * d; e += blockDim.x) {
    const int h = e / d, j = e % d;  // heads past nh are zero rows: their bits are never stored
    qt[j * HB + h] = h < nh ? to_float(s.q[(h0 + h) * s.q_stride + j]) : 0.0f;
  }
  __syncthreads();
  {
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    for (int h = warp; h < HB; h += blockDim.x >> 5) {
      double n2 = 0.0;
      for (int j = lane; j < d; j += 32) n2 += static_cast<double>(qt[j * HB + h]) * qt[j * HB + h];
#pragma unroll
      for (int o = 16; o > 0; o >>= 1) n2 += __shfl_xor_sync(0xffffffffu, n2, o);
      if (lane == 0) qnorm[h] = sqrt(n2);
    }
  }
  __syncthreads();
  const double gamma = 0x1p-24 * (d + 2) / (1.0 - 0x1p-24 * (d + 2));
  for (int pp = threadIdx.x; pp < pb; pp += blockDim.x) {
    const int p = l0 * K + pp;
    const float* w = s.idx.planes + static_cast<std::size_t>(p) * d;  // row-major [K*L][d]
    float acc[HB], w2 = 0.0f;
#pragma unroll
    for (int h = 0; h < HB; ++h) acc[h] = 0.0f;
    const auto add = [&](int j, float wj) {
      const float4 lo = qs4[j * 2], hi = qs4[j * 2 + 1];
      acc[0] = fmaf(lo.x, wj, acc[0]);
      acc[1] = fmaf(lo.y, wj, acc[1]);
      acc[2] = fmaf(lo.z, wj, acc[2]);
      acc[3] = fmaf(lo.w, wj, acc[3]);
      acc[4] = fmaf(hi.x, wj, acc[4]);
      acc[5] = fmaf(hi.y, wj, acc[5]);
      acc[6] = fmaf(hi.z, wj, acc[6]);
      acc[7] = fmaf(hi.w, wj, acc[7]);
      w2 = fmaf(wj, wj, w2);
    };
    if ((d & 3) == 0) {  // rows 16-byte aligned (the buffer is, and d floats are a multiple of 16 bytes)
      for (int j0 = 0; j0 < d; j0 += 32) {
        const int n4 = min(8, (d - j0) >> 2);
        float4 wv[8];
#pragma unroll
        for (int k = 0; k < 8; ++k)
          if (k < n4) wv[k] = __ldg(reinterpret_cast<const float4*>(w + j0) + k);
#pragma unroll
        for (int k = 0; k < 8; ++k)
          if (k < n4) {
            add(j0 + 4 * k, wv[k].x);
            add(j0 + 4 * k + 1, wv[k].y);
            add(j0 + 4 * k + 2, wv[k].z);
            add(j0 + 4 * k + 3, wv[k].w);
          }
      }
    } else {
      for (int j = 0; j < d; ++j) add(j, w[j]);
    }
    const double wnorm = sqrt(static_cast<double>(w2) / (1.0 - gamma)) * 1.0001;  // margin for the sqrt's rounding
#pragma unroll
    for (int h = 0; h < HB; ++h) {
      if (h >= nh) break;
      bool bit;
      const float av = fabsf(acc[h]);  // an overflowed sum (inf) or NaN is never certified
      if (av <= FLT_MAX && static_cast<double>(av) > gamma * qnorm[h] * wnorm + 0x1p-120) {
        bit = acc[h] > 0.0f;
      } else {  // rare: float64 with exact products, then exactly
        double s64 = 0.0, mag = 0.0;
        for (int j = 0; j < d; ++j) {
          const double v = static_cast<double>(qt[j * HB + h]) * w[j];
          s64 += v;
          mag += fabs(v);
        }
        bit = certified_positive(
            s64, mag, d, [&](int j) { return qt[j * HB + h]; },
            [&](int j) { return w[j]; });
      }
      bits[h * pb + pp] = bit ? 1 : 0;
    }
  }
  __syncthreads();
  for (int e = threadIdx.x; e < nh * nt; e += blockDim.x) {
    const int h = e / nt, lt = e % nt;
    std::uint32_t code = 0;
    for (int b = 0; b < K; ++b) code |= static_cast<std::uint32_t>(bits[h * pb + lt * K + b]) << b;
    a.qcodes[(static_cast<std::size_t>(blockIdx.y) * a.hq + h0 + h) * L + l0 + lt] = code;
  }
}

/// Query codes of every request and head of `a` into a.qcodes (reads a.seq[i].q,
/// q_stride and idx.planes, and a.nseq, hq, d, K, L).
template <class TQ, class T>
inline void launch_query_hash(const step_args<TQ, T>& a, cudaStream_t stream) {
  constexpr int hb = hash_heads_per_block, ht = query_hash_threads;
  const int tpb = a.K >= ht ? 1 : ht / a.K;
  const std::size_t smem = hb * static_cast<std::size_t>(a.d) * 4 + hb * 8 + hb * static_cast<std::size_t>(tpb * a.K);
  const dim3 grid((a.L + tpb - 1) / tpb, a.nseq, static_cast<unsigned>((a.hq + hb - 1) / hb));
  query_hash_kernel<TQ, T><<<grid, ht, smem, stream>>>(a, tpb);
}

#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
/// Barrier over the thread block cluster (release/acquire: shared-memory
/// writes before it are visible to the cluster's blocks after it).
__device__ __forceinline__ void cluster_sync() {
  asm volatile("barrier.cluster.arrive.aligned;\n\tbarrier.cluster.wait.aligned;\n" ::: "memory");
}
/// The address of *p in the shared memory of the cluster's block `rank`
/// (a generic address: ordinary loads read it).
template <class T>
__device__ __forceinline__ const T* cluster_map(const T* p, unsigned rank) {
  std::uint64_t out;
  asm volatile("mapa.u64 %0, %1, %2;\n" : "=l"(out) : "l"(reinterpret_cast<std::uint64_t>(p)), "r"(rank));
  return reinterpret_cast<const T*>(out);
}
#endif

inline constexpr int select_threads = 512;
inline constexpr int select_blocks_per_sm = 2;                // launch bound (<= 64 registers per thread)
inline constexpr std::size_t select_plane_bytes = 96 * 1024;  // shared memory for the count planes of one block

/// Shared-memory bytes of a select_kernel block holding `heads` query heads
/// of L tables: per (head, table) bucket the 64-bit ids index of its slice,
/// then the count planes over the chunk, the slices' exclusive prefix sums
/// (nb + 1), the query codes and the head of each bucket.
constexpr std::size_t select_smem_bytes(int heads, int m, int L, std::size_t chunk) {
  const std::size_t nb = static_cast<std::size_t>(heads) * L;
  return nb * 8 + static_cast<std::size_t>(heads) * m * (chunk / 32) * 4 + (nb + 1) * 4 + nb * 2 + nb;
}

/// How the selection is cut: `parts` chunks of `chunk` tokens per (request,
/// KV head), counted from each index's begin(); clustered: a cluster of G
/// blocks (a query head each) per chunk.
struct select_plan {
  std::size_t chunk = 0, parts = 0;
  bool clustered = false;
  std::size_t blocks = 0;  ///< grid size
  std::size_t wave = 0;    ///< blocks resident at once on the device
};

/// The chunks for requests of at most `span` indexed tokens, `pairs` (request,
/// KV head) pairs, GQA group G, m planes, L tables, on `sms` SMs with
/// `smem_per_sm` bytes of shared memory each and at most `smem_per_block`
/// per block (the opt-in limit).
///
/// Chunks are whole sort chunks (index.cuh's table build), so that a block
/// reads exactly its own slice of every bucket (the chunk starts), unless the
/// m planes of G heads over one sort chunk exceed select_plane_bytes (G m >
/// 96): then chunks are as long as the planes allow and a block reads the
/// sort chunks it overlaps, dropping ids outside its range. The work of a
/// (request, KV head) is fixed (each id is read once), so the number of
/// chunks only trades per-block fixed costs (bucket bounds, the scan, the
/// compaction and its global atomic) against idle SMs: as few chunks as keep
/// one full wave of resident blocks (select_blocks_per_sm per SM, fewer when
/// shared memory is short), as many as one per sort chunk. When even one
/// chunk per sort chunk leaves SMs without a block (short caches, small
/// batches), sm_90 runs clusters of G blocks, one query head each, G times
/// the blocks for the same work, provided they fit in one wave (the previous
/// design measured clusters slower once their grid outgrew the SMs: 90 vs
/// 62 us at 128K, batch 8).
inline select_plan plan_chunks(std::size_t span, std::size_t pairs, int G, int m, int L, int sms,
                               std::size_t smem_per_sm, std::size_t smem_per_block, bool clustered) {
  const int heads = clustered ? 1 : G;
  // Planes within select_plane_bytes and, with the bucket slices, within a
  // block's limit (less 2 KB for the static arrays).
  const std::size_t fixed = select_smem_bytes(heads, m, L, 0) + 2048;
  const std::size_t budget = std::min(select_plane_bytes, smem_per_block > fixed ? smem_per_block - fixed : 0);
  const std::size_t cap = std::max<std::size_t>(32, budget * 8 / (static_cast<std::size_t>(heads) * m) / 32 * 32);
  const std::size_t unit = std::min<std::size_t>(cap, sort_chunk);
  const std::size_t units = std::max<std::size_t>(1, (span + unit - 1) / unit);
  const std::size_t cmax = std::max<std::size_t>(1, cap / unit), width = clustered ? G : 1;
  const auto blocks = [&](std::size_t c) { return (units + c - 1) / c * width * pairs; };
  const auto wave = [&](std::size_t c) {
    const std::size_t by_smem = smem_per_sm / (select_smem_bytes(heads, m, L, c * unit) + 1024);
    return static_cast<std::size_t>(sms) * std::clamp<std::size_t>(by_smem, 1, select_blocks_per_sm);
  };
  std::size_t c = 1;
  while (c < cmax && c < units && blocks(c) > wave(c)) ++c;
  select_plan p;
  p.chunk = c * unit;
  p.parts = (units + c - 1) / c;
  p.clustered = clustered;
  p.blocks = blocks(c);
  p.wave = wave(c);
  return p;
}

/// plan_chunks for the unclustered kernel, or for clusters where allowed
/// (sm_90), the unclustered grid leaves SMs without a block and the clustered
/// one fits in a wave.
inline select_plan plan_select(std::size_t span, std::size_t pairs, int G, int m, int L, int sms,
                               std::size_t smem_per_sm, std::size_t smem_per_block, bool clusters_ok) {
  const select_plan one = plan_chunks(span, pairs, G, m, L, sms, smem_per_sm, smem_per_block, false);
  if (clusters_ok && G > 1 && one.blocks < static_cast<std::size_t>(sms)) {
    const select_plan cl = plan_chunks(span, pairs, G, m, L, sms, smem_per_sm, smem_per_block, true);
    if (cl.blocks <= cl.wave) return cl;
  }
  return one;
}

/// Grid (G x chunks or chunks, KV heads, requests); a.chunk tokens per block
/// (a multiple of 32). Counts are kept as m bit planes per query head: plane
/// j holds "at least j + 1 collisions", and an arrival that finds its bit
/// already set in plane j moves on to plane j + 1 (atomicOr returns the old
/// word, so concurrent arrivals serialise per bit). Plane m - 1 is then
/// exactly the m-of-L set, m bits per token per head instead of a counter.
///
/// The block reads only the ids of its own sort chunks in each of its heads'
/// L buckets (index_view::chunk_starts; ids ascend within a bucket, so they
/// are one run per bucket). The runs are concatenated by a block scan of
/// their lengths and split evenly over the warps, 32 consecutive items per
/// warp step (a coalesced load); a lane finds its item's bucket by walking
/// the prefix sums forward (a binary search once at the start), so that no
/// lane idles on a short run whatever the bucket sizes. The unsorted tail in
/// the chunk is counted by a thread per token over every table, its counts in
/// registers (tail tokens get no other counts, so only plane m - 1 is set).
/// The union of the group's sets is then compacted, with each token's head
/// mask, into the KV head's list: one global atomic per block, the tokens of
/// a block's words in ascending order.
///
/// Clustered (sm_90): a thread block cluster of G blocks per chunk, block g
/// counting query head g alone; after a cluster barrier each block compacts a
/// G-th of the chunk's words, reading the other heads' planes through
/// distributed shared memory. Otherwise one block counts all G heads of its
/// chunk.
template <class TQ, class T, bool Clustered>
__global__ void __launch_bounds__(select_threads, select_blocks_per_sm)
    select_kernel(const __grid_constant__ step_args<TQ, T> a) {
  extern __shared__ uint4 select_smem[];  // see select_smem_bytes
  constexpr int NT = select_threads, NW = NT / 32;
  __shared__ std::uint32_t warp_sums[NW][2];
  __shared__ std::uint32_t scan_sums[NW];
  __shared__ std::uint32_t list_base;
  const int G = a.group, m = a.m, L = a.L, B = a.B, kvh = blockIdx.y, sq = blockIdx.z;
  const int rank = Clustered ? static_cast<int>(blockIdx.x) % G : 0;  // the block's head (clustered)
  const int part = Clustered ? static_cast<int>(blockIdx.x) / G : static_cast<int>(blockIdx.x);
  const int h0 = Clustered ? rank : 0, heads = Clustered ? 1 : G;
  const seq_desc<TQ, T>& s = a.seq[sq];
  const index_view& ix = s.idx;
  const std::uint32_t t0 = ix.begin + part * a.chunk;
  if (t0 >= ix.end) return;  // the whole block (and cluster): this request is shorter
  const std::uint32_t t1 = min(ix.end, t0 + a.chunk), span = t1 - t0, WS = a.chunk / 32, W = (span + 31) / 32;
  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5, nb = heads * L;
  const std::size_t hstride = static_cast<std::size_t>(m) * WS;  // words per head
  std::uint64_t* slice = reinterpret_cast<std::uint64_t*>(select_smem);  // [nb] ids index of item 0 (see below)
  std::uint32_t* planes = reinterpret_cast<std::uint32_t*>(slice + nb);  // [heads][m][WS]
  std::uint32_t* pre = planes + heads * hstride;                         // [nb + 1] items before bucket e
  std::uint16_t* qc = reinterpret_cast<std::uint16_t*>(pre + nb + 1);   // [nb] query code of bucket e
  std::uint8_t* hd = reinterpret_cast<std::uint8_t*>(qc + nb);          // [nb] head of bucket e
  for (std::uint32_t w = tid; w < heads * hstride; w += NT) planes[w] = 0;

  // Sort chunks [c0, c1) overlap [t0, t1) (all of them, and only them, when
  // the chunk is whole sort chunks); their ids of bucket b are one run.
  const std::uint32_t S = ix.sort_chunks, sc = static_cast<std::uint32_t>(sort_chunk);
  const std::uint32_t c0 = (t0 - ix.begin) / sc, c1 = min(S, (t1 - ix.begin + sc - 1) / sc);
  const std::uint32_t* codes = a.qcodes + (static_cast<std::size_t>(sq) * a.hq + kvh * G + h0) * L;  // [heads][L]
  for (int e = tid; e < nb; e += NT) {
    const int h = e / L, l = e - h * L;
    const std::uint32_t code = codes[e];
    const std::size_t tab = static_cast<std::size_t>(kvh) * L + l;
    std::uint32_t lo = 0, hi = 0;
    if (c0 < c1) {
      const std::uint32_t* st = ix.chunk_starts + tab * S * B + code;
      lo = st[static_cast<std::size_t>(c0) * B];
      hi = c1 < S ? st[static_cast<std::size_t>(c1) * B] : ix.offsets[tab * (B + 1) + code + 1];
    }
    slice[e] = tab * ix.cap + lo;
    pre[e] = hi - lo;
    qc[e] = static_cast<std::uint16_t>(code);
    hd[e] = static_cast<std::uint8_t>(h);
  }
  if (tid == 0) pre[nb] = 0;
  __syncthreads();
  block_exclusive_scan<NT>(pre, nb + 1, scan_sums);
  __syncthreads();
  // Item i of the concatenation (pre[e] <= i < pre[e + 1]) is ids[slice[e] + i]
  // (mod 2^64: slice[e] may wrap below zero).
  for (int e = tid; e < nb; e += NT) slice[e] -= pre[e];
  __syncthreads();
  const std::uint32_t total = pre[nb];

  // One collision of a plane's head with token `id`, branch-free so that a
  // warp never splits: an id outside the chunk ORs a zero into a word of
  // its own; the planes are climbed while any lane still carries its bit.
  const std::uint32_t m_planes = static_cast<std::uint32_t>(m);
  const std::uint32_t spare = WS >= 32 ? static_cast<std::uint32_t>(lane) : 0u;  // a bank of its own when it can
  const auto add = [&](std::uint32_t* head_planes, std::uint32_t id) {
    const std::uint32_t r = id - t0;  // wraps for ids before the chunk
    const bool in = r < span;
    std::uint32_t bit = in ? 1u << (r & 31) : 0u;
    std::uint32_t* p = head_planes + (in ? r >> 5 : spare);
    for (std::uint32_t j = 0; j < m_planes; ++j, p += WS) {
      bit &= atomicOr(p, bit);
      if (!__any_sync(0xffffffffu, bit)) break;
    }
  };
  {
    // Warp w takes items [i_begin, i_end), 32 consecutive ones per step and U
    // steps' loads in flight; trip counts are warp-uniform.
    constexpr int U = 4;
    const std::uint32_t per_warp = (total + NW * 32 - 1) / (NW * 32) * 32;
    const std::uint32_t i_begin = min(total, warp * per_warp), i_end = min(total, i_begin + per_warp);
    int e = 0;  // the bucket of item i_begin + lane: pre[e] <= i < pre[e + 1]
    {
      const std::uint32_t i = i_begin + lane;
      int lo = 0, hi = nb;
      while (hi - lo > 1) {
        const int mid = (lo + hi) >> 1;
        if (pre[mid] <= i) lo = mid;
        else hi = mid;
      }
      e = lo;
    }
    std::uint32_t next = pre[e + 1];
    for (std::uint32_t i0 = i_begin; i0 < i_end; i0 += U * 32) {
      std::uint32_t id[U];
      std::uint32_t* hp[U];
#pragma unroll
      for (int u = 0; u < U; ++u) {
        const std::uint32_t i = i0 + u * 32 + lane;
        const bool ok = i < i_end;
        if (ok)
          while (next <= i) next = pre[++e + 1];  // stops at e + 1 = nb at the latest (pre[nb] = total > i)
        hp[u] = planes + hd[e] * hstride;
        id[u] = ok ? ix.ids[slice[e] + i] : t0 - 1u;  // t0 - 1 is outside every chunk
      }
#pragma unroll
      for (int u = 0; u < U; ++u) add(hp[u], id[u]);
    }
  }
  if (ix.csr_end < t1) {  // the unsorted tail: a thread per token, every table, counts in registers
    const std::uint32_t a0 = max(ix.csr_end, t0);
    const std::uint16_t* tail_codes = ix.codes + static_cast<std::size_t>(kvh) * L * ix.cap;
    for (std::uint32_t t = a0 + tid; t < t1; t += NT) {
      std::uint32_t cnt[8] = {};
      const std::uint16_t* tc = tail_codes + (t - ix.begin);
#pragma unroll 8
      for (int l = 0; l < L; ++l) {
        const std::uint32_t c = tc[static_cast<std::size_t>(l) * ix.cap];
#pragma unroll
        for (int h = 0; h < 8; ++h)
          if (h < heads) cnt[h] += c == qc[h * L + l] ? 1u : 0u;
      }
      const std::uint32_t r = t - t0;
#pragma unroll
      for (int h = 0; h < 8; ++h)
        if (h < heads && cnt[h] >= m_planes)
          atomicOr(planes + h * hstride + (m - 1) * WS + (r >> 5), 1u << (r & 31));
    }
  }

  // The m-of-L plane of every head of the group, local or in the cluster's blocks.
  const std::uint32_t* top[8];
  std::uint32_t wb = 0, we = W;  // the words this block compacts
  if constexpr (Clustered) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
    cluster_sync();  // every head's planes are complete
    for (int g = 0; g < G; ++g) top[g] = cluster_map(planes + (m - 1) * WS, static_cast<unsigned>(g));
    wb = static_cast<std::uint32_t>(rank) * W / G;
    we = static_cast<std::uint32_t>(rank + 1) * W / G;
#else
    __trap();  // launched clustered only on sm_90 and newer
#endif
  } else {
    __syncthreads();
    for (int g = 0; g < G; ++g) top[g] = planes + g * hstride + (m - 1) * WS;
  }

  // Compaction: thread tid owns the consecutive words [w0, w1) of [wb, we).
  const std::uint32_t per = (we - wb + NT - 1) / NT, w0 = min(we, wb + tid * per), w1 = min(we, w0 + per);
  std::uint32_t mine = 0, pairs = 0;
  for (std::uint32_t w = w0; w < w1; ++w) {
    std::uint32_t u = 0;
    for (int h = 0; h < G; ++h) {
      const std::uint32_t x = top[h][w];
      u |= x;
      pairs += __popc(x);
    }
    mine += __popc(u);
  }
  std::uint32_t incl = mine;  // block-wide exclusive scan of the per-thread counts
#pragma unroll
  for (int o = 1; o < 32; o <<= 1) {
    const std::uint32_t x = __shfl_up_sync(0xffffffffu, incl, o);
    if (lane >= o) incl += x;
  }
  for (int o = 16; o; o >>= 1) pairs += __shfl_xor_sync(0xffffffffu, pairs, o);
  if (lane == 31) {
    warp_sums[warp][0] = incl;
    warp_sums[warp][1] = pairs;
  }
  __syncthreads();
  const std::size_t slot = static_cast<std::size_t>(sq) * a.hk + kvh;
  if (warp == 0) {
    const std::uint32_t v = lane < NW ? warp_sums[lane][0] : 0u;
    std::uint32_t pv = lane < NW ? warp_sums[lane][1] : 0u, x = v;
#pragma unroll
    for (int o = 1; o < 32; o <<= 1) {
      const std::uint32_t y = __shfl_up_sync(0xffffffffu, x, o);
      if (lane >= o) x += y;
    }
    for (int o = 16; o; o >>= 1) pv += __shfl_xor_sync(0xffffffffu, pv, o);
    if (lane < NW) warp_sums[lane][0] = x - v;  // exclusive prefix of the warps
    if (lane == 31) {
      list_base = x ? atomicAdd(a.list_count + slot, x) : 0u;
      if (x) {
        atomicAdd(a.stats + 2 * sq, static_cast<unsigned long long>(x));
        atomicAdd(a.stats + 2 * sq + 1, static_cast<unsigned long long>(pv));
      }
    }
  }
  __syncthreads();
  if (mine) {
    std::uint32_t* list = a.lists + slot * a.nmax;
    std::uint8_t* lmask = a.list_masks + slot * a.nmax;
    std::uint32_t at = list_base + warp_sums[warp][0] + (incl - mine);
    for (std::uint32_t w = w0; w < w1; ++w) {
      std::uint32_t u = 0;
      for (int h = 0; h < G; ++h) u |= top[h][w];
      while (u) {
        const int b = __ffs(u) - 1;
        u &= u - 1;
        std::uint32_t mk = 0;
        for (int h = 0; h < G; ++h) mk |= ((top[h][w] >> b) & 1u) << h;
        list[at] = t0 + 32 * w + b;
        lmask[at] = static_cast<std::uint8_t>(mk);
        ++at;
      }
    }
  }
  if constexpr (Clustered) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
    cluster_sync();  // the other blocks may still read this block's planes
#endif
  }
}


/// Four consecutive elements widened to float (8 bytes of bf16/fp16, 16 of float).
template <class T>
__device__ __forceinline__ void widen4(const T* p, float* out) {
  if constexpr (std::is_same_v<T, float>) {
    const float4 x = *reinterpret_cast<const float4*>(p);
    out[0] = x.x;
    out[1] = x.y;
    out[2] = x.z;
    out[3] = x.w;
  } else {
    const uint2 x = *reinterpret_cast<const uint2*>(p);
    const unsigned w[2] = {x.x, x.y};
    widen_halves<T>(w, out);
  }
}

/// max that lets a NaN through (fmaxf would drop it), so a NaN key reaches its heads' outputs.
__device__ __forceinline__ float nan_max(float x, float y) { return (x > y || x != x) ? x : y; }

/// Row masks in the pipeline: bits 0..G-1 the heads that attend the row,
/// bit 31 set for listed (sampled) rows, which carry the -ln u correction.
inline constexpr std::uint32_t listed_bit = 0x80000000u;

/// The rows one attention block reads: its split's share [p0, p1) of the
/// request's positions, the exact tokens [0, dense_a) U [dense_b, n) first,
/// then the KV head's union list (LSH).
struct attend_rows {
  std::uint32_t da, db, nd, p0, p1;
  const std::uint32_t* list;
  const std::uint8_t* lmask;

  template <class TQ, class T>
  __device__ attend_rows(const step_args<TQ, T>& a, int sq, int kvh, int split) {
    const seq_desc<TQ, T>& s = a.seq[sq];
    da = s.dense_a;
    db = s.dense_b;
    nd = da + (s.n - db);
    const std::size_t slot = static_cast<std::size_t>(sq) * a.hk + kvh;
    list = a.lists + slot * a.nmax;
    lmask = a.list_masks + slot * a.nmax;
    const std::uint64_t total = static_cast<std::uint64_t>(nd) + (a.lsh ? a.list_count[slot] : 0u);
    p0 = static_cast<std::uint32_t>(total * split / a.splits);
    p1 = static_cast<std::uint32_t>(total * (split + 1) / a.splits);
  }

  /// Token and row mask of position p (p0 <= p < p1): every head for an exact
  /// token; the heads that sampled it, plus listed_bit, for a listed one.
  __device__ void at(std::uint32_t p, std::uint32_t all_heads, std::uint32_t& tok, std::uint32_t& mask) const {
    if (p < da) {
      tok = p;
      mask = all_heads;
    } else if (p < nd) {
      tok = db + (p - da);
      mask = all_heads;
    } else {
      tok = list[p - nd];
      mask = lmask[p - nd] | listed_bit;
    }
  }
  /// |key - mean| of an indexed token (index.cuh's norms).
  __device__ static float norm(const index_view& idx, int kvh, std::uint32_t tok) {
    return idx.knorm[static_cast<std::size_t>(kvh) * idx.cap + (tok - idx.begin)];
  }
};

/// Tiling of attend_kernel: tiles of 32 rows (one row per lane in the score
/// phase), K and V tiles double buffered through a 2..4-stage cp.async pipeline.
template <int D, int G, class T>
struct attend_shape {
  static constexpr int threads = 128;
  static constexpr int warps = threads / 32;
  static constexpr int rows = 32;
  static constexpr int vec = 16 / static_cast<int>(sizeof(T));  // elements per 16-byte chunk
  static constexpr int chunks = D / vec;                          // 16-byte chunks per row
  static constexpr int tile_bytes = rows * D * static_cast<int>(sizeof(T));  // K or V of one tile
  static constexpr int stages = 2 * tile_bytes <= 16384 ? 4 : 2;
  static constexpr int heads_per_warp = (G + warps - 1) / warps;
  static constexpr int dim_groups = D / 4;                 // 4 output elements per thread
  static constexpr int row_sets = threads / dim_groups;    // rows of a tile split over this many threads
  static_assert(threads % dim_groups == 0 && rows % row_sets == 0, "attend_kernel: head_dim 32..128");
  static constexpr std::size_t smem_bytes =
      static_cast<std::size_t>(stages) * 2 * tile_bytes + (G * D + D + G * rows + G + 2 * G) * 4 + 2 * stages * rows * 4;
  static_assert(row_sets * G * D * 4 <= stages * 2 * tile_bytes, "attend_kernel: the final reduction reuses the tiles' space");
  static_assert(chunks >= 8 && chunks % 8 == 0, "attend_kernel: a row must span a multiple of 128 bytes");
  static_assert(G <= 8, "attend_kernel: GQA group of at most 8");
};


template <int D, int G, class TQ, class T>
__global__ void __launch_bounds__(128) attend_kernel(const __grid_constant__ step_args<TQ, T> a) {
  using S = attend_shape<D, G, T>;
  constexpr int R = S::rows, NT = S::threads, VEC = S::vec, CH = S::chunks, ST = S::stages;
  constexpr int HPW = S::heads_per_warp, DG = S::dim_groups, RS = S::row_sets;
  extern __shared__ __align__(16) unsigned char smem[];
  T* kv = reinterpret_cast<T*>(smem);  // [ST][K, V][R][D], 16-byte chunks swizzled by row
  float* qs = reinterpret_cast<float*>(smem + static_cast<std::size_t>(ST) * 2 * S::tile_bytes);
  float* ms = qs + G * D;   // the index mean (LSH)
  float* ps = ms + D;       // [R][G] softmax weights of the current tile
  float* scl = ps + G * R;  // [G] rescale of the running output for the current tile
  float* fin = scl + G;     // [2][G] final max and sum
  std::uint32_t* masks = reinterpret_cast<std::uint32_t*>(fin + 2 * G);  // [ST][R]
  float* nrs = reinterpret_cast<float*>(masks + ST * R);                 // [ST][R] |key - mean| of listed rows
  float* osum = reinterpret_cast<float*>(smem);  // [RS][G][D] row-set partial outputs, over the tiles once done

  const int split = blockIdx.x, kvh = blockIdx.y, sq = blockIdx.z;
  const seq_desc<TQ, T>& s = a.seq[sq];
  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;

  for (int e = tid; e < G * D; e += NT) qs[e] = to_float(s.q[(kvh * G + e / D) * s.q_stride + e % D]);
  for (int e = tid; e < D; e += NT) ms[e] = a.lsh ? s.idx.mean[static_cast<std::size_t>(kvh) * D + e] : 0.0f;

  const T* kb = s.k + kvh * s.k_head;
  const T* vb = s.v + kvh * s.v_head;
  const attend_rows rows(a, sq, kvh, split);
  const std::uint32_t p0 = rows.p0, p1 = rows.p1;
  const int ntiles = static_cast<int>((p1 - p0 + R - 1) / R);

  // Issue the copies of tile t into stage t % ST (an empty group past the end,
  // so that the wait count below stays uniform).
  const auto issue = [&](int t) {
    if (t < ntiles) {
      const int st = t % ST;
      T* kt = kv + static_cast<std::size_t>(st) * 2 * R * D;
      T* vt = kt + R * D;
      for (int c = tid; c < R * CH; c += NT) {
        const int r = c / CH, col = c % CH;
        const std::uint32_t p = p0 + static_cast<std::uint32_t>(t * R + r);
        const bool valid = p < p1;
        std::uint32_t tok = 0, mask = 0;
        if (valid) rows.at(p, (1u << G) - 1u, tok, mask);
        const int phys = (r * CH + (col ^ (r & 7))) * VEC;
        cp_async16(kt + phys, kb + static_cast<std::size_t>(tok) * s.k_tok + col * VEC, valid);
        cp_async16(vt + phys, vb + static_cast<std::size_t>(tok) * s.v_tok + col * VEC, valid);
        if (col == 0) {
          masks[st * R + r] = mask;
          nrs[st * R + r] = mask & listed_bit ? attend_rows::norm(s.idx, kvh, tok) : 0.0f;
        }
      }
    }
    cp_async_commit();
  };
#pragma unroll
  for (int t = 0; t < ST - 1; ++t) issue(t);
  __syncthreads();  // q and mean in shared memory

  // Score phase: warp w handles heads w, w + 4, ..., lane = row of the tile.
  float run_m[HPW], run_l[HPW], qn[HPW], qm[HPW];
#pragma unroll
  for (int k = 0; k < HPW; ++k) {
    run_m[k] = -INFINITY;
    run_l[k] = 0.0f;
    qn[k] = qm[k] = 0.0f;
    const int h = warp + S::warps * k;
    if (a.lsh && h < G) {
      float x = 0.0f, y = 0.0f;
      for (int j = lane; j < D; j += 32) {
        x = fmaf(qs[h * D + j], ms[j], x);
        y = fmaf(qs[h * D + j], qs[h * D + j], y);
      }
#pragma unroll
      for (int o = 16; o; o >>= 1) {
        x += __shfl_xor_sync(0xffffffffu, x, o);
        y += __shfl_xor_sync(0xffffffffu, y, o);
      }
      qm[k] = x;
      qn[k] = sqrtf(y);
    }
  }
  // Output phase: a thread owns 4 consecutive output elements of every head
  // (each V element widened once) over the rows rs, rs + RS, ... of a tile.
  const int dg = tid % DG, rs = tid / DG, j4 = dg * 4, vc = j4 / VEC, vw = j4 % VEC;
  constexpr std::uint32_t all_heads = (1u << G) - 1u;
  float o[G][4];
#pragma unroll
  for (int h = 0; h < G; ++h)
#pragma unroll
    for (int x = 0; x < 4; ++x) o[h][x] = 0.0f;

  for (int t = 0; t < ntiles; ++t) {
    issue(t + ST - 1);
    cp_async_wait<ST - 1>();
    __syncthreads();  // tile t has landed for every thread's copies
    const int st = t % ST;
    const T* kt = kv + static_cast<std::size_t>(st) * 2 * R * D;
    const T* vt = kt + R * D;
#pragma unroll
    for (int k = 0; k < HPW; ++k) {
      const int h = warp + S::warps * k;
      if (h >= G) break;  // warp-uniform
      const int r = lane;
      const std::uint32_t mk = masks[st * R + r];
      const bool is_listed = (mk & listed_bit) != 0u, in = ((mk >> h) & 1u) != 0u;
      float dot = 0.0f;
#pragma unroll 4
      for (int c = 0; c < CH; ++c) {
        float kf[VEC];
        widen16<T>(*reinterpret_cast<const uint4*>(kt + (r * CH + (c ^ (r & 7))) * VEC), kf);
        const float* qq = qs + h * D + c * VEC;
#pragma unroll
        for (int i = 0; i < VEC; ++i) dot = fmaf(qq[i], kf[i], dot);
      }
      float sc = -INFINITY;
      if (in) {
        sc = dot * a.scale;
        if (is_listed) {
          const float den = qn[k] * nrs[st * R + r];
          sc -= inclusion_lookup(den > 0.0f ? (dot - qm[k]) / den : 0.0f, a.inc_table, a.K, a.L, a.m);
        }
      }
      float tmax = sc;
#pragma unroll
      for (int off = 16; off; off >>= 1) tmax = nan_max(tmax, __shfl_xor_sync(0xffffffffu, tmax, off));
      const float mnew = nan_max(run_m[k], tmax);
      const float p = mnew == -INFINITY ? 0.0f : __expf(sc - mnew);
      const float f = mnew == -INFINITY ? 1.0f : __expf(run_m[k] - mnew);
      float psum = p;
#pragma unroll
      for (int off = 16; off; off >>= 1) psum += __shfl_xor_sync(0xffffffffu, psum, off);
      run_l[k] = fmaf(run_l[k], f, psum);
      run_m[k] = mnew;
      ps[r * G + h] = p;
      if (lane == 0) scl[h] = f;
    }
    __syncthreads();  // weights of tile t ready
#pragma unroll
    for (int h = 0; h < G; ++h) {
      const float f = scl[h];
#pragma unroll
      for (int x = 0; x < 4; ++x) o[h][x] *= f;
    }
#pragma unroll 4
    for (int r = rs; r < R; r += RS) {
      float v[4], p[G];
      widen4<T>(vt + (r * CH + (vc ^ (r & 7))) * VEC + vw, v);
#pragma unroll
      for (int h = 0; h < G; ++h) p[h] = ps[r * G + h];
      if ((masks[st * R + r] & all_heads) == all_heads) {  // a row every head attends (uniform per row)
#pragma unroll
        for (int h = 0; h < G; ++h)
#pragma unroll
          for (int x = 0; x < 4; ++x) o[h][x] = fmaf(p[h], v[x], o[h][x]);
      } else {
        // Rows a head does not attend have p = 0 and must add nothing, so that
        // a NaN value sampled for one head stays out of the others.
#pragma unroll
        for (int h = 0; h < G; ++h)
#pragma unroll
          for (int x = 0; x < 4; ++x) o[h][x] = p[h] != 0.0f ? fmaf(p[h], v[x], o[h][x]) : o[h][x];
      }
    }
    __syncthreads();  // stage t % ST is free for tile t + ST
  }
  cp_async_wait<0>();
  __syncthreads();  // every tile consumed: osum may overwrite them

#pragma unroll
  for (int k = 0; k < HPW; ++k) {
    const int h = warp + S::warps * k;
    if (h < G && lane == 0) {
      fin[h] = run_m[k];
      fin[G + h] = run_l[k];
    }
  }
#pragma unroll
  for (int h = 0; h < G; ++h)
#pragma unroll
    for (int x = 0; x < 4; ++x) osum[(rs * G + h) * D + j4 + x] = o[h][x];
  __syncthreads();
  for (int e = tid; e < G * D; e += NT) {
    const int h = e / D, j = e % D;
    float acc = 0.0f;
#pragma unroll
    for (int k = 0; k < RS; ++k) acc += osum[(k * G + h) * D + j];
    float* out = a.partials + ((static_cast<std::size_t>(sq) * a.hq + kvh * G + h) * a.splits + split) * (D + 1);
    const float M = fin[h], l = fin[G + h];
    const bool empty = M == -INFINITY;
    out[j] = empty ? 0.0f : acc / l;
    if (j == 0) out[D] = empty ? -INFINITY : M + __logf(l);
  }
}

/// Merges the split partials of one head, then zeroes them (each partial is
/// read by this block alone), so that no memset of the partials is needed.
/// The splits' lse values are read once, in parallel, into shared memory.
template <int D, class TQ, class T>
__global__ void __launch_bounds__(D) merge_kernel(const __grid_constant__ step_args<TQ, T> a) {
  static_assert(D >= max_splits, "merge_kernel: a thread per split's lse");
  __shared__ float ls[max_splits];
  const int h = blockIdx.x, sq = blockIdx.y, j = threadIdx.x, ns = a.splits;
  const seq_desc<TQ, T>& s = a.seq[sq];
  float* part = a.partials + (static_cast<std::size_t>(sq) * a.hq + h) * ns * (D + 1);
  if (j < ns) {
    ls[j] = part[j * (D + 1) + D];
    part[j * (D + 1) + D] = 0.0f;
  }
  __syncthreads();
  float M = -INFINITY;
  for (int k = 0; k < ns; ++k) {
    const float l = ls[k];
    if (l > M || l != l) M = l;
  }
  float o = 0.0f, lse = -INFINITY;
  if (M != -INFINITY) {
    float ws = 0.0f, acc = 0.0f;
#pragma unroll 8
    for (int k = 0; k < ns; ++k) {
      const float l = ls[k];
      const float w = l == -INFINITY ? 0.0f : expf(l - M);
      ws += w;
      acc = fmaf(w, part[k * (D + 1) + j], acc);
    }
    o = acc / ws;
    lse = M + logf(ws);
  }
  s.out[h * s.out_stride + j] = o;
  if (j == 0 && s.lse) s.lse[h] = lse * a.lse_factor;
  for (int k = 0; k < ns; ++k) part[k * (D + 1) + j] = 0.0f;
}

}  // namespace lshattn::cuda_detail
