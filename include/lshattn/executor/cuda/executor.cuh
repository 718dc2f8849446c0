#pragma once
// The CUDA executor: lshattn::decode(lshattn::cuda.on(stream).with(workspace), est, params, batch)
// with the same requests as lshattn::reference, whose views point to device memory.
//
// Supported: estimator::exact (flash-decoding over all tokens) and
// estimator::lsh (MagicPIG sampling; requests carry a cuda_lsh_index);
// keys and values of one element type (float, bf16, fp16), queries of any;
// head_dim 64 or 128; GQA groups of 1, 2, 4 or 8 query heads; K/V rows
// 16-byte aligned; group x L <= 8192 (the selection keeps every bucket's
// start in shared memory); K <= 12 (cuda_lsh_index). Anything else throws
// errc::unsupported.
//
// Engine contract: the step runs on the policy's stream, allocates nothing
// and copies nothing from the host, so it can be captured in a CUDA graph.
// The caller sizes the workspace with workspace_bytes() and passes one that
// is zero-filled (cuda_workspace is); every step leaves the parts that must be
// zero zero-filled again (the union lists are written before they are read).
// After errc::backend_failure from inside a step, re-zero it (cuda_workspace::clear).
// Host-side checks are the reference's except that device memory is never
// read: non-finite queries are not rejected, they propagate to the outputs
// of their heads. Asking for decode_stats synchronises the stream (not for
// capture). CUDA errors become lshattn::error(errc::backend_failure) carrying
// the CUDA error name and string.
//
// Step order (LSH): query_hash -> select (union lists, stats) -> attend ->
// merge -> one memset of the small scratch.

#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <span>
#include <type_traits>

#include "lshattn/core/params.hpp"
#include "lshattn/estimator/exact.hpp"
#include "lshattn/estimator/lsh.hpp"
#include "lshattn/executor/cuda/attend_mma.cuh"
#include "lshattn/executor/cuda/common.cuh"
#include "lshattn/executor/cuda/index.cuh"
#include "lshattn/executor/cuda/kernels.cuh"
#include "lshattn/executor/request.hpp"

namespace lshattn {

/// A caller-owned device workspace: pointer and size in bytes.
struct cuda_workspace_view {
  void* data = nullptr;
  std::size_t bytes = 0;
};

/// An owning, zero-filled device workspace (allocated once, at plan time).
class cuda_workspace {
 public:
  cuda_workspace() = default;
  explicit cuda_workspace(std::size_t bytes) : buf_(bytes) { clear(); }
  /// Zero-fill again (after a backend failure inside a step).
  void clear(cudaStream_t stream = nullptr) {
    if (buf_.size()) LSHATTN_CUDA_CHECK(cudaMemsetAsync(buf_.data(), 0, buf_.size(), stream));
    LSHATTN_CUDA_CHECK(cudaStreamSynchronize(stream));
  }
  [[nodiscard]] cuda_workspace_view view() const noexcept { return {buf_.data(), buf_.size()}; }
  operator cuda_workspace_view() const noexcept { return view(); }  // NOLINT: a workspace is usable where its view is
  [[nodiscard]] std::size_t bytes() const noexcept { return buf_.size(); }
  [[nodiscard]] const unsigned char* data() const noexcept { return buf_.data(); }

 private:
  cuda_detail::device_buffer<unsigned char> buf_;
};

namespace cuda_detail {

inline std::size_t align_up(std::size_t x) { return (x + 255) & ~std::size_t{255}; }

/// Byte offsets of the workspace regions for one launch of up to 16 requests.
/// The small regions come first; those before the partials are zeroed by one
/// memset at the end of a step, the partials by merge_kernel; the lists need
/// no clearing (a step writes the entries it reads).
struct workspace_layout {
  std::size_t list_count = 0, stats = 0, qcodes = 0, partials = 0;
  std::size_t lists = 0, list_masks = 0, inc_table = 0, total = 0;

  workspace_layout(std::size_t batch, std::size_t hq, std::size_t hk, std::size_t d, std::size_t max_tokens, int L,
                   bool lsh) {
    const std::size_t b = std::min<std::size_t>(std::max<std::size_t>(batch, 1), max_seqs_per_launch);
    std::size_t at = 0;
    list_count = at;
    at += align_up(b * hk * 4);
    stats = at;
    at += align_up(b * 2 * 8);
    qcodes = at;
    at += align_up(lsh ? b * hq * static_cast<std::size_t>(L) * 4 : 0);
    partials = at;
    at += align_up(b * hq * max_splits * (d + 1) * 4);
    lists = at;
    at += align_up(lsh ? b * hk * max_tokens * 4 : 0);
    list_masks = at;
    at += align_up(lsh ? b * hk * max_tokens : 0);
    inc_table = at;
    at += align_up(lsh ? (inclusion_table_size + 3) * 4 : 0);
    total = at;
  }
};

inline int device_major() {
  int dev = 0, major = 0;
  LSHATTN_CUDA_CHECK(cudaGetDevice(&dev));
  LSHATTN_CUDA_CHECK(cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, dev));
  return major;
}

inline std::size_t device_smem_per_sm() {
  int dev = 0, bytes = 0;
  LSHATTN_CUDA_CHECK(cudaGetDevice(&dev));
  LSHATTN_CUDA_CHECK(cudaDeviceGetAttribute(&bytes, cudaDevAttrMaxSharedMemoryPerMultiprocessor, dev));
  return static_cast<std::size_t>(bytes);
}

inline std::size_t device_smem_per_block() {
  int dev = 0, bytes = 0;
  LSHATTN_CUDA_CHECK(cudaGetDevice(&dev));
  LSHATTN_CUDA_CHECK(cudaDeviceGetAttribute(&bytes, cudaDevAttrMaxSharedMemoryPerBlockOptin, dev));
  return static_cast<std::size_t>(bytes);
}

inline int device_sm_count() {
  int dev = 0, sms = 0;
  LSHATTN_CUDA_CHECK(cudaGetDevice(&dev));
  LSHATTN_CUDA_CHECK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, dev));
  return sms;
}

/// Opts a kernel into more than 48 KB of dynamic shared memory (a host-side
/// attribute, allowed while a stream is being captured).
template <class F>
void allow_shared_bytes(F* kernel, std::size_t bytes) {
  if (bytes > 48 * 1024)
    LSHATTN_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(bytes)));
}

template <int D, int G, class TQ, class T>
void launch_attend_merge(const step_args<TQ, T>& a, cudaStream_t stream) {
  constexpr std::size_t smem = attend_shape<D, G, T>::smem_bytes;
  allow_shared_bytes(attend_kernel<D, G, TQ, T>, smem);
  attend_kernel<D, G, TQ, T><<<dim3(a.splits, a.hk, a.nseq), attend_shape<D, G, T>::threads, smem, stream>>>(a);
  LSHATTN_CUDA_LAUNCHED("attend_kernel");
  merge_kernel<D, TQ, T><<<dim3(a.hq, a.nseq), D, 0, stream>>>(a);
  LSHATTN_CUDA_LAUNCHED("merge_kernel");
}

/// select_kernel over `parts` token chunks of a.chunk tokens of every
/// (request, KV head): clustered, a cluster of G blocks (a query head each)
/// per chunk; otherwise one block of all G heads per chunk.
template <class TQ, class T>
void launch_select(const step_args<TQ, T>& a, std::size_t parts, bool clustered, cudaStream_t stream) {
  const std::size_t smem = select_smem_bytes(clustered ? 1 : a.group, a.m, a.L, a.chunk);
  if (clustered) {
    auto* kernel = select_kernel<TQ, T, true>;
    allow_shared_bytes(kernel, smem);
    cudaLaunchConfig_t cfg{};
    cfg.gridDim = dim3(static_cast<unsigned>(parts * a.group), a.hk, a.nseq);
    cfg.blockDim = dim3(select_threads);
    cfg.dynamicSmemBytes = smem;
    cfg.stream = stream;
    cudaLaunchAttribute attr{};
    attr.id = cudaLaunchAttributeClusterDimension;
    attr.val.clusterDim.x = static_cast<unsigned>(a.group);
    attr.val.clusterDim.y = 1;
    attr.val.clusterDim.z = 1;
    cfg.attrs = &attr;
    cfg.numAttrs = 1;
    LSHATTN_CUDA_CHECK(cudaLaunchKernelEx(&cfg, kernel, a));
  } else {
    auto* kernel = select_kernel<TQ, T, false>;
    allow_shared_bytes(kernel, smem);
    kernel<<<dim3(static_cast<unsigned>(parts), a.hk, a.nseq), select_threads, smem, stream>>>(a);
  }
  LSHATTN_CUDA_LAUNCHED("select_kernel");
}

/// Whether the step's attention runs on the tensor cores (attend_mma.cuh:
/// bf16 caches) or on the SIMT kernel (every element type).
template <class T>
bool uses_tensor_cores(bool allowed) {
  return allowed && std::is_same_v<T, bf16>;
}

template <int D, int G, class TQ, class T>
void launch_attention(const step_args<TQ, T>& a, bool tensor_cores, cudaStream_t stream) {
  if constexpr (std::is_same_v<T, bf16>) {
    if (tensor_cores) {
      // Only where the gather shape differs, so as not to double the instantiations.
      if constexpr (attend_mma_shape<D, G, TQ, T, true>::wide)
        if (a.lsh) return launch_attend_mma<D, G, TQ, T, true>(a, stream);
      return launch_attend_mma<D, G, TQ, T, false>(a, stream);
    }
  }
  launch_attend_merge<D, G>(a, stream);
}

template <int D, class TQ, class T>
void dispatch_group(const step_args<TQ, T>& a, bool tensor_cores, cudaStream_t stream) {
  switch (a.group) {
    case 1: return launch_attention<D, 1>(a, tensor_cores, stream);
    case 2: return launch_attention<D, 2>(a, tensor_cores, stream);
    case 4: return launch_attention<D, 4>(a, tensor_cores, stream);
    default: return launch_attention<D, 8>(a, tensor_cores, stream);
  }
}

}  // namespace cuda_detail

namespace executor {

/// Execution policy of the CUDA executor: a stream and a workspace (use the value lshattn::cuda).
struct cuda_policy {
  cudaStream_t stream = nullptr;
  cuda_workspace_view workspace{};
  /// bf16 caches attend on the tensor cores (mma.sync with the float query
  /// split into bf16 parts); false keeps every dtype on the SIMT kernel
  /// (for comparisons and benchmarks).
  bool tensor_cores = true;
  /// On sm_90 and newer, the selection runs as thread block clusters (a
  /// query head per block, distributed shared memory for the union); false
  /// keeps the one-block-per-group kernel that older GPUs run.
  bool clusters = true;

  /// The same policy on another stream.
  [[nodiscard]] cuda_policy on(cudaStream_t s) const noexcept { return {s, workspace, tensor_cores, clusters}; }
  /// The same policy with a workspace (sized by workspace_bytes, zero-filled).
  [[nodiscard]] cuda_policy with(cuda_workspace_view w) const noexcept { return {stream, w, tensor_cores, clusters}; }
  /// The same policy with the tensor-core attention allowed or not.
  [[nodiscard]] cuda_policy with_tensor_cores(bool on) const noexcept { return {stream, workspace, on, clusters}; }
  /// The same policy with clustered selection allowed or not.
  [[nodiscard]] cuda_policy with_clusters(bool on) const noexcept { return {stream, workspace, tensor_cores, on}; }

  /// Workspace bytes a step needs for batches of up to `batch` requests with
  /// these head counts, head_dim, at most max_tokens tokens each, L tables.
  [[nodiscard]] static std::size_t workspace_bytes_for(std::size_t batch, std::size_t q_heads, std::size_t kv_heads,
                                                       std::size_t head_dim, std::size_t max_tokens, int L, bool lsh) {
    return cuda_detail::workspace_layout(batch, q_heads, kv_heads, head_dim, max_tokens, L, lsh).total;
  }

  /// Workspace bytes this batch needs.
  template <estimator::sampler Est, element_type TQ, element_type TK, element_type TV, class I>
  [[nodiscard]] std::size_t workspace_bytes(const Est&, const decode_params&,
                                            std::span<const decode_request<TQ, TK, TV, I>> batch) const {
    return layout_of<Est>(batch).total;
  }

  template <estimator::sampler Est, element_type TQ, element_type TK, element_type TV, class I>
  void decode(const Est& est, const decode_params& p, std::span<const decode_request<TQ, TK, TV, I>> batch) const {
    static_assert(std::is_same_v<TK, TV>, "lshattn::cuda: keys and values must share one element type");
    static_assert(std::is_same_v<Est, estimator::exact> || std::is_same_v<Est, estimator::lsh>,
                  "lshattn::cuda implements estimator::exact and estimator::lsh");
    constexpr bool lsh = std::is_same_v<Est, estimator::lsh>;
    static_assert(!lsh || std::is_same_v<I, cuda_lsh_index>,
                  "lshattn::cuda with estimator::lsh needs decode_request<TQ, TK, TV, lshattn::cuda_lsh_index>");
    if (batch.empty()) return;
    for (const auto& r : batch) validate(est, r, p, batch.front());
    const auto lay = layout_of<Est>(batch);
    LSHATTN_REQUIRE(workspace.data != nullptr && workspace.bytes >= lay.total, invalid_argument, "workspace",
                    "workspace.bytes = ", workspace.bytes, " but this batch needs ", lay.total,
                    " (size it with workspace_bytes())");
    auto* ws = static_cast<unsigned char*>(workspace.data);
    const std::size_t hq = batch.front().queries.rows, hk = batch.front().keys.heads, d = batch.front().queries.cols;
    const int sms = cuda_detail::device_sm_count();
    bool want_stats = false;
    for (const auto& r : batch) want_stats = want_stats || r.stats != nullptr;
    const std::size_t nmax = max_tokens(batch);  // list slots per (request, KV head), as layout_of sized them

    for (std::size_t c0 = 0; c0 < batch.size(); c0 += cuda_detail::max_seqs_per_launch) {
      const std::size_t nb = std::min<std::size_t>(cuda_detail::max_seqs_per_launch, batch.size() - c0);
      cuda_detail::step_args<TQ, TK> a{};
      for (std::size_t i = 0; i < nb; ++i) {
        const auto& r = batch[c0 + i];
        auto& s = a.seq[i];
        s.q = r.queries.data;
        s.q_stride = r.queries.row_stride;
        s.k = r.keys.data;
        s.k_head = r.keys.head_stride;
        s.k_tok = r.keys.token_stride;
        s.v = r.values.data;
        s.v_head = r.values.head_stride;
        s.v_tok = r.values.token_stride;
        s.out = r.output.data;
        s.out_stride = r.output.row_stride;
        s.lse = r.lse.empty() ? nullptr : r.lse.data();
        s.n = static_cast<std::uint32_t>(r.keys.tokens);
        if constexpr (lsh) {
          s.idx = r.index->view();
          s.dense_a = s.idx.begin;
          s.dense_b = s.idx.end;
        } else {
          s.dense_a = s.n;
          s.dense_b = s.n;
        }
      }
      a.nseq = static_cast<int>(nb);
      a.hq = static_cast<int>(hq);
      a.hk = static_cast<int>(hk);
      a.group = static_cast<int>(hq / hk);
      a.d = static_cast<int>(d);
      a.scale = static_cast<float>(p.effective_scale(d));
      a.lse_factor = p.base == lse_base::base2 ? static_cast<float>(1.0 / ln2) : 1.0f;
      a.lsh = lsh;
      a.nmax = nmax;
      a.qcodes = reinterpret_cast<std::uint32_t*>(ws + lay.qcodes);
      a.list_masks = ws + lay.list_masks;

      a.lists = reinterpret_cast<std::uint32_t*>(ws + lay.lists);
      a.list_count = reinterpret_cast<std::uint32_t*>(ws + lay.list_count);
      a.stats = reinterpret_cast<unsigned long long*>(ws + lay.stats);
      a.partials = reinterpret_cast<float*>(ws + lay.partials);
      const std::size_t pairs = nb * hk;
      // Whole waves of attention blocks (the SIMT kernel keeps three
      // resident per SM, the tensor-core one two at head_dim 128; a grid that
      // spills a little into another wave waits for it): two waves when
      // exact, one for the LSH step, whose union lists are short, so that
      // each warp streams enough tiles to fill its pipeline. At least 256
      // rows per block when exact.
      const bool tc = cuda_detail::uses_tensor_cores<TK>(tensor_cores);
      const int resident = !tc ? 3
                           : d == 64 ? cuda_detail::attend_mma_blocks_per_sm<64, TQ, lsh>
                                     : cuda_detail::attend_mma_blocks_per_sm<128, TQ, lsh>;
      int splits = static_cast<int>((lsh ? 1 : 2) * static_cast<std::size_t>(resident * sms) / pairs);
      if constexpr (!lsh) splits = std::min<int>(splits, static_cast<int>((nmax + 255) / 256));
      a.splits = std::clamp(splits, 1, cuda_detail::max_splits);
      if constexpr (lsh) {
        const auto& ix = *batch.front().index;
        a.K = ix.family().bits();
        a.L = ix.family().tables();
        a.B = static_cast<int>(ix.family().buckets());
        a.m = est.m > 0 ? est.m : ix.threshold();
        cuda_detail::launch_query_hash(a, stream);
        LSHATTN_CUDA_LAUNCHED("query_hash_kernel");
        // ln u: the index's table when the estimator keeps the index's m
        // (built once, with the index), else one built here in the workspace.
        a.inc_table = a.m == ix.threshold() ? ix.inclusion_table() : nullptr;
        if (!a.inc_table) {
          float* t = reinterpret_cast<float*>(ws + lay.inc_table);
          cuda_detail::launch_inclusion_table(t, a.K, a.L, a.m, stream);
          LSHATTN_CUDA_LAUNCHED("inclusion_table_kernel");
          a.inc_table = t;
        }
        // Token chunks of whole sort chunks, each block reading only its own
        // slice of every bucket; as few as keep a wave of resident blocks
        // (cuda_detail::plan_select).
        std::size_t span = 0;
        for (std::size_t i = 0; i < nb; ++i) span = std::max<std::size_t>(span, a.seq[i].idx.end - a.seq[i].idx.begin);
        if (span) {
          const auto plan = cuda_detail::plan_select(span, nb * hk, a.group, a.m, a.L, sms, cuda_detail::device_smem_per_sm(),
                                                     cuda_detail::device_smem_per_block(), clusters && cuda_detail::device_major() >= 9);
          a.chunk = static_cast<std::uint32_t>(plan.chunk);
          cuda_detail::launch_select(a, plan.parts, plan.clustered, stream);
        }
      }
      if (d == 64) cuda_detail::dispatch_group<64>(a, tc, stream);
      else cuda_detail::dispatch_group<128>(a, tc, stream);
      if constexpr (lsh) {
        if (want_stats) {
          unsigned long long st[2 * cuda_detail::max_seqs_per_launch] = {};
          LSHATTN_CUDA_CHECK(cudaMemcpyAsync(st, a.stats, nb * 16, cudaMemcpyDeviceToHost, stream));
          LSHATTN_CUDA_CHECK(cudaStreamSynchronize(stream));
          for (std::size_t i = 0; i < nb; ++i) {
            const auto& r = batch[c0 + i];
            if (!r.stats) continue;
            const std::size_t b = r.index->begin(), e = r.index->end(), n = r.keys.tokens;
            r.stats->union_keys += st[2 * i];
            r.stats->sampled_keys += st[2 * i + 1];
            r.stats->dense_keys += hq * (b + (n - e));
            r.stats->sampled_range += hq * (e - b);
          }
        }
      } else {
        for (std::size_t i = 0; i < nb; ++i) {
          const auto& r = batch[c0 + i];
          if (!r.stats) continue;
          const auto [b, e] = detail::sampled_range<Est>(r, p);
          const std::size_t n = r.keys.tokens;
          r.stats->dense_keys += hq * (b + (n - e));
          r.stats->sampled_keys += hq * (e - b);
          r.stats->union_keys += hk * (e - b);
          r.stats->sampled_range += hq * (e - b);
        }
      }
      // The partials were zeroed by merge_kernel; the lists are written before they are read.
      LSHATTN_CUDA_CHECK(cudaMemsetAsync(ws, 0, lay.partials, stream));
    }
  }

 private:
  template <class R>
  static std::size_t max_tokens(std::span<const R> batch) {
    std::size_t n = 0;
    for (const auto& r : batch) n = std::max(n, r.keys.tokens);
    return n;
  }

  template <class Est, class R>
  static cuda_detail::workspace_layout layout_of(std::span<const R> batch) {
    const std::size_t nmax = max_tokens(batch);
    int L = 0;
    if constexpr (std::is_same_v<Est, estimator::lsh>)
      if (!batch.empty() && batch.front().index) L = batch.front().index->family().tables();
    const auto& f = batch.front();
    return cuda_detail::workspace_layout(batch.size(), f.queries.rows, f.keys.heads, f.queries.cols, nmax, L,
                                         std::is_same_v<Est, estimator::lsh>);
  }

  // The shared checks that need no access to device memory
  // (executor/request.hpp), plus what this backend supports.
  template <class Est, class R>
  static void validate(const Est& est, const R& r, const decode_params& p, const R& first) {
    detail::validate_request_shapes(est, r, p);
    const std::size_t hq = r.queries.rows, hk = r.keys.heads, d = r.queries.cols;
    LSHATTN_REQUIRE(r.keys.tokens <= 0xffffffffu, invalid_argument, "keys.tokens", "keys.tokens = ", r.keys.tokens,
                    " exceeds 2^32 - 1");
    // Backend limits.
    LSHATTN_REQUIRE(r.std_error.empty() && r.ess.empty(), unsupported, "std_error",
                    "error bars (std_error, ess) are computed by the reference executor only");
    LSHATTN_REQUIRE(d == 64 || d == 128, unsupported, "queries.cols", "head_dim = ", d,
                    "; the CUDA executor supports 64 and 128");
    const std::size_t g = hq / hk;
    LSHATTN_REQUIRE(g == 1 || g == 2 || g == 4 || g == 8, unsupported, "queries.rows", "GQA group = ", g,
                    "; the CUDA executor supports 1, 2, 4 and 8");
    LSHATTN_REQUIRE(hq == first.queries.rows && hk == first.keys.heads && d == first.queries.cols, unsupported, "batch",
                    "every request of a CUDA batch must share head counts and head_dim");
    using TK = std::remove_const_t<std::remove_pointer_t<decltype(r.keys.data)>>;
    constexpr std::size_t vec = 16 / sizeof(TK);
    const auto aligned = [&](const void* ptr, std::size_t hs, std::size_t ts) {
      return reinterpret_cast<std::uintptr_t>(ptr) % 16 == 0 && hs % vec == 0 && ts % vec == 0;
    };
    LSHATTN_REQUIRE(aligned(r.keys.data, r.keys.head_stride, r.keys.token_stride), unsupported, "keys",
                    "key rows must start on 16-byte boundaries (pointer and strides)");
    LSHATTN_REQUIRE(aligned(r.values.data, r.values.head_stride, r.values.token_stride), unsupported, "values",
                    "value rows must start on 16-byte boundaries (pointer and strides)");
    if constexpr (std::is_same_v<Est, estimator::lsh>) {
      const int L = r.index->family().tables();
      const auto& f0 = first.index->family();
      LSHATTN_REQUIRE(r.index->family().bits() == f0.bits() && L == f0.tables() &&
                          r.index->threshold() == first.index->threshold(),
                      unsupported, "index", "every request of a CUDA batch must use the same K, L and m");
      LSHATTN_REQUIRE(static_cast<std::size_t>(L) * g <= 8192, unsupported, "index", "L = ", L, " with GQA group ", g,
                      "; the CUDA executor needs group x L <= 8192 (bucket starts in shared memory)");
    }
  }
};

}  // namespace executor

/// The CUDA executor: lshattn::decode(lshattn::cuda.on(stream).with(workspace), ...).
inline constexpr executor::cuda_policy cuda{};

}  // namespace lshattn
