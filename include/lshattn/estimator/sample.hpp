#pragma once
// The contract between estimators and executors.
//
// Every estimator of the sampled part is a sampling design: for the query
// heads of one KV head it picks a set S of token positions of the sampled
// range and, for each query head h and each i in S, the probability pi_{h,i}
// that i was included for h. The executor then computes, per head, the
// Horvitz-Thompson weighted softmax over S with scores s_i - ln pi_{h,i}:
//   o_hat = sum_S (w_i / pi_i) v_i / sum_S (w_i / pi_i),
//   lse   = ln sum_S w_i / pi_i           (w_i = exp(scale * q . k_i)),
// and merges it with the exactly attended part. The selection is the
// estimator's; reading keys and values (the expensive part) is the executor's.
// A new estimator is therefore one new type with a sample() member.

#include <cmath>
#include <concepts>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <vector>

#include "lshattn/core/view.hpp"
#include "lshattn/index/lsh_index.hpp"

namespace lshattn::estimator {

/// The sample of one KV head group: union ids, and per head ln pi (or -inf
/// where a head did not sample that id). log_pi is [group][ids.size()].
struct sample_set {
  std::vector<std::uint32_t> ids;
  std::vector<double> log_pi;
  std::size_t group = 0;

  void reset(std::size_t g) {
    group = g;
    ids.clear();
    log_pi.clear();
  }
  [[nodiscard]] double log_pi_of(std::size_t head, std::size_t j) const noexcept {
    return log_pi[head * ids.size() + j];
  }
  /// Fill log_pi for ids after ids is final, every head excluded (-inf).
  void allocate_weights() { log_pi.assign(group * ids.size(), -std::numeric_limits<double>::infinity()); }
};

/// What an estimator sees for one KV head: its keys, the sampled range, the
/// group's queries (widened to float), the score scale, the index (null for
/// estimators that do not use one) and a stream id for random designs.
template <class T, class Index = lsh_index<>>
struct sample_context {
  matrix_view<const T> keys;          ///< [tokens, dim] of this KV head
  std::size_t begin = 0, end = 0;     ///< sampled range [begin, end)
  matrix_view<const float> queries;   ///< [group, dim]
  double scale = 1.0;
  const Index* index = nullptr;
  std::size_t kv_head = 0;
  std::uint64_t stream = 0;           ///< distinct per (request, KV head) within one call
  retrieval_workspace* retrieval = nullptr;  ///< scratch for index queries
};

/// An estimator: a sampling design with a sample() member that fills a
/// sample_set from a sample_context, and uses_index telling the executor
/// whether the sampled range comes from the index (true) or from the decode
/// parameters' sink and window (false).
template <class E>
concept sampler = requires(const E& e, const sample_context<float>& ctx, sample_set& out) {
  { E::uses_index } -> std::convertible_to<bool>;
  e.validate();
  e.sample(ctx, out);
};

/// Score of key row k against query q: scale * q . k, in float64.
template <class T>
double score(const float* q, const T* k, std::size_t d, double scale) noexcept {
  double s = 0.0;
  for (std::size_t j = 0; j < d; ++j) s += static_cast<double>(q[j]) * static_cast<double>(to_float(k[j]));
  return s * scale;
}

}  // namespace lshattn::estimator
