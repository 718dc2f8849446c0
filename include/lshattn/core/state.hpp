#pragma once
// The mergeable partial result of attention over a subset of keys: the
// normalised output o (head_dim values) and the natural-log log-sum-exp of the
// (possibly re-weighted) scores. Two states over disjoint key sets merge
// exactly (Milakov & Gimelshein 2018; FlashInfer's merge_state):
//   lse = log(e^a + e^b),  o = (e^a o_1 + e^b o_2) / (e^a + e^b).
// An empty state has lse = -inf and contributes nothing; the merge tests for
// it explicitly so that -inf - -inf never produces a NaN.

#include <cmath>
#include <cstddef>
#include <limits>

#include "lshattn/core/config.hpp"
#include "lshattn/core/params.hpp"

namespace lshattn {

inline constexpr double ln2 = 0.69314718055994530942;

/// Merge state (o2, b) into (o1, a) in place; o1 and o2 have n elements.
template <class T>
LSHATTN_HOST_DEVICE void merge_state(T* o1, T& a, const T* o2, T b, std::size_t n) noexcept {
  if (b == -std::numeric_limits<T>::infinity()) return;
  if (a == -std::numeric_limits<T>::infinity()) {
    for (std::size_t i = 0; i < n; ++i) o1[i] = o2[i];
    a = b;
    return;
  }
  const T mx = a > b ? a : b;
  const T wa = std::exp(a - mx), wb = std::exp(b - mx);
  const T inv = T(1) / (wa + wb);
  for (std::size_t i = 0; i < n; ++i) o1[i] = (wa * o1[i] + wb * o2[i]) * inv;
  a = mx + std::log(wa + wb);
}

/// Convert a natural-log LSE to the requested base.
LSHATTN_HOST_DEVICE double lse_in_base(double lse_natural, lse_base base) noexcept {
  return base == lse_base::base2 ? lse_natural / ln2 : lse_natural;
}

/// Convert an LSE in the given base to natural log.
LSHATTN_HOST_DEVICE double lse_to_natural(double lse, lse_base base) noexcept {
  return base == lse_base::base2 ? lse * ln2 : lse;
}

}  // namespace lshattn
