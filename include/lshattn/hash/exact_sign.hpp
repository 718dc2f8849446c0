#pragma once
// The sign of a dot product of two float vectors, exactly. A SimHash bit is
// defined as [x . w > 0] in exact arithmetic, so that every executor - float64
// reference, fp32 SIMD, GEMM, GPU tensor cores - produces the same codes bit
// for bit: each computes fast, and re-decides only the rare bits whose value
// lies within its rounding-error bound, with this function.

#include <cmath>
#include <cstddef>

namespace lshattn::hash {

namespace detail {
// Knuth's TwoSum: a + b = s + err exactly.
inline void two_sum(double a, double b, double& s, double& err) noexcept {
  s = a + b;
  const double bv = s - a;
  const double av = s - bv;
  err = (a - av) + (b - bv);
}
}  // namespace detail

/// Exact sign (-1, 0, +1) of sum_i x[i] * w[i]. Each float product is exact
/// in double (48 significant bits); the sum is kept as a non-overlapping
/// expansion (Shewchuk 1997, Grow-Expansion with zero elimination) whose
/// largest component carries the sign.
inline int exact_dot_sign(const float* x, const float* w, std::size_t n) noexcept {
  // Non-overlapping components of doubles within [2^-298, 2^256] cover distinct
  // bit ranges, so at most ~560 of them can be non-zero.
  double e[640];
  std::size_t len = 0;
  for (std::size_t i = 0; i < n; ++i) {
    double q = static_cast<double>(x[i]) * static_cast<double>(w[i]);
    std::size_t out = 0;
    for (std::size_t j = 0; j < len; ++j) {
      double s, err;
      detail::two_sum(q, e[j], s, err);
      q = s;
      if (err != 0.0) e[out++] = err;
    }
    if (q != 0.0 && out < 640) e[out++] = q;
    len = out;
  }
  for (std::size_t j = len; j-- > 0;)
    if (e[j] != 0.0) return e[j] > 0.0 ? 1 : -1;
  return 0;
}

/// [x . w > 0] decided exactly, fast in the common case: a float64 dot
/// product whose magnitude exceeds its rounding bound gamma_n * sum |x_i w_i|
/// (Higham, Accuracy and Stability, eq. 3.5) already has the exact sign.
inline bool dot_positive(const float* x, const float* w, std::size_t n) noexcept {
  double s = 0.0, a = 0.0;
  for (std::size_t i = 0; i < n; ++i) {
    const double p = static_cast<double>(x[i]) * static_cast<double>(w[i]);
    s += p;
    a += std::fabs(p);
  }
  const double u = 0x1p-53 * static_cast<double>(n + 1);
  const double bound = u / (1.0 - u) * a;
  if (std::fabs(s) > bound) return s > 0.0;
  return exact_dot_sign(x, w, n) > 0;
}

}  // namespace lshattn::hash
