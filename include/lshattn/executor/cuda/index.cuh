#pragma once
// lshattn::cuda_lsh_index: one layer's LSH tables for every KV head, in
// device memory, with the same contents as lsh_index (index/lsh_index.hpp)
// built from the same keys: the same mean (float64 in the same chunked order,
// so bit for bit), the same codes (hash.cuh), hence the same buckets, each
// in the same (ascending) order.
//
// Layout per KV head h and table l (B = 2^K buckets, cap = capacity, a
// multiple of 8 tokens):
//   offsets [h][l][B + 1]   bucket c holds ids[offsets[c], offsets[c+1])
//   ids     [h][l][cap]     absolute token positions, ascending within each
//                           bucket (the sort is stable), so a bucket's ids
//                           inside a token range form one contiguous run
//   codes   [h][l][cap]     16-bit code of token begin() + i, kept so that the
//                           tail can be scanned and merged without re-hashing
//   norms   [h][cap]        |key - mean| of token begin() + i (the centred key
//                           as hashed, float elements, summed in float64): the
//                           attention kernels need it for every sampled row's
//                           ln u, and computing it there from the gathered row
//                           cost about half of a sampled tile's instructions
//   starts  [h][l][S][B]    S = ceil((csr_end - begin) / sort_chunk) sort
//                           chunks: starts[h][l][c][b] is the first slot in
//                           ids of bucket b's tokens from sort chunk c (tokens
//                           [begin + c sort_chunk, begin + (c + 1) sort_chunk)),
//                           so bucket b's ids inside sort chunks [c0, c1) are
//                           ids[starts[c0][b], c1 < S ? starts[c1][b] :
//                           offsets[b + 1]). The table build's scratch, kept
//                           (and carried over by reserve()) so that the decode
//                           step's selection reads only its own token range.
// Tokens [csr_end, end) are the tail: appended after the last sort, scanned
// linearly by retrieval, merged by a counting sort once more than max_tail of
// them accumulate. Memory: L * 6 + 4 bytes per token per KV head, plus the
// sort's scratch of 4 B bytes per table per sort_chunk (8192) tokens (L * 0.5
// bytes per token per KV head at K = 10, L * 2 at K = 12).
//
// build/append/sync/merge_tail are the plan-side steps: they run on the given
// stream and may allocate when the token count exceeds the capacity (reserve
// enough to avoid it); the decode step never allocates.

#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <vector>

#include "lshattn/core/params.hpp"
#include "lshattn/core/view.hpp"
#include "lshattn/executor/cuda/common.cuh"
#include "lshattn/executor/cuda/hash.cuh"
#include "lshattn/executor/cuda/inclusion_table.cuh"
#include "lshattn/index/common.hpp"

namespace lshattn {

namespace cuda_detail {

inline constexpr int max_device_bits = 12;  // 16-bit codes with a spare value; the table build's shared memory (128 KB at K = 12)
inline constexpr int mean_chunk = 256;      // must match detail::chunked_key_mean (index/common.hpp)

template <class T>
__global__ void mean_chunks_kernel(const T* keys, std::size_t head_stride, std::size_t token_stride, int dim,
                                   std::size_t begin, std::size_t end, double* out, std::size_t chunks) {
  const int j = threadIdx.x;
  const std::size_t c = blockIdx.x, h = blockIdx.y;
  if (j >= dim) return;
  const std::size_t t0 = begin + c * mean_chunk, t1 = min(end, t0 + mean_chunk);
  double s = 0.0;  // summed in token order, as the CPU does
  for (std::size_t t = t0; t < t1; ++t) s += static_cast<double>(to_float(keys[h * head_stride + t * token_stride + j]));
  out[(h * chunks + c) * dim + j] = s;
}

template <int Unused = 0>
__global__ void mean_finish_kernel(const double* chunk_sums, std::size_t chunks, int dim, std::size_t n,
                                          float* mean) {
  const int j = threadIdx.x;
  const std::size_t h = blockIdx.x;
  if (j >= dim) return;
  double s = 0.0;
  for (std::size_t c = 0; c < chunks; ++c) s += chunk_sums[(h * chunks + c) * dim + j];
  mean[h * dim + j] = static_cast<float>(s / static_cast<double>(n > 0 ? n : 1));
}

// Table build: a stable counting sort of each (head, table)'s codes, split
// into chunks of sort_chunk tokens so that the grid has (tables x chunks)
// blocks instead of one block per table walking every token twice.
//   1. chunk_count_kernel: each chunk's bucket histogram -> counts[tab][chunk][B]
//   2. chunk_scan_kernel: per table, bucket offsets, and counts turned in place
//      into each chunk's first slot in each bucket (bucket-major, chunk order)
//   3. chunk_scatter_kernel: each chunk ranks its tokens stably in shared
//      memory and writes them out bucket run by bucket run
// Tokens of a bucket land in chunk order and, within a chunk, in token order:
// ids ascend within every bucket. Hot buckets (the workload's codes are
// skewed) cost no atomic contention: a warp combines equal codes with
// __match_any_sync and one lane updates the counter, a warp-private one in
// step 3.
inline constexpr int sort_chunk = 8192;    // tokens per block: in-chunk indices and ranks fit 16 bits
inline constexpr int sort_threads = 256;   // 8 warps, each ranking its own 1024 consecutive tokens
inline constexpr std::uint16_t no_code = 0xffff;  // above every code (K <= 12): a lane without a token

/// Dynamic shared memory of chunk_scatter_kernel for B buckets.
constexpr std::size_t scatter_shared_bytes(int B) {
  return 3 * sort_chunk * sizeof(std::uint16_t) + static_cast<std::size_t>(sort_threads / 32) * B * 2 +
         static_cast<std::size_t>(B) * 4;
}

__device__ inline std::uint32_t lanes_below() {
  std::uint32_t m;
  asm("mov.u32 %0, %%lanemask_lt;" : "=r"(m));
  return m;
}

/// Exclusive prefix sum of a[0, count) in shared memory, in place. Each
/// thread owns a run of consecutive entries. Callers synchronise before
/// (a complete) and after (a read by other threads).
template <int Threads>
__device__ inline void block_exclusive_scan(std::uint32_t* a, int count, std::uint32_t* warp_sums) {
  static_assert(Threads % 32 == 0 && Threads <= 1024);
  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  const int per = (count + Threads - 1) / Threads;
  const int b0 = min(count, tid * per), b1 = min(count, b0 + per);
  std::uint32_t local = 0;
  for (int b = b0; b < b1; ++b) local += a[b];
  std::uint32_t incl = local;
#pragma unroll
  for (int o = 1; o < 32; o <<= 1) {
    const std::uint32_t v = __shfl_up_sync(0xffffffffu, incl, o);
    if (lane >= o) incl += v;
  }
  if (lane == 31) warp_sums[warp] = incl;
  __syncthreads();
  if (warp == 0) {
    const std::uint32_t w = lane < Threads / 32 ? warp_sums[lane] : 0;
    std::uint32_t wi = w;
#pragma unroll
    for (int o = 1; o < 32; o <<= 1) {
      const std::uint32_t v = __shfl_up_sync(0xffffffffu, wi, o);
      if (lane >= o) wi += v;
    }
    if (lane < Threads / 32) warp_sums[lane] = wi - w;
  }
  __syncthreads();
  std::uint32_t run = warp_sums[warp] + incl - local;
  for (int b = b0; b < b1; ++b) {
    const std::uint32_t v = a[b];
    a[b] = run;
    run += v;
  }
}

/// Codes [0, len) of one chunk into shared memory: 16-byte loads (the
/// capacity is a multiple of 8 tokens, so every chunk starts 16-byte
/// aligned), all of a thread's issued before the first store when the chunk
/// is whole; a short last chunk's partial group element by element, so that
/// nothing past the indexed tokens is read.
template <int Threads>
__device__ inline void load_chunk_codes(const std::uint16_t* src, std::uint16_t* dst, int len) {
  constexpr int G = sort_chunk / 8 / Threads;
  const uint4* s4 = reinterpret_cast<const uint4*>(src);
  uint4* d4 = reinterpret_cast<uint4*>(dst);
  if (len == sort_chunk) {
    uint4 v[G];
#pragma unroll
    for (int k = 0; k < G; ++k) v[k] = s4[k * Threads + threadIdx.x];
#pragma unroll
    for (int k = 0; k < G; ++k) d4[k * Threads + threadIdx.x] = v[k];
    return;
  }
  const int full = len / 8;
  for (int g = threadIdx.x; g < full; g += Threads) d4[g] = s4[g];
  for (int i = full * 8 + static_cast<int>(threadIdx.x); i < len; i += Threads) dst[i] = src[i];
}

/// Step 1. Block x = tab * chunks + chunk: the histogram of the chunk's
/// codes -> counts[x][B].
template <int Threads>
__global__ void __launch_bounds__(Threads) chunk_count_kernel(const std::uint16_t* codes, std::size_t cap, int B,
                                                              std::size_t n, std::uint32_t chunks,
                                                              std::uint32_t* counts) {
  extern __shared__ std::uint32_t sort_hist[];  // names of extern shared arrays are global: prefixed
  std::uint32_t* hist = sort_hist;               // [B]
  const std::size_t tab = blockIdx.x / chunks, chunk = blockIdx.x % chunks;
  const std::size_t t0 = chunk * sort_chunk;
  const int len = static_cast<int>(min(static_cast<std::size_t>(sort_chunk), n - t0));
  const std::uint16_t* c = codes + tab * cap + t0;
  const int tid = threadIdx.x, lane = tid & 31;
  for (int b = tid; b < B; b += Threads) hist[b] = 0;
  __syncthreads();
  // Each lane takes G groups of 8 consecutive codes, all loads issued first;
  // lanes past the chunk's end hold no_code, so that every lane reaches the
  // matches.
  constexpr int G = sort_chunk / 8 / Threads;
  std::uint32_t w[G][4];
#pragma unroll
  for (int k = 0; k < G; ++k) {
    const int i0 = (k * Threads + tid) * 8;
    if (i0 + 8 <= len) {
      const uint4 v = *reinterpret_cast<const uint4*>(c + i0);
      w[k][0] = v.x, w[k][1] = v.y, w[k][2] = v.z, w[k][3] = v.w;
    } else {
#pragma unroll
      for (int q = 0; q < 4; ++q) {
        const std::uint32_t lo = i0 + 2 * q < len ? c[i0 + 2 * q] : no_code;
        const std::uint32_t hi = i0 + 2 * q + 1 < len ? c[i0 + 2 * q + 1] : no_code;
        w[k][q] = lo | hi << 16;
      }
    }
  }
#pragma unroll
  for (int k = 0; k < G; ++k)
#pragma unroll
    for (int s = 0; s < 8; ++s) {
      const std::uint32_t code = (w[k][s >> 1] >> (16 * (s & 1))) & 0xffffu;
      const std::uint32_t peers = __match_any_sync(0xffffffffu, code);
      if (code != no_code && lane == 31 - __clz(peers)) atomicAdd(&hist[code], static_cast<std::uint32_t>(__popc(peers)));
    }
  __syncthreads();
  std::uint32_t* out = counts + static_cast<std::size_t>(blockIdx.x) * B;
  for (int b = tid; b < B; b += Threads) out[b] = hist[b];
}

/// Step 2. Block = one table: offsets[tab][0, B] (offsets[B] = n) from the
/// chunk histograms, which become in place each chunk's first slot in each
/// bucket: counts[tab][c][b] = offsets[b] + sum of counts[tab][c' < c][b].
template <int Threads>
__global__ void __launch_bounds__(Threads) chunk_scan_kernel(std::uint32_t* counts, int B, std::uint32_t chunks,
                                                             std::size_t n, std::uint32_t* offsets) {
  extern __shared__ std::uint32_t sort_tot[];
  std::uint32_t* tot = sort_tot;  // [B]
  __shared__ std::uint32_t warp_sums[Threads / 32];
  const int tid = threadIdx.x;
  const std::size_t tab = blockIdx.x;
  std::uint32_t* cnt = counts + tab * chunks * static_cast<std::size_t>(B);
  std::uint32_t* off = offsets + tab * static_cast<std::size_t>(B + 1);
  constexpr std::uint32_t U = 8;  // loads in flight per thread
  for (int b = tid; b < B; b += Threads) {
    std::uint32_t s = 0;
    for (std::uint32_t c0 = 0; c0 < chunks; c0 += U) {
      std::uint32_t v[U];
#pragma unroll
      for (std::uint32_t u = 0; u < U; ++u) v[u] = c0 + u < chunks ? cnt[static_cast<std::size_t>(c0 + u) * B + b] : 0u;
#pragma unroll
      for (std::uint32_t u = 0; u < U; ++u) s += v[u];
    }
    tot[b] = s;
  }
  __syncthreads();
  block_exclusive_scan<Threads>(tot, B, warp_sums);
  __syncthreads();
  for (int b = tid; b < B; b += Threads) {
    std::uint32_t run = tot[b];
    off[b] = run;
    for (std::uint32_t c0 = 0; c0 < chunks; c0 += U) {
      std::uint32_t v[U];
#pragma unroll
      for (std::uint32_t u = 0; u < U; ++u) v[u] = c0 + u < chunks ? cnt[static_cast<std::size_t>(c0 + u) * B + b] : 0u;
#pragma unroll
      for (std::uint32_t u = 0; u < U; ++u)
        if (c0 + u < chunks) {
          cnt[static_cast<std::size_t>(c0 + u) * B + b] = run;
          run += v[u];
        }
    }
  }
  if (tid == 0) off[B] = static_cast<std::uint32_t>(n);
}

/// Step 3. Block x = tab * chunks + chunk: ids[tab][starts[x][b] + r] =
/// first + t0 + i for the chunk's r-th token i (in token order) of bucket b.
/// Warp w ranks tokens [w S, (w + 1) S) of the chunk (S = sort_chunk / 8)
/// against a warp-private counter per bucket; an exclusive scan over (bucket,
/// warp) turns the counters into each warp's first local slot per bucket; the
/// chunk is placed in shared memory in bucket order, then written out in that
/// order, so that consecutive threads store consecutive ids of a bucket run.
template <int Threads>
__global__ void __launch_bounds__(Threads) chunk_scatter_kernel(const std::uint16_t* codes, std::size_t cap, int B,
                                                                std::size_t n, std::uint32_t chunks,
                                                                const std::uint32_t* starts, std::uint32_t first,
                                                                std::uint32_t* ids) {
  constexpr int W = Threads / 32, S = sort_chunk / W;
  static_assert(sort_chunk % (8 * Threads) == 0 && S % 32 == 0 && sort_chunk <= 65536);
  extern __shared__ uint4 sort_smem[];
  std::uint16_t* code_sh = reinterpret_cast<std::uint16_t*>(sort_smem);  // [C] the chunk's codes
  std::uint16_t* rank = code_sh + sort_chunk;                       // [C] rank among the warp's tokens of its bucket
  std::uint16_t* order = rank + sort_chunk;                         // [C] token at each bucket-sorted slot
  std::uint16_t* cnt16 = order + sort_chunk;                        // [W][B] counter of warp w, bucket b
  std::uint32_t* delta = reinterpret_cast<std::uint32_t*>(cnt16 + W * B);  // [B]
  __shared__ std::uint32_t warp_sums[W];
  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  const std::size_t tab = blockIdx.x / chunks, chunk = blockIdx.x % chunks;
  const std::size_t t0 = chunk * sort_chunk;
  const int len = static_cast<int>(min(static_cast<std::size_t>(sort_chunk), n - t0));
  load_chunk_codes<Threads>(codes + tab * cap + t0, code_sh, len);
  for (int i = tid; i < W * B / 2; i += Threads) reinterpret_cast<std::uint32_t*>(cnt16)[i] = 0;
  __syncthreads();

  // Ranks within the warp's slice (as CUB's match-based block rank does): all
  // lanes read their bucket's counter, then the lowest lane of each code
  // stores it advanced by the code's lane count. The counters are the warp's
  // own; __syncwarp orders each read before the store and each store before
  // the next round's reads (another lane may write there). Counts stay below
  // S, so 16 bits hold them.
  std::uint16_t* wc = cnt16 + warp * B;
  const std::uint32_t lt = lanes_below();
  const int s0 = warp * S, s1 = min(len, s0 + S);
  std::uint32_t code = s0 + lane < s1 ? code_sh[s0 + lane] : no_code;
  for (int r = s0; r < s1; r += 32) {  // warp-uniform bounds
    const int i = r + lane;
    const std::uint32_t next = i + 32 < s1 ? code_sh[i + 32] : no_code;
    const std::uint32_t peers = __match_any_sync(0xffffffffu, code);
    const std::uint32_t below = __popc(peers & lt);
    const std::uint32_t before = code != no_code ? wc[code] : 0u;
    __syncwarp();
    if (code != no_code) {
      if (below == 0) wc[code] = static_cast<std::uint16_t>(before + __popc(peers));
      rank[i] = static_cast<std::uint16_t>(before + below);
    }
    __syncwarp();
    code = next;
  }
  __syncthreads();

  // Bucket totals -> local bucket starts (exclusive scan) -> each warp's
  // first local slot per bucket, in place of its counter.
  for (int b = tid; b < B; b += Threads) {
    std::uint32_t s = 0;
#pragma unroll
    for (int w = 0; w < W; ++w) s += cnt16[w * B + b];
    delta[b] = s;
  }
  __syncthreads();
  block_exclusive_scan<Threads>(delta, B, warp_sums);
  __syncthreads();
  const std::uint32_t* st = starts + static_cast<std::size_t>(blockIdx.x) * B;
  for (int b = tid; b < B; b += Threads) {
    const std::uint32_t lstart = delta[b];
    std::uint32_t run = lstart;
#pragma unroll
    for (int w = 0; w < W; ++w) {
      const std::uint32_t v = cnt16[w * B + b];
      cnt16[w * B + b] = static_cast<std::uint16_t>(run);
      run += v;
    }
    delta[b] = st[b] - lstart;  // local slot p of bucket b goes to table slot delta[b] + p (mod 2^32)
  }
  __syncthreads();

  for (int i = tid; i < len; i += Threads) {
    const std::uint32_t b = code_sh[i];
    order[cnt16[(i / S) * B + b] + rank[i]] = static_cast<std::uint16_t>(i);
  }
  __syncthreads();

  std::uint32_t* out = ids + tab * cap;
  const std::uint32_t id0 = first + static_cast<std::uint32_t>(t0);
#pragma unroll 4
  for (int p = tid; p < len; p += Threads) {
    const std::uint32_t i = order[p];
    out[delta[code_sh[i]] + static_cast<std::uint32_t>(p)] = id0 + i;
  }
}

/// Lets chunk_scatter_kernel take the shared memory B buckets need (above
/// the default 48 KB from K = 9), raising the limit only (indexes of several
/// K share the kernel). Throws unsupported where the current device has less
/// shared memory per block (K = 12 needs 128 KB: an sm_80 or sm_90 part).
inline void allow_scatter_shared(int B, int K) {
  const auto kernel = chunk_scatter_kernel<sort_threads>;
  cudaFuncAttributes fa{};
  LSHATTN_CUDA_CHECK(cudaFuncGetAttributes(&fa, kernel));
  int dev = 0, optin = 0;
  LSHATTN_CUDA_CHECK(cudaGetDevice(&dev));
  LSHATTN_CUDA_CHECK(cudaDeviceGetAttribute(&optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, dev));
  const std::size_t need = scatter_shared_bytes(B);
  LSHATTN_REQUIRE(need + fa.sharedSizeBytes <= static_cast<std::size_t>(optin), unsupported, "K", "K = ", K,
                  ": the CUDA table build needs ", need + fa.sharedSizeBytes,
                  " bytes of shared memory per block; this device allows ", optin);
  if (static_cast<std::size_t>(fa.maxDynamicSharedSizeBytes) < need)
    LSHATTN_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(need)));
}

/// |fl(key - mean)| of rows [t0, t1) of every head into norms[h * cap + t - begin],
/// a warp per row (the centred elements rounded to float as hash.cuh centres
/// them, their squares summed in float64).
template <class T>
__global__ void __launch_bounds__(256) centred_norm_kernel(const T* keys, std::size_t head_stride,
                                                           std::size_t token_stride, int dim, const float* mean,
                                                           std::size_t t0, std::size_t t1, std::size_t begin,
                                                           std::size_t cap, float* norms) {
  const int lane = threadIdx.x & 31;
  const std::size_t h = blockIdx.y, t = t0 + static_cast<std::size_t>(blockIdx.x) * 8 + (threadIdx.x >> 5);
  if (t >= t1) return;
  const T* row = keys + h * head_stride + t * token_stride;
  const float* mu = mean + h * dim;
  double s = 0.0;
  for (int j = lane; j < dim; j += 32) {
    const double x = to_float(row[j]) - mu[j];
    s += x * x;
  }
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) s += __shfl_xor_sync(0xffffffffu, s, o);
  if (lane == 0) norms[h * cap + (t - begin)] = static_cast<float>(sqrt(s));
}

/// What the decode kernels need of one index: plain device pointers.
struct index_view {
  const float* mean = nullptr;
  const std::uint32_t* offsets = nullptr;
  const std::uint32_t* ids = nullptr;
  const std::uint16_t* codes = nullptr;
  std::uint32_t begin = 0, end = 0, csr_end = 0;
  std::uint32_t cap = 0;
  const float* planes = nullptr;    ///< [K*L][dim] hyperplanes (query hashing)
  const float* knorm = nullptr;     ///< [heads][cap] |key - mean| of token begin + i
  /// [heads][L][sort_chunks][B]: first slot in ids of each bucket's tokens
  /// from each sort chunk of sort_chunk tokens, counted from begin (see the
  /// top of this file); sort_chunks = ceil((csr_end - begin) / sort_chunk).
  const std::uint32_t* chunk_starts = nullptr;
  std::uint32_t sort_chunks = 0;
};

}  // namespace cuda_detail

/// LSH tables of one layer in device memory (see the top of this file).
class cuda_lsh_index {
 public:
  cuda_lsh_index() = default;
  /// An empty index for kv_heads heads of head_dim dim, with room for
  /// `capacity` indexed tokens. K must be at most 12 on the device, and the
  /// device must allow 128 KB of shared memory per block for K = 12 (sm_80,
  /// sm_90; 68 KB at K = 10). The device is the current one, as for kernels.
  cuda_lsh_index(std::size_t dim, std::size_t kv_heads, const lsh_params& p, std::size_t capacity = 0)
      : family_(hash::simhash<>((p.validate(), dim), p.K, p.L, p.seed)), heads_(kv_heads), m_(p.m) {
    LSHATTN_REQUIRE(kv_heads >= 1, invalid_argument, "kv_heads", "kv_heads = ", kv_heads, " must be >= 1");
    LSHATTN_REQUIRE(p.K <= cuda_detail::max_device_bits, unsupported, "K", "K = ", p.K,
                    " exceeds the CUDA index's limit of ", cuda_detail::max_device_bits, " bits per table");
    cuda_detail::allow_scatter_shared(1 << p.K, p.K);
    means_.reset(heads_ * dim);
    offsets_.reset(heads_ * static_cast<std::size_t>(p.L) * ((std::size_t{1} << p.K) + 1));
    reserve(capacity);
  }

  [[nodiscard]] const hash::simhash<>& family() const noexcept { return family_.family(); }
  [[nodiscard]] const cuda_detail::device_simhash& device_family() const noexcept { return family_; }
  [[nodiscard]] std::size_t kv_heads() const noexcept { return heads_; }
  [[nodiscard]] std::size_t dim() const noexcept { return family().dim(); }
  [[nodiscard]] int threshold() const noexcept { return m_; }
  [[nodiscard]] std::size_t begin() const noexcept { return begin_; }
  [[nodiscard]] std::size_t end() const noexcept { return end_; }
  [[nodiscard]] std::size_t size() const noexcept { return end_ - begin_; }
  [[nodiscard]] bool built() const noexcept { return built_; }
  [[nodiscard]] std::size_t tail_size() const noexcept { return end_ - csr_end_; }
  [[nodiscard]] std::size_t capacity() const noexcept { return cap_; }
  /// Merge the tail once it holds more than max_tail tokens (default 256).
  void set_max_tail(std::size_t max_tail) noexcept { max_tail_ = max_tail; }
  /// Device bytes held (tables, codes, means; hyperplanes excluded).
  [[nodiscard]] std::size_t memory_bytes() const noexcept {
    return ids_.size() * 4 + codes_.size() * 2 + norms_.size() * 4 + offsets_.size() * 4 + means_.size() * 4 +
           counts_.size() * 4;
  }

  /// ln u over the cosine for this index's K, L and m (inclusion_table.cuh),
  /// built by build(); null before.
  [[nodiscard]] const float* inclusion_table() const noexcept { return built_ ? inc_table_.data() : nullptr; }

  /// Make room for `tokens` indexed tokens (allocates; keeps the content).
  /// The capacity is rounded up to a multiple of 8 tokens, so that every
  /// table's codes start 16-byte aligned for the sort's vector loads.
  void reserve(std::size_t tokens) {
    if (tokens <= cap_) return;
    tokens = (tokens + 7) / 8 * 8;
    const std::size_t L = static_cast<std::size_t>(family().tables()), per = heads_ * L;
    const std::size_t chunks = (tokens + cuda_detail::sort_chunk - 1) / cuda_detail::sort_chunk;
    cuda_detail::device_buffer<std::uint16_t> codes(per * tokens);
    cuda_detail::device_buffer<std::uint32_t> ids(per * tokens);
    cuda_detail::device_buffer<float> norms(heads_ * tokens);
    cuda_detail::device_buffer<std::uint32_t> counts(per * chunks * family().buckets());
    if (built_ && size() > 0) {
      LSHATTN_CUDA_CHECK(cudaDeviceSynchronize());
      LSHATTN_CUDA_CHECK(cudaMemcpy2D(norms.data(), tokens * 4, norms_.data(), cap_ * 4, size() * 4, heads_,
                                      cudaMemcpyDeviceToDevice));
      LSHATTN_CUDA_CHECK(cudaMemcpy2D(codes.data(), tokens * 2, codes_.data(), cap_ * 2, size() * 2, per,
                                      cudaMemcpyDeviceToDevice));
      LSHATTN_CUDA_CHECK(cudaMemcpy2D(ids.data(), tokens * 4, ids_.data(), cap_ * 4, (csr_end_ - begin_) * 4, per,
                                      cudaMemcpyDeviceToDevice));
    }
    if (built_ && sorted_chunks() > 0)  // the sorted part's chunk starts: [table][sorted_chunks()][B], packed
      LSHATTN_CUDA_CHECK(cudaMemcpy(counts.data(), counts_.data(), per * sorted_chunks() * family().buckets() * 4,
                                    cudaMemcpyDeviceToDevice));
    codes_ = std::move(codes);
    ids_ = std::move(ids);
    norms_ = std::move(norms);
    counts_ = std::move(counts);
    cap_ = tokens;
  }

  /// Index tokens [begin, end) of every head of a device cache ([kv_heads,
  /// tokens, dim]), centred by their mean. Shapes are checked on the host
  /// (device memory is not read there, so non-finite keys are not detected).
  template <element_type T>
  void build(const cache_view<const T>& keys, std::size_t begin, std::size_t end, cudaStream_t stream = nullptr) {
    detail::check_index_keys(keys, heads_, dim());
    LSHATTN_REQUIRE(begin <= end && end <= keys.tokens, invalid_argument, "range", "[begin, end) = [", begin, ", ",
                    end, ") must lie within the cache's ", keys.tokens, " tokens");
    LSHATTN_REQUIRE(end <= 0xffffffffu, invalid_argument, "end", "end = ", end, " exceeds 2^32 - 1");
    reserve(end - begin);
    const std::size_t d = dim(), n = end - begin, chunks = (n + cuda_detail::mean_chunk - 1) / cuda_detail::mean_chunk;
    if (chunk_sums_.size() < std::max<std::size_t>(chunks, 1) * heads_ * d)
      chunk_sums_.reset(std::max<std::size_t>(chunks, 1) * heads_ * d);
    if (chunks) {
      cuda_detail::mean_chunks_kernel<T><<<dim3(static_cast<unsigned>(chunks), static_cast<unsigned>(heads_)),
                                           static_cast<unsigned>(d), 0, stream>>>(
          keys.data, keys.head_stride, keys.token_stride, static_cast<int>(d), begin, end, chunk_sums_.data(), chunks);
      LSHATTN_CUDA_LAUNCHED("mean_chunks_kernel");
    }
    cuda_detail::mean_finish_kernel<><<<static_cast<unsigned>(heads_), static_cast<unsigned>(d), 0, stream>>>(
        chunk_sums_.data(), chunks, static_cast<int>(d), n, means_.data());
    LSHATTN_CUDA_LAUNCHED("mean_finish_kernel");
    if (inc_table_.size() == 0) {
      inc_table_.reset(cuda_detail::inclusion_table_size + 3);
      cuda_detail::launch_inclusion_table(inc_table_.data(), family().bits(), family().tables(), m_, stream);
      LSHATTN_CUDA_LAUNCHED("inclusion_table_kernel");
    }
    begin_ = begin;
    end_ = csr_end_ = begin;  // the hash below fills codes; sort() sets csr_end_
    hash_into_codes(keys, begin, end, stream);
    end_ = end;
    sort(stream);
    built_ = true;
  }

  /// Index tokens [end(), new_end) of the same (grown) cache: hash them into
  /// the tail; merge when the tail exceeds max_tail.
  template <element_type T>
  void append(const cache_view<const T>& keys, std::size_t new_end, cudaStream_t stream = nullptr) {
    LSHATTN_REQUIRE(built_, invalid_state, "index", "append() before build()");
    detail::check_index_keys(keys, heads_, dim());
    LSHATTN_REQUIRE(new_end >= end_ && new_end <= keys.tokens, invalid_argument, "new_end", "new_end = ", new_end,
                    " must lie in [end() = ", end_, ", keys.tokens = ", keys.tokens, "]");
    LSHATTN_REQUIRE(new_end <= 0xffffffffu, invalid_argument, "new_end", "new_end = ", new_end, " exceeds 2^32 - 1");
    if (new_end == end_) return;
    if (new_end - begin_ > cap_) reserve(std::max(new_end - begin_, cap_ + cap_ / 2));
    hash_into_codes(keys, end_, new_end, stream);
    end_ = new_end;
    if (tail_size() > max_tail_) sort(stream);
  }

  /// Index newly cached tokens so that all but the last params.window are covered.
  template <element_type T>
  void sync(const cache_view<const T>& keys, const decode_params& params, cudaStream_t stream = nullptr) {
    const std::size_t target = keys.tokens > params.window ? keys.tokens - params.window : 0;
    if (target > end_) append(keys, target, stream);
  }

  /// Merge the tail into the sorted tables now.
  void merge_tail(cudaStream_t stream = nullptr) {
    if (built_ && tail_size()) sort(stream);
  }

  /// Rebuild every table from the stored codes (what build() does after
  /// hashing, and merge_tail() with a tail): the table build alone, for timing.
  void rebuild_tables(cudaStream_t stream = nullptr) {
    LSHATTN_REQUIRE(built_, invalid_state, "index", "rebuild_tables() before build()");
    sort(stream);
  }

  /// Sort chunks of the sorted part [begin(), csr_end): the chunk starts'
  /// second extent (index_view::chunk_starts).
  [[nodiscard]] std::size_t sorted_chunks() const noexcept {
    return (csr_end_ - begin_ + cuda_detail::sort_chunk - 1) / cuda_detail::sort_chunk;
  }

  /// The plain-pointer form the kernels take.
  [[nodiscard]] cuda_detail::index_view view() const noexcept {
    return {means_.data(), offsets_.data(), ids_.data(), codes_.data(), static_cast<std::uint32_t>(begin_),
            static_cast<std::uint32_t>(end_), static_cast<std::uint32_t>(csr_end_), static_cast<std::uint32_t>(cap_),
            family_.planes(), norms_.data(), counts_.data(), static_cast<std::uint32_t>(sorted_chunks())};
  }

  /// Host copies for tests and inspection (synchronising).
  [[nodiscard]] std::vector<float> mean_to_host(std::size_t head) const {
    std::vector<float> m(dim());
    LSHATTN_CUDA_CHECK(cudaDeviceSynchronize());
    LSHATTN_CUDA_CHECK(cudaMemcpy(m.data(), means_.data() + head * dim(), dim() * 4, cudaMemcpyDeviceToHost));
    return m;
  }
  /// Sorted-part bucket `code` of table l of head, as stored (ids ascending).
  [[nodiscard]] std::vector<std::uint32_t> bucket_to_host(std::size_t head, int l, std::uint32_t code) const {
    const std::size_t B = family().buckets(), tab = head * family().tables() + static_cast<std::size_t>(l);
    std::uint32_t lohi[2];
    LSHATTN_CUDA_CHECK(cudaDeviceSynchronize());
    LSHATTN_CUDA_CHECK(cudaMemcpy(lohi, offsets_.data() + tab * (B + 1) + code, 8, cudaMemcpyDeviceToHost));
    std::vector<std::uint32_t> v(lohi[1] - lohi[0]);
    if (!v.empty())
      LSHATTN_CUDA_CHECK(cudaMemcpy(v.data(), ids_.data() + tab * cap_ + lohi[0], v.size() * 4, cudaMemcpyDeviceToHost));
    return v;
  }
  /// Codes of head h, table l for tokens [begin(), end()).
  [[nodiscard]] std::vector<std::uint16_t> codes_to_host(std::size_t head, int l) const {
    std::vector<std::uint16_t> v(size());
    LSHATTN_CUDA_CHECK(cudaDeviceSynchronize());
    if (!v.empty())
      LSHATTN_CUDA_CHECK(cudaMemcpy(v.data(), codes_.data() + (head * family().tables() + l) * cap_, v.size() * 2,
                                    cudaMemcpyDeviceToHost));
    return v;
  }

 private:
  template <class T>
  void hash_into_codes(const cache_view<const T>& keys, std::size_t t0, std::size_t t1, cudaStream_t stream) {
    const std::size_t L = static_cast<std::size_t>(family().tables());
    family_.hash<T, std::uint16_t>(keys.data, heads_, keys.head_stride, keys.token_stride, means_.data(), t0, t1,
                                   codes_.data(), L * cap_, cap_, 1, t0 - begin_, stream);
    if (t1 > t0) {
      cuda_detail::centred_norm_kernel<T><<<dim3(static_cast<unsigned>((t1 - t0 + 7) / 8), static_cast<unsigned>(heads_)),
                                            256, 0, stream>>>(keys.data, keys.head_stride, keys.token_stride,
                                                              static_cast<int>(dim()), means_.data(), t0, t1, begin_,
                                                              cap_, norms_.data());
      LSHATTN_CUDA_LAUNCHED("centred_norm_kernel");
    }
  }

  // The three steps of the table build (see chunk_count_kernel), over all
  // tokens [begin, end): the tail is merged by sorting everything again.
  void sort(cudaStream_t stream) {
    namespace cd = cuda_detail;
    const std::size_t tables = heads_ * static_cast<std::size_t>(family().tables()), n = end_ - begin_;
    const int B = static_cast<int>(family().buckets());
    const std::size_t chunks = (n + cd::sort_chunk - 1) / cd::sort_chunk;
    LSHATTN_REQUIRE(tables * chunks <= 0x7fffffffu, unsupported, "tokens", "kv_heads * L * ceil(tokens / ",
                    cd::sort_chunk, ") = ", tables * chunks, " table-build blocks exceed a CUDA grid");
    const auto blocks = static_cast<unsigned>(tables * chunks);
    const auto chunks32 = static_cast<std::uint32_t>(chunks);
    const std::size_t hist_bytes = static_cast<std::size_t>(B) * 4;
    if (blocks) {
      cd::chunk_count_kernel<cd::sort_threads><<<blocks, cd::sort_threads, hist_bytes, stream>>>(
          codes_.data(), cap_, B, n, chunks32, counts_.data());
      LSHATTN_CUDA_LAUNCHED("chunk_count_kernel");
    }
    cd::chunk_scan_kernel<cd::sort_threads><<<static_cast<unsigned>(tables), cd::sort_threads, hist_bytes, stream>>>(
        counts_.data(), B, chunks32, n, offsets_.data());
    LSHATTN_CUDA_LAUNCHED("chunk_scan_kernel");
    if (blocks) {
      const std::size_t smem = cd::scatter_shared_bytes(B);  // 68 KB at K = 10, 128 KB at K = 12 (allowed by the constructor)
      cd::chunk_scatter_kernel<cd::sort_threads><<<blocks, cd::sort_threads, smem, stream>>>(
          codes_.data(), cap_, B, n, chunks32, counts_.data(), static_cast<std::uint32_t>(begin_), ids_.data());
      LSHATTN_CUDA_LAUNCHED("chunk_scatter_kernel");
    }
    csr_end_ = end_;
  }

  cuda_detail::device_simhash family_;
  std::size_t heads_ = 0;
  int m_ = 2;
  std::size_t begin_ = 0, end_ = 0, csr_end_ = 0, cap_ = 0, max_tail_ = 256;
  bool built_ = false;
  cuda_detail::device_buffer<float> means_;
  cuda_detail::device_buffer<std::uint32_t> offsets_, ids_;
  cuda_detail::device_buffer<std::uint16_t> codes_;
  cuda_detail::device_buffer<float> norms_;
  cuda_detail::device_buffer<float> inc_table_;
  cuda_detail::device_buffer<std::uint32_t> counts_;  // the sort's [table][chunk][B] histograms, then chunk starts
  cuda_detail::device_buffer<double> chunk_sums_;
};

}  // namespace lshattn
