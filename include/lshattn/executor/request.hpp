#pragma once
// The inputs and outputs of one decode step of one layer for one sequence,
// and their validation, shared by every executor.

#include <cmath>
#include <cstddef>
#include <span>

#include "lshattn/core/error.hpp"
#include "lshattn/core/params.hpp"
#include "lshattn/core/view.hpp"
#include "lshattn/index/lsh_index.hpp"

namespace lshattn {

/// Counters a decode step adds to when the request asks for them: how many
/// keys were touched, for cost reports.
struct decode_stats {
  std::size_t dense_keys = 0;     ///< sum over query heads of keys attended exactly
  std::size_t sampled_keys = 0;   ///< sum over query heads of keys in that head's sample
  std::size_t union_keys = 0;     ///< sum over KV heads of distinct sampled keys (rows read once per group)
  std::size_t sampled_range = 0;  ///< sum over query heads of the sampled range's length
};

/// One sequence's decode step for one layer.
///   queries [q_heads, dim], keys and values [kv_heads, tokens, dim],
///   output [q_heads, dim] (float), lse [q_heads] (float, optional: empty span).
/// q_heads must be a multiple of kv_heads (GQA: query head h reads KV head
/// h / (q_heads / kv_heads)). index is required by estimators that use one.
template <element_type TQ, element_type TK, element_type TV = TK, class Index = lsh_index<>>
struct decode_request {
  matrix_view<const TQ> queries;
  cache_view<const TK> keys;
  cache_view<const TV> values;
  const Index* index = nullptr;
  matrix_view<float> output;
  std::span<float> lse{};
  decode_stats* stats = nullptr;  ///< optional: incremented, never reset
  /// Optional error bars (empty: not computed). std_error [q_heads, dim]: the
  /// estimated standard error of each output element; ess [q_heads]: Kish's
  /// effective sample size of the sampled part. Formulas and caveats:
  /// lshattn/quality/uncertainty.hpp. Computed by the reference executor.
  matrix_view<float> std_error{};
  std::span<float> ess{};
};

namespace detail {

/// The checks that need no access to the data itself (shapes, strides,
/// parameters, the index's state): what every executor, device ones
/// included, runs before anything is written.
template <class Est, class R>
void validate_request_shapes(const Est& est, const R& r, const decode_params& p) {
  est.validate();
  p.validate();
  check_view(r.queries, "queries");
  check_view(r.keys, "keys");
  check_view(r.values, "values");
  check_view(r.output, "output");
  const std::size_t hq = r.queries.rows, hk = r.keys.heads, d = r.queries.cols;
  LSHATTN_REQUIRE(hq >= 1, shape_mismatch, "queries.rows", "queries.rows = ", hq, "; need at least one query head");
  LSHATTN_REQUIRE(d >= 1 && d <= max_head_dim, invalid_argument, "queries.cols", "head_dim = ", d, " must be in 1..",
                  max_head_dim);
  LSHATTN_REQUIRE(hk >= 1 && hq % hk == 0, shape_mismatch, "keys.heads", "keys.heads = ", hk,
                  " must divide queries.rows = ", hq, " (GQA)");
  LSHATTN_REQUIRE(r.values.heads == hk, shape_mismatch, "values.heads", "values.heads = ", r.values.heads,
                  " but keys.heads = ", hk);
  LSHATTN_REQUIRE(r.keys.dim == d, shape_mismatch, "keys.dim", "keys.dim = ", r.keys.dim, " but queries.cols = ", d);
  LSHATTN_REQUIRE(r.values.dim == d, shape_mismatch, "values.dim", "values.dim = ", r.values.dim,
                  " but queries.cols = ", d);
  LSHATTN_REQUIRE(r.keys.tokens >= 1, invalid_state, "keys.tokens", "the KV cache is empty (keys.tokens = 0)");
  LSHATTN_REQUIRE(r.values.tokens == r.keys.tokens, shape_mismatch, "values.tokens", "values.tokens = ",
                  r.values.tokens, " but keys.tokens = ", r.keys.tokens);
  LSHATTN_REQUIRE(r.output.rows == hq && r.output.cols == d, shape_mismatch, "output",
                  "output is ", r.output.rows, " x ", r.output.cols, " but must be ", hq, " x ", d);
  LSHATTN_REQUIRE(r.lse.empty() || r.lse.size() == hq, shape_mismatch, "lse", "lse.size() = ", r.lse.size(),
                  " must be 0 or queries.rows = ", hq);
  LSHATTN_REQUIRE(r.std_error.empty() || (r.std_error.rows == hq && r.std_error.cols == d), shape_mismatch,
                  "std_error", "std_error is ", r.std_error.rows, " x ", r.std_error.cols, " but must be empty or ",
                  hq, " x ", d);
  LSHATTN_REQUIRE(r.ess.empty() || r.ess.size() == hq, shape_mismatch, "ess", "ess.size() = ", r.ess.size(),
                  " must be 0 or queries.rows = ", hq);
  if constexpr (Est::uses_index) {
    LSHATTN_REQUIRE(r.index != nullptr, invalid_argument, "index", "this estimator needs an index (index is null)");
    LSHATTN_REQUIRE(r.index->built(), invalid_state, "index", "the index has not been built");
    LSHATTN_REQUIRE(r.index->kv_heads() == hk, shape_mismatch, "index", "index.kv_heads() = ", r.index->kv_heads(),
                    " but keys.heads = ", hk);
    LSHATTN_REQUIRE(r.index->dim() == d, shape_mismatch, "index", "index.dim() = ", r.index->dim(),
                    " but head_dim = ", d);
    LSHATTN_REQUIRE(r.index->end() <= r.keys.tokens, shape_mismatch, "index", "the index covers tokens up to ",
                    r.index->end(), " but the cache holds ", r.keys.tokens);
    if constexpr (requires { est.m; }) {
      // Here rather than at retrieval, so that a batch whose second request
      // has a smaller L fails before the first request's outputs are written.
      const int L = r.index->family().tables();
      const int m = est.m > 0 ? est.m : r.index->threshold();
      LSHATTN_REQUIRE(m >= 1 && m <= L, invalid_argument, "m", "m = ", m, " must be in 1..L (L = ", L, ")");
    }
  }
}

/// Checks everything a decode step reads before anything is written: the
/// shapes, and that the queries are finite.
template <class Est, class R>
void validate_request(const Est& est, const R& r, const decode_params& p) {
  validate_request_shapes(est, r, p);
  const std::size_t hq = r.queries.rows, d = r.queries.cols;
  for (std::size_t h = 0; h < hq; ++h)
    for (std::size_t j = 0; j < d; ++j)
      LSHATTN_REQUIRE(std::isfinite(to_float(r.queries(h, j))), non_finite, "queries", "query head ", h,
                      " element ", j, " = ", to_float(r.queries(h, j)), "; queries must be finite");
}

/// The sampled range of a request: the index's range for index-based
/// estimators, else [sink, tokens - window) (empty when the cache is short).
template <class Est, class R>
std::pair<std::size_t, std::size_t> sampled_range(const R& r, const decode_params& p) {
  if constexpr (Est::uses_index) {
    return {r.index->begin(), r.index->end()};
  } else {
    const std::size_t n = r.keys.tokens;
    const std::size_t b = std::min(p.sink, n);
    const std::size_t e = n > p.window ? std::max(b, n - p.window) : b;
    return {b, e};
  }
}

}  // namespace detail
}  // namespace lshattn
