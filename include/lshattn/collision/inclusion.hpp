#pragma once
// The collision model of SimHash (Charikar 2002) and the inclusion probability
// of MagicPIG's m-of-L sampling rule (Chen et al. 2024, eq. for u_i):
//   per bit    P = 1 - theta / pi,
//   per table  p = P^K,
//   inclusion  u = P(Binomial(L, p) >= m).
// u is evaluated without cancellation from p = 1e-12 to 1 - 1e-12: the tail
// that is summed is always the one whose terms shrink away from m, so every
// term is positive and the sum is accurate to a few ulps.

#include <cfloat>
#include <cmath>

#include "lshattn/core/config.hpp"

namespace lshattn::collision {

inline constexpr double pi = 3.14159265358979323846;

/// Cosine of the angle between two vectors from their dot product and norms,
/// clamped to [-1, 1]. A zero vector's SimHash code is all zeros whatever the
/// hyperplanes, so each bit agrees with probability exactly 1/2: cosine 0.
LSHATTN_HOST_DEVICE double cosine(double dot, double norm_a, double norm_b) noexcept {
  const double den = norm_a * norm_b;
  if (!(den > 0.0)) return 0.0;
  const double c = dot / den;
  return c > 1.0 ? 1.0 : (c < -1.0 ? -1.0 : c);  // NaN-free because den > 0 and dot finite
}

/// Probability that one SimHash bit of two vectors agrees: 1 - theta / pi.
LSHATTN_HOST_DEVICE double bit_collision_probability(double cos_theta) noexcept {
  const double c = cos_theta < -1.0 ? -1.0 : (cos_theta > 1.0 ? 1.0 : cos_theta);
  return 1.0 - std::acos(c) / pi;
}

/// Probability that a K-bit table code collides: P^K.
LSHATTN_HOST_DEVICE double table_collision_probability(double bit_p, int K) noexcept { return std::pow(bit_p, K); }

/// ln C(L, j) by a sum of logs: exact enough (1e-15) and thread-safe, unlike lgamma's signgam.
LSHATTN_HOST_DEVICE double log_binomial(int L, int j) noexcept {
  j = j < L - j ? j : L - j;
  double s = 0.0;
  for (int i = 0; i < j; ++i) s += std::log(static_cast<double>(L - i) / static_cast<double>(i + 1));
  return s;
}

/// u = P(Binomial(L, p) >= m) for 0 <= p <= 1, 1 <= m <= L.
LSHATTN_HOST_DEVICE double inclusion_probability(double p, int L, int m) noexcept {
  if (!(p > 0.0)) return 0.0;
  if (p >= 1.0) return 1.0;
  const double q = 1.0 - p;
  const double lp = std::log(p), lq = std::log1p(-p), ratio = p / q;
  const double mean = static_cast<double>(L) * p;
  if (static_cast<double>(m) > mean) {
    // Upper tail: terms j = m..L decrease (m is past the mode), sum them.
    double term = std::exp(log_binomial(L, m) + m * lp + (L - m) * lq);
    double sum = 0.0;
    for (int j = m; j <= L && term > 0.0; ++j) {
      sum += term;
      if (term < sum * 1e-18) break;
      term *= static_cast<double>(L - j) / static_cast<double>(j + 1) * ratio;
    }
    return sum < 1.0 ? sum : 1.0;
  }
  // Lower tail: terms j = m-1 down to 0 decrease; u = 1 - lower >= ~0.4 here.
  double term = std::exp(log_binomial(L, m - 1) + (m - 1) * lp + (L - m + 1) * lq);
  double lower = 0.0;
  for (int j = m - 1; j >= 0 && term > 0.0; --j) {
    lower += term;
    if (term < lower * 1e-18) break;
    term *= static_cast<double>(j) / static_cast<double>(L - j + 1) / ratio;
  }
  return 1.0 - lower > 0.0 ? 1.0 - lower : 0.0;
}

/// u for a key at the given cosine to the query, under K bits and L tables.
LSHATTN_HOST_DEVICE double inclusion_probability_at(double cos_theta, int K, int L, int m) noexcept {
  return inclusion_probability(table_collision_probability(bit_collision_probability(cos_theta), K), L, m);
}

/// ln u at a cosine, floored at ln DBL_MIN (the floor estimator::lsh applies,
/// so that a key whose u underflows keeps a finite, huge weight).
LSHATTN_HOST_DEVICE double log_inclusion_probability_at(double cos_theta, int K, int L, int m) noexcept {
  const double u = inclusion_probability_at(cos_theta, K, L, m);
  return std::log(u > DBL_MIN ? u : DBL_MIN);
}

}  // namespace lshattn::collision
