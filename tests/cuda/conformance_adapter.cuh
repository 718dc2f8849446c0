#pragma once
// The CUDA executor behind the conformance suite's host-memory interface
// (tests/support/conformance.hpp): cuda_conformance::adapter is an Exec for
// run_conformance, run_error_conformance and run_nan_policy_conformance.
//
// Per decode call it mirrors each request into device memory and back:
//  - queries, keys, values, output and lse: one device array per view, of
//    the view's extent from its data pointer (the last element it addresses
//    plus one), filled from the host; every shape field and stride is kept,
//    so the executor sees the suite's layouts (interleaved and padded caches,
//    strided queries and outputs) unchanged. The output and lse arrays are
//    filled too: the suite's NaN poison and the padding sentinel between
//    output rows go to the device, so an element the kernels do not write,
//    or padding they do, comes back as such.
//  - the host lsh_index becomes a cuda_lsh_index with the same K, L, m and
//    seed, built from the mirrored keys over the same [begin, end): defined
//    to equal it bit for bit (mean, codes, buckets; index.cuh), which the
//    suite's decode_stats check then confirms through the sampled sets. The
//    suite builds its indexes once (no appends), so a fresh build is the
//    same index.
//  - stats pointers stay host pointers (the executor adds to them on the host).
// After the step (on the adapter's stream, with a workspace sized by
// workspace_bytes) output and lse are copied back over the host arrays.
//
// What the adapter cannot mirror faithfully, and what it does instead:
//  - A malformed request (one the shared checks detail::validate_request_shapes
//    reject) may describe more memory than the host owns (e.g. keys.heads
//    raised to 3), so its host data is never read: its device arrays are
//    allocated from the view's arithmetic extent and zero-filled, and an index
//    becomes a "shape double" (same dim, kv_heads, K, L, m, begin, end, built
//    or not) built over zero keys. Those are exactly the properties the
//    executor's validation reads (it never reads device memory on the host),
//    so it still sees the defect and must throw. If it does not, the adapter
//    copies nothing back and fails the test case (the suite also fails it:
//    nothing was thrown). So the adapter masks no error, but the outputs of
//    an executor that wrongly accepts a malformed request are not inspected.
//  - Non-finite queries: the CUDA executor does not reject them (device
//    memory is never read on the host); the suite skips those two error cases
//    via capabilities (rejects_non_finite_queries = false).
//  - Estimators other than exact and lsh, and keys and values of different
//    element types, do not compile for lshattn::cuda; the adapter throws
//    errc::unsupported for them, and the capabilities below make the suite
//    skip (and name) them, so that throw is never reached.

#include "lshattn/cuda.cuh"

#include <doctest/doctest.h>

#include <memory>
#include <optional>
#include <span>
#include <string>
#include <type_traits>
#include <vector>

#include "conformance.hpp"

namespace lshattn::cuda_conformance {

/// Elements a view addresses from its data pointer (0 when it addresses none).
template <class T>
std::size_t extent(const matrix_view<T>& v) {
  return v.rows && v.cols ? (v.rows - 1) * v.row_stride + v.cols : 0;
}
template <class T>
std::size_t extent(const cache_view<T>& v) {
  return v.heads && v.tokens && v.dim ? (v.heads - 1) * v.head_stride + (v.tokens - 1) * v.token_stride + v.dim : 0;
}

/// A device copy of n host elements from `host` (null stays null; an empty
/// view gets a one-element array, so that a non-null pointer stays non-null).
/// copy = false: zero-filled, the host memory is not read.
template <class T>
struct mirror {
  cuda_detail::device_buffer<T> buf;
  T* device = nullptr;
  std::size_t n = 0;
  mirror() = default;
  mirror(const T* host, std::size_t count, bool copy, cudaStream_t s) : n(count) {
    if (!host) return;
    buf.reset(count ? count : 1);
    device = buf.data();
    if (copy && count)
      LSHATTN_CUDA_CHECK(cudaMemcpyAsync(device, host, count * sizeof(T), cudaMemcpyHostToDevice, s));
    else
      LSHATTN_CUDA_CHECK(cudaMemsetAsync(device, 0, buf.size() * sizeof(T), s));
  }
  /// n zero elements on the device (a non-null array even for n = 0).
  static mirror zeros(std::size_t count, cudaStream_t s) {
    mirror m;
    m.n = count;
    m.buf.reset(count ? count : 1);
    m.device = m.buf.data();
    LSHATTN_CUDA_CHECK(cudaMemsetAsync(m.device, 0, m.buf.size() * sizeof(T), s));
    return m;
  }
  void to_host(T* host, cudaStream_t s) const {
    if (host && n) LSHATTN_CUDA_CHECK(cudaMemcpyAsync(host, device, n * sizeof(T), cudaMemcpyDeviceToHost, s));
  }
};

/// What lshattn::cuda implements, for the suite (conformance::capabilities),
/// and the error it adds beyond the suite's fp32 model, each term derived:
///  - log_weight_error: none beyond the model for the scores themselves (see
///    tol_scale in cuda_conformance_test.cu for the tensor-core sums).
///  - weight_rel_error = 2^-17: attend_mma_kernel multiplies V by the fp32
///    weights split into two bf16 parts (hi = bf16(p), lo = bf16(p - hi)):
///    16 significant bits, |p - hi - lo| <= 2^-9 |p - hi| <= 2^-18 |p|; 2^-17
///    also covers the fp32 sum of the two parts' products inside the mma.
///    The softmax sum l is taken from the fp32 weights, so only P V sees it.
///    The SIMT kernel multiplies by the fp32 weight (no such error): one
///    value for both is conservative for the SIMT kernel.
///  - lsh_fp32_cosine, lsh_table_error = 2e-5: attention evaluates ln u at the
///    fp32 cosine of the query and the centred key, by interpolating a table
///    of ln u (kernels.cuh, inclusion_lookup) within 2e-5 of the double
///    formula at that cosine (the "host" test "the interpolated inclusion
///    table is within 2e-5 of ln u" in cuda_test.cu checks exactly that).
inline conformance::capabilities capabilities(const std::string& name) {
  conformance::capabilities c;
  c.name = name;
  c.topk = c.uniform = c.oracle_sampling = false;
  c.head_dims = {64, 128};
  c.mixed_kv_types = false;
  c.rejects_non_finite_queries = false;
  c.weight_rel_error = 0x1p-17;
  c.lsh_fp32_cosine = true;
  c.lsh_table_error = 2e-5;
  return c;
}

/// An Exec for the conformance suite that runs lshattn::cuda with `policy`
/// (tensor cores and clusters as it says) on a stream of its own.
class adapter {
 public:
  explicit adapter(executor::cuda_policy policy) : policy_(policy) { LSHATTN_CUDA_CHECK(cudaStreamCreate(&stream_)); }
  adapter(const adapter&) = delete;
  adapter& operator=(const adapter&) = delete;
  ~adapter() { cudaStreamDestroy(stream_); }

  template <estimator::sampler Est, element_type TQ, element_type TK, element_type TV, class I>
  void decode(const Est& est, const decode_params& p, std::span<const decode_request<TQ, TK, TV, I>> batch) const {
    constexpr bool implemented = std::is_same_v<TK, TV> &&
                                 (std::is_same_v<Est, estimator::exact> || std::is_same_v<Est, estimator::lsh>);
    if constexpr (!implemented) {
      throw lshattn::error(errc::unsupported, "estimator",
                           "lshattn::cuda implements estimator::exact and estimator::lsh with keys and values of one "
                           "element type (the suite's capabilities should have skipped this part)",
                           __FILE__, __LINE__);
    } else {
      run(est, p, batch);
    }
  }

 private:
  template <class TQ, class TK, class TV>
  struct staged {
    mirror<TQ> q;
    mirror<TK> k;
    mirror<TV> v;
    mirror<float> o, lse, se, ess;
    mirror<TK> shape_keys;  // the zero keys a shape-double index is built over
    std::optional<cuda_lsh_index> index;
    bool well_formed = true;
  };

  template <class Est, class TQ, class T, class TV, class I>
  void run(const Est& est, const decode_params& p, std::span<const decode_request<TQ, T, TV, I>> batch) const {
    using DR = decode_request<TQ, T, T, cuda_lsh_index>;
    std::vector<std::unique_ptr<staged<TQ, T, T>>> st;
    std::vector<DR> dreq;
    for (const auto& r : batch) {
      auto s = std::make_unique<staged<TQ, T, T>>();
      try {
        lshattn::detail::validate_request_shapes(est, r, p);
      } catch (const lshattn::error&) {
        s->well_formed = false;  // the executor must find the defect itself; see the top of this file
      }
      const bool copy = s->well_formed;
      s->q = mirror<TQ>(r.queries.data, extent(r.queries), copy, stream_);
      s->k = mirror<T>(r.keys.data, extent(r.keys), copy, stream_);
      s->v = mirror<T>(r.values.data, extent(r.values), copy, stream_);
      s->o = mirror<float>(r.output.data, extent(r.output), copy, stream_);
      s->lse = mirror<float>(r.lse.data(), r.lse.size(), copy, stream_);
      s->se = mirror<float>(r.std_error.data, extent(r.std_error), false, stream_);
      s->ess = mirror<float>(r.ess.data(), r.ess.size(), false, stream_);
      DR d;
      d.queries = r.queries;
      d.queries.data = s->q.device;
      d.keys = r.keys;
      d.keys.data = s->k.device;
      d.values = r.values;
      d.values.data = s->v.device;
      d.output = r.output;
      d.output.data = s->o.device;
      d.lse = s->lse.device ? std::span<float>(s->lse.device, r.lse.size()) : std::span<float>();
      d.std_error = r.std_error;
      d.std_error.data = s->se.device;
      d.ess = s->ess.device ? std::span<float>(s->ess.device, r.ess.size()) : std::span<float>();
      d.stats = r.stats;
      if constexpr (Est::uses_index) {
        if (r.index) {
          const auto& hi = *r.index;
          const lsh_params lp{hi.family().bits(), hi.family().tables(), hi.threshold(), hi.family().seed()};
          s->index.emplace(hi.dim(), hi.kv_heads(), lp, hi.size());
          if (hi.built()) {
            if (s->well_formed) {
              s->index->build(d.keys, hi.begin(), hi.end(), stream_);
            } else {
              s->shape_keys = mirror<T>::zeros(hi.kv_heads() * hi.end() * hi.dim(), stream_);
              s->index->build(cache_view<const T>(s->shape_keys.device, hi.kv_heads(), hi.end(), hi.dim()), hi.begin(),
                              hi.end(), stream_);
            }
          }
          d.index = &*s->index;
        }
      }
      st.push_back(std::move(s));
      dreq.push_back(d);
    }
    const auto pol = policy_.on(stream_);
    const std::span<const DR> dspan(dreq);
    if (dspan.empty()) return lshattn::decode(pol, est, p, dspan);
    cuda_workspace ws(pol.workspace_bytes(est, p, dspan));
    lshattn::decode(pol.with(ws), est, p, dspan);
    LSHATTN_CUDA_CHECK(cudaStreamSynchronize(stream_));
    for (const auto& s : st)
      if (!s->well_formed) {
        FAIL_CHECK("the CUDA executor accepted a request that detail::validate_request_shapes rejects; "
                   "its outputs were not copied back");
        return;
      }
    for (std::size_t i = 0; i < batch.size(); ++i) {
      st[i]->o.to_host(batch[i].output.data, stream_);
      st[i]->lse.to_host(batch[i].lse.data(), stream_);
    }
    LSHATTN_CUDA_CHECK(cudaStreamSynchronize(stream_));
  }

  executor::cuda_policy policy_;
  cudaStream_t stream_ = nullptr;
};

}  // namespace lshattn::cuda_conformance
