#pragma once
// Standard normal variates that are bit-identical everywhere. std::normal_
// distribution is implementation-defined, and libm's log/sin/cos may differ in
// the last bit between platforms, so the Box-Muller transform here uses its
// own log and sin/cos built only from IEEE-754 operations that are correctly
// rounded by the standard (+, -, *, /, sqrt, fma). Every multiply-add is an
// explicit std::fma, so floating-point contraction cannot change the result.
// Accuracy is about 1e-16 relative; reproducibility is exact.

#include <cmath>
#include <cstdint>
#include <utility>

#include "lshattn/random/philox.hpp"

namespace lshattn::random {

namespace detail {
inline constexpr double inv_odd(int k) { return 1.0 / (2 * k + 1); }
inline constexpr double inv_fact(int n) {
  double f = 1.0;
  for (int i = 2; i <= n; ++i) f *= i;
  return 1.0 / f;
}
}  // namespace detail

/// Natural log of x in (0, +inf), to about 1 ulp, reproducible bit for bit.
inline double portable_log(double x) noexcept {
  int e = 0;
  double m = std::frexp(x, &e);  // exact: x = m * 2^e, m in [0.5, 1)
  if (m < 0.70710678118654752440) {
    m *= 2.0;
    --e;
  }
  const double s = (m - 1.0) / (m + 1.0);  // |s| <= 0.1716
  const double z = s * s;
  double p = detail::inv_odd(13);
  for (int k = 12; k >= 0; --k) p = std::fma(p, z, detail::inv_odd(k));
  constexpr double ln2_hi = 0x1.62e42fefa3800p-1;  // trailing zeros: e * ln2_hi is exact
  constexpr double ln2_lo = 0x1.ef35793c76730p-45;
  const double de = static_cast<double>(e);
  return std::fma(de, ln2_hi, std::fma(2.0 * s, p, de * ln2_lo));
}

/// (cos(2 pi u), sin(2 pi u)) for u in [0, 1), reproducible bit for bit.
inline std::pair<double, double> portable_cos_sin_2pi(double u) noexcept {
  const double t = u * 4.0;  // exact
  const int quadrant = static_cast<int>(t);
  const double f = t - quadrant;  // exact, in [0, 1)
  const double x = (f - 0.5) * 1.57079632679489661923;  // |x| <= pi/4; angle = pi/4 + x
  const double z = x * x;
  double sp = detail::inv_fact(21);
  for (int n = 19; n >= 3; n -= 2) sp = std::fma(sp, z, ((n / 2) % 2 ? -1.0 : 1.0) * detail::inv_fact(n));
  const double sx = std::fma(x * z, sp, x);
  double cp = detail::inv_fact(20);
  for (int n = 18; n >= 2; n -= 2) cp = std::fma(cp, z, ((n / 2) % 2 ? -1.0 : 1.0) * detail::inv_fact(n));
  const double cx = std::fma(z, cp, 1.0);
  constexpr double r = 0.70710678118654752440;
  const double ca = (cx - sx) * r;  // cos(pi/4 + x)
  const double sa = (cx + sx) * r;  // sin(pi/4 + x)
  switch (quadrant & 3) {
    case 0: return {ca, sa};
    case 1: return {-sa, ca};
    case 2: return {-ca, -sa};
    default: return {sa, -ca};
  }
}

/// Two independent N(0, 1) variates from one Philox block (Box-Muller).
inline std::pair<double, double> normal_pair(const philox_block& b) noexcept {
  const double u1 = uniform53(b[0], b[1]) + 0x1p-53;  // (0, 1]: log stays finite
  const double u2 = uniform53(b[2], b[3]);
  const double radius = std::sqrt(-2.0 * portable_log(u1));
  const auto [c, s] = portable_cos_sin_2pi(u2);
  return {radius * c, radius * s};
}

/// Element `index` of the N(0, 1) sequence (seed, stream): a pure function,
/// so any element of any stream can be computed in any order.
inline double normal_at(std::uint64_t seed, std::uint64_t stream, std::uint64_t index) noexcept {
  const std::uint64_t pair = index >> 1;
  const philox_block b = philox4x32({static_cast<std::uint32_t>(pair), static_cast<std::uint32_t>(pair >> 32),
                                     static_cast<std::uint32_t>(stream), static_cast<std::uint32_t>(stream >> 32)},
                                    key_of(seed));
  const auto z = normal_pair(b);
  return (index & 1) ? z.second : z.first;
}

/// Fill out[0..count) with elements [first, first + count) of the sequence
/// (seed, stream), rounded to float. One Philox call per two variates.
inline void fill_normal(float* out, std::size_t count, std::uint64_t seed, std::uint64_t stream,
                        std::uint64_t first = 0) noexcept {
  std::size_t i = 0;
  if ((first & 1) && count) out[i++] = static_cast<float>(normal_at(seed, stream, first));
  for (; i + 1 < count; i += 2) {
    const std::uint64_t pair = (first + i) >> 1;
    const auto z = normal_pair(philox4x32(
        {static_cast<std::uint32_t>(pair), static_cast<std::uint32_t>(pair >> 32), static_cast<std::uint32_t>(stream),
         static_cast<std::uint32_t>(stream >> 32)},
        key_of(seed)));
    out[i] = static_cast<float>(z.first);
    out[i + 1] = static_cast<float>(z.second);
  }
  if (i < count) out[i] = static_cast<float>(normal_at(seed, stream, first + i));
}

}  // namespace lshattn::random
