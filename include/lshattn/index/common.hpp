#pragma once
// What the index types (lsh_index, cpu_index and the CUDA index) share: the
// input checks, so that each message has one wording whichever index throws
// it, and the centring mean, so that the host indexes hash the same centred
// keys (the CUDA index reproduces its summation order on the device). Host
// code with no dependency beyond core/, so that a .cu translation unit can
// include it as well.

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <vector>

#include "lshattn/core/dtype.hpp"
#include "lshattn/core/error.hpp"
#include "lshattn/core/view.hpp"

namespace lshattn::detail {

/// kv_heads, if it is at least 1 (returned for use in a member initialiser).
inline std::size_t check_kv_heads(std::size_t kv_heads) {
  LSHATTN_REQUIRE(kv_heads >= 1, invalid_argument, "kv_heads", "kv_heads = ", kv_heads, " must be >= 1");
  return kv_heads;
}

/// tail_fraction (of set_merge_policy) lies in [0, 1].
inline void check_tail_fraction(double tail_fraction) {
  LSHATTN_REQUIRE(tail_fraction >= 0.0 && tail_fraction <= 1.0, invalid_argument, "tail_fraction",
                  "tail_fraction = ", tail_fraction, " must be in [0, 1]");
}

/// m, the collision threshold, lies in 1..L for L tables.
inline void check_threshold(int m, int L) {
  LSHATTN_REQUIRE(m >= 1 && m <= L, invalid_argument, "m", "m = ", m, " must be in 1..L (L = ", L, ")");
}

/// Token positions [begin, end) lie within a cache of `tokens` tokens and
/// fit the 32-bit token ids of the tables.
inline void check_index_range(std::size_t begin, std::size_t end, std::size_t tokens) {
  LSHATTN_REQUIRE(begin <= end && end <= tokens, invalid_argument, "range", "[begin, end) = [", begin, ", ", end,
                  ") must lie within the cache's ", tokens, " tokens");
  LSHATTN_REQUIRE(end <= 0xffffffffu, invalid_argument, "end", "end = ", end, " exceeds 2^32 - 1 token positions");
}

/// new_end grows an index that covers tokens up to `end` within a cache of
/// `tokens` tokens, and fits the 32-bit token ids of the tables.
inline void check_append_end(std::size_t new_end, std::size_t end, std::size_t tokens) {
  LSHATTN_REQUIRE(new_end >= end && new_end <= tokens, invalid_argument, "new_end", "new_end = ", new_end,
                  " must lie in [end() = ", end, ", keys.tokens = ", tokens, "]");
  LSHATTN_REQUIRE(new_end <= 0xffffffffu, invalid_argument, "new_end", "new_end = ", new_end,
                  " exceeds 2^32 - 1 token positions");
}

/// keys is a valid view with the index's number of KV heads and head_dim.
template <class T>
void check_index_keys(const cache_view<const T>& keys, std::size_t heads, std::size_t dim) {
  check_view(keys, "keys");
  LSHATTN_REQUIRE(keys.heads == heads, shape_mismatch, "keys.heads", "keys.heads = ", keys.heads,
                  " but the index has kv_heads = ", heads);
  LSHATTN_REQUIRE(keys.dim == dim, shape_mismatch, "keys.dim", "keys.dim = ", keys.dim,
                  " but the index has head_dim = ", dim);
}

/// Every key of every head at tokens [begin, end) is finite: a NaN or Inf
/// would hash to an arbitrary bucket and poison the centring mean.
template <class T>
void check_finite_keys(const cache_view<const T>& keys, std::size_t begin, std::size_t end) {
  for (std::size_t h = 0; h < keys.heads; ++h)
    for (std::size_t t = begin; t < end; ++t) {
      const T* r = keys.row(h, t);
      for (std::size_t j = 0; j < keys.dim; ++j)
        LSHATTN_REQUIRE(std::isfinite(to_float(r[j])), non_finite, "keys", "key of head ", h, " at token ", t,
                        " has element ", j, " = ", to_float(r[j]), "; indexed keys must be finite");
    }
}

/// Mean of rows [begin, end) of one head's keys into out[keys.cols]: float64
/// sums over chunks of 256 tokens in order, then the chunk sums in order,
/// rounded to float once. A fixed order, so that an executor summing the
/// chunks in parallel (the CUDA index) reproduces it bit for bit.
template <class T>
void chunked_key_mean(const matrix_view<const T>& keys, std::size_t begin, std::size_t end, float* out) {
  const std::size_t d = keys.cols;
  std::vector<double> total(d, 0.0), chunk(d);
  for (std::size_t c = begin; c < end; c += 256) {
    std::fill(chunk.begin(), chunk.end(), 0.0);
    for (std::size_t t = c; t < std::min(end, c + 256); ++t) {
      const T* r = keys.row(t);
      for (std::size_t j = 0; j < d; ++j) chunk[j] += static_cast<double>(to_float(r[j]));
    }
    for (std::size_t j = 0; j < d; ++j) total[j] += chunk[j];
  }
  const double n = static_cast<double>(std::max<std::size_t>(end - begin, 1));
  for (std::size_t j = 0; j < d; ++j) out[j] = static_cast<float>(total[j] / n);
}

}  // namespace lshattn::detail
