#pragma once
// lshattn::cuda_lsh_index: one layer's LSH tables for every KV head, in
// device memory, with the same contents as lsh_index (index/lsh_index.hpp)
// built from the same keys: the same mean (float64 in the same chunked order,
// so bit for bit), the same codes (hash.cuh), hence the same buckets.
//
// Layout per KV head h and table l (B = 2^K buckets, cap = capacity):
//   offsets [h][l][B + 1]   bucket c holds ids[offsets[c], offsets[c+1])
//   ids     [h][l][cap]     absolute token positions (order within a bucket unspecified)
//   codes   [h][l][cap]     16-bit code of token begin() + i, kept so that the
//                           tail can be scanned and merged without re-hashing
//   norms   [h][cap]        |key - mean| of token begin() + i (the centred key
//                           as hashed, float elements, summed in float64): the
//                           attention kernels need it for every sampled row's
//                           ln u, and computing it there from the gathered row
//                           cost about half of a sampled tile's instructions
// Tokens [csr_end, end) are the tail: appended after the last sort, scanned
// linearly by retrieval, merged by a counting sort once more than max_tail of
// them accumulate. Memory: L * 6 + 4 bytes per token per KV head.
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
#include "lshattn/index/common.hpp"

namespace lshattn {

namespace cuda_detail {

inline constexpr int max_device_bits = 12;  // B = 4096 bucket counters fit one block's shared memory
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

/// Counting sort of one table of one head: codes[0, n) -> offsets[B + 1], ids.
template <int Threads>
__global__ void __launch_bounds__(Threads) count_sort_kernel(const std::uint16_t* codes, std::size_t cap, int L,
                                                             int B, std::size_t n, std::uint32_t first,
                                                             std::uint32_t* offsets, std::uint32_t* ids) {
  __shared__ std::uint32_t hist[1 << max_device_bits];
  __shared__ std::uint32_t warp_sums[Threads / 32];
  const int tid = threadIdx.x;
  const std::size_t tab = static_cast<std::size_t>(blockIdx.y) * L + blockIdx.x;  // [h][l]
  const std::uint16_t* c = codes + tab * cap;
  std::uint32_t* off = offsets + tab * static_cast<std::size_t>(B + 1);
  std::uint32_t* out = ids + tab * cap;
  for (int b = tid; b < B; b += Threads) hist[b] = 0;
  __syncthreads();
  for (std::size_t i = tid; i < n; i += Threads) atomicAdd(&hist[c[i]], 1u);
  __syncthreads();
  // Exclusive scan: each thread owns a run of `per` consecutive buckets.
  const int per = (B + Threads - 1) / Threads;
  const int b0 = min(B, tid * per), b1 = min(B, b0 + per);
  std::uint32_t local = 0;
  for (int b = b0; b < b1; ++b) local += hist[b];
  std::uint32_t incl = local;
  const int lane = tid & 31, warp = tid >> 5;
#pragma unroll
  for (int o = 1; o < 32; o <<= 1) {
    const std::uint32_t v = __shfl_up_sync(0xffffffffu, incl, o);
    if (lane >= o) incl += v;
  }
  if (lane == 31) warp_sums[warp] = incl;
  __syncthreads();
  if (warp == 0) {
    std::uint32_t w = lane < Threads / 32 ? warp_sums[lane] : 0;
    std::uint32_t wi = w;
#pragma unroll
    for (int o = 1; o < 32; o <<= 1) {
      const std::uint32_t v = __shfl_up_sync(0xffffffffu, wi, o);
      if (lane >= o) wi += v;
    }
    if (lane < Threads / 32) warp_sums[lane] = wi - w;  // exclusive prefix of warps
  }
  __syncthreads();
  std::uint32_t run = warp_sums[warp] + incl - local;
  for (int b = b0; b < b1; ++b) {
    const std::uint32_t cnt = hist[b];
    off[b] = run;
    hist[b] = run;  // becomes the next free slot of bucket b
    run += cnt;
  }
  if (tid == 0) off[B] = static_cast<std::uint32_t>(n);
  __syncthreads();
  for (std::size_t i = tid; i < n; i += Threads) out[atomicAdd(&hist[c[i]], 1u)] = first + static_cast<std::uint32_t>(i);
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
  const float* planes_t = nullptr;  ///< [dim][K*L] hyperplanes, transposed
  const float* knorm = nullptr;     ///< [heads][cap] |key - mean| of token begin + i
};

}  // namespace cuda_detail

/// LSH tables of one layer in device memory (see the top of this file).
class cuda_lsh_index {
 public:
  cuda_lsh_index() = default;
  /// An empty index for kv_heads heads of head_dim dim, with room for
  /// `capacity` indexed tokens. K must be at most 12 on the device.
  cuda_lsh_index(std::size_t dim, std::size_t kv_heads, const lsh_params& p, std::size_t capacity = 0)
      : family_(hash::simhash<>((p.validate(), dim), p.K, p.L, p.seed)), heads_(kv_heads), m_(p.m) {
    LSHATTN_REQUIRE(kv_heads >= 1, invalid_argument, "kv_heads", "kv_heads = ", kv_heads, " must be >= 1");
    LSHATTN_REQUIRE(p.K <= cuda_detail::max_device_bits, unsupported, "K", "K = ", p.K,
                    " exceeds the CUDA index's limit of ", cuda_detail::max_device_bits, " bits per table");
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
    return ids_.size() * 4 + codes_.size() * 2 + norms_.size() * 4 + offsets_.size() * 4 + means_.size() * 4;
  }

  /// Make room for `tokens` indexed tokens (allocates; keeps the content).
  void reserve(std::size_t tokens) {
    if (tokens <= cap_) return;
    const std::size_t L = static_cast<std::size_t>(family().tables()), per = heads_ * L;
    cuda_detail::device_buffer<std::uint16_t> codes(per * tokens);
    cuda_detail::device_buffer<std::uint32_t> ids(per * tokens);
    cuda_detail::device_buffer<float> norms(heads_ * tokens);
    if (built_ && size() > 0) {
      LSHATTN_CUDA_CHECK(cudaDeviceSynchronize());
      LSHATTN_CUDA_CHECK(cudaMemcpy2D(norms.data(), tokens * 4, norms_.data(), cap_ * 4, size() * 4, heads_,
                                      cudaMemcpyDeviceToDevice));
      LSHATTN_CUDA_CHECK(cudaMemcpy2D(codes.data(), tokens * 2, codes_.data(), cap_ * 2, size() * 2, per,
                                      cudaMemcpyDeviceToDevice));
      LSHATTN_CUDA_CHECK(cudaMemcpy2D(ids.data(), tokens * 4, ids_.data(), cap_ * 4, (csr_end_ - begin_) * 4, per,
                                      cudaMemcpyDeviceToDevice));
    }
    codes_ = std::move(codes);
    ids_ = std::move(ids);
    norms_ = std::move(norms);
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

  /// The plain-pointer form the kernels take.
  [[nodiscard]] cuda_detail::index_view view() const noexcept {
    return {means_.data(), offsets_.data(), ids_.data(), codes_.data(), static_cast<std::uint32_t>(begin_),
            static_cast<std::uint32_t>(end_), static_cast<std::uint32_t>(csr_end_), static_cast<std::uint32_t>(cap_),
            family_.planes_t(), norms_.data()};
  }

  /// Host copies for tests and inspection (synchronising).
  [[nodiscard]] std::vector<float> mean_to_host(std::size_t head) const {
    std::vector<float> m(dim());
    LSHATTN_CUDA_CHECK(cudaDeviceSynchronize());
    LSHATTN_CUDA_CHECK(cudaMemcpy(m.data(), means_.data() + head * dim(), dim() * 4, cudaMemcpyDeviceToHost));
    return m;
  }
  /// Sorted-part bucket `code` of table l of head: ids ascending (sorted here for comparison).
  [[nodiscard]] std::vector<std::uint32_t> bucket_to_host(std::size_t head, int l, std::uint32_t code) const {
    const std::size_t B = family().buckets(), tab = head * family().tables() + static_cast<std::size_t>(l);
    std::uint32_t lohi[2];
    LSHATTN_CUDA_CHECK(cudaDeviceSynchronize());
    LSHATTN_CUDA_CHECK(cudaMemcpy(lohi, offsets_.data() + tab * (B + 1) + code, 8, cudaMemcpyDeviceToHost));
    std::vector<std::uint32_t> v(lohi[1] - lohi[0]);
    if (!v.empty())
      LSHATTN_CUDA_CHECK(cudaMemcpy(v.data(), ids_.data() + tab * cap_ + lohi[0], v.size() * 4, cudaMemcpyDeviceToHost));
    std::sort(v.begin(), v.end());
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
  void sort(cudaStream_t stream) {
    const int L = family().tables();
    const int B = static_cast<int>(family().buckets());
    cuda_detail::count_sort_kernel<512><<<dim3(static_cast<unsigned>(L), static_cast<unsigned>(heads_)), 512, 0,
                                          stream>>>(codes_.data(), cap_, L, B, end_ - begin_,
                                                    static_cast<std::uint32_t>(begin_), offsets_.data(), ids_.data());
    LSHATTN_CUDA_LAUNCHED("count_sort_kernel");
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
  cuda_detail::device_buffer<double> chunk_sums_;
};

}  // namespace lshattn
