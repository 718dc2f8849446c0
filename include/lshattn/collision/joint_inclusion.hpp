#pragma once
// Joint inclusion of two keys under MagicPIG's m-of-L rule with SimHash: the
// probability pi_ab that keys a and b are BOTH retrieved for query q, which
// the Horvitz-Thompson variance of a non-Poisson design needs
// (quality/uncertainty.hpp). Inclusions are correlated because a and b are
// hashed with the same hyperplanes: keys close to each other collide together.
//
// One Gaussian hyperplane puts q, a and b on one side with probability
//   P3 = 1 - (theta_qa + theta_qb + theta_ab) / (2 pi)
// (Goemans & Williamson, JACM 42(6), 1995, use it for MAX DICUT). Proof: a
// hyperplane separates a pair with probability theta / pi (Charikar's law),
// and one that does not leave all three on one side separates exactly two of
// the three pairs, so P(not all on one side) = (sum of the three) / 2.
// A table of K independent hyperplanes gives, per table,
//   both      A = P3^K,         a only  B = p_a - A,
//   b only    C = p_b - A,      neither D = 1 - p_a - p_b + A,
// with p = P^K the marginals (inclusion.hpp), and the L tables are independent,
// so (C_a, C_b), the numbers of tables where a and b collide with q, is a sum
// of L independent four-outcome draws. Then
//   pi_ab = P(C_a >= m, C_b >= m) = pi_a + pi_b - 1 + P(C_a < m, C_b < m),
// the last term a finite multinomial sum over (x both, y a only, z b only)
// with x + y < m and x + z < m. That form subtracts numbers near 1: its
// absolute error is about L ulps (the terms carry D^(L - ...), whose relative
// error is L times D's), so where the result falls below 1e-5 L (relative
// error could exceed about 5e-11), and for m > 8 where the sum has too many
// terms, pi_ab comes
// instead from a dynamic programme over the tables on the capped counts
// (min(C_a, m), min(C_b, m)), whose terms are all positive: relative error
// about L ulps at any size, O(L m^2) work. The result is finally clamped to the
// Frechet bounds [max(0, pi_a + pi_b - 1), min(pi_a, pi_b)], which rounding in
// the angles could otherwise leave by an ulp.

#include <algorithm>
#include <cmath>
#include <vector>

#include "lshattn/collision/inclusion.hpp"

namespace lshattn::collision {

/// x^n for n >= 0 by squaring: about 2 log2(n) roundings, several times
/// faster than std::pow, which matters at one call per sampled pair.
inline double integer_power(double x, int n) noexcept {
  double r = 1.0;
  for (; n > 0; n >>= 1, x *= x)
    if (n & 1) r *= x;
  return r;
}

/// Probability that one Gaussian hyperplane through the origin leaves q, a and
/// b on one side, from the three pairwise angles (radians). Clamped to the
/// bounds that the per-pair probabilities imply (valid angles, which satisfy
/// the spherical triangle inequalities, meet them exactly).
inline double triple_bit_collision_probability_of_angles(double t_qa, double t_qb, double t_ab) noexcept {
  const double p3 = 1.0 - (t_qa + t_qb + t_ab) / (2.0 * pi);
  const double pa = 1.0 - t_qa / pi, pb = 1.0 - t_qb / pi;
  return std::clamp(p3, std::max(0.0, pa + pb - 1.0), std::min(pa, pb));
}

/// The same from the three pairwise cosines.
inline double triple_bit_collision_probability(double cos_qa, double cos_qb, double cos_ab) noexcept {
  return triple_bit_collision_probability_of_angles(std::acos(std::clamp(cos_qa, -1.0, 1.0)),
                                                    std::acos(std::clamp(cos_qb, -1.0, 1.0)),
                                                    std::acos(std::clamp(cos_ab, -1.0, 1.0)));
}

/// One table's four outcomes for the pair (a, b) against q.
struct table_outcomes {
  double both = 0.0, a_only = 0.0, b_only = 0.0, neither = 1.0;
};

/// The four outcomes of a K-bit SimHash table from the angles of a and b to
/// q, the angle between them and the per-table marginals p_a, p_b (P^K, as
/// table_collision_probability computes them). For one query and many pairs
/// the per-key angle and marginal are computed once.
inline table_outcomes table_outcomes_of_angles(double t_qa, double t_qb, double t_ab, double pa, double pb,
                                               int K) noexcept {
  const double A = std::clamp(integer_power(triple_bit_collision_probability_of_angles(t_qa, t_qb, t_ab), K),
                              std::max(0.0, pa + pb - 1.0), std::min(pa, pb));
  return {A, std::max(0.0, pa - A), std::max(0.0, pb - A), std::max(0.0, (1.0 - pa) - (pb - A))};
}

/// The four outcomes of a K-bit SimHash table from the three cosines.
inline table_outcomes table_outcomes_at(double cos_qa, double cos_qb, double cos_ab, int K) noexcept {
  const double ca = std::clamp(cos_qa, -1.0, 1.0), cb = std::clamp(cos_qb, -1.0, 1.0);
  return table_outcomes_of_angles(std::acos(ca), std::acos(cb), std::acos(std::clamp(cos_ab, -1.0, 1.0)),
                                  table_collision_probability(bit_collision_probability(ca), K),
                                  table_collision_probability(bit_collision_probability(cb), K), K);
}

/// P(C_a >= m, C_b >= m) by a dynamic programme over the L tables on the
/// capped counts: positive terms only, so accurate however small the result.
/// F is double in the library, long double in the tests' reference.
template <class F>
F joint_inclusion_by_tables(F both, F a_only, F b_only, F neither, int L, int m) {
  const std::size_t w = static_cast<std::size_t>(m) + 1;
  std::vector<F> cur(w * w, F(0)), nxt(w * w);
  cur[0] = F(1);
  for (int l = 0; l < L; ++l) {
    std::fill(nxt.begin(), nxt.end(), F(0));
    for (std::size_t i = 0; i < w; ++i)
      for (std::size_t j = 0; j < w; ++j) {
        const F p = cur[i * w + j];
        if (p == F(0)) continue;
        const std::size_t i1 = std::min(i + 1, w - 1), j1 = std::min(j + 1, w - 1);
        nxt[i1 * w + j1] += both * p;
        nxt[i1 * w + j] += a_only * p;
        nxt[i * w + j1] += b_only * p;
        nxt[i * w + j] += neither * p;
      }
    cur.swap(nxt);
  }
  return cur[w * w - 1];
}

/// P(C_a < m, C_b < m): the multinomial sum over x + y < m, x + z < m (and
/// x + y + z <= L). Needs 1 <= m <= 8 (at most 204 terms, no overflow in the
/// coefficients for L <= max_tables).
inline double both_below_probability(const table_outcomes& t, int L, int m) noexcept {
  // D^(L - x - y - z) for the at most 2m - 1 exponents used: one power, then products.
  const int top = std::min(L, 2 * m - 2), lo = L - top;
  double dpow[15];
  dpow[0] = integer_power(t.neither, lo);
  for (int r = 1; r <= top; ++r) dpow[r] = dpow[r - 1] * t.neither;  // dpow[r] = D^(lo + r)
  double sum = 0.0;
  double ax = 1.0, cx = 1.0;  // A^x, C(L, x)
  for (int x = 0; x < m && x <= L; ++x) {
    double by = 1.0, cy = 1.0;  // B^y, C(L - x, y)
    for (int y = 0; x + y < m && x + y <= L; ++y) {
      double cz_pow = 1.0, cz = 1.0;  // C^z, C(L - x - y, z)
      for (int z = 0; x + z < m && x + y + z <= L; ++z) {
        sum += cx * cy * cz * ax * by * cz_pow * dpow[L - x - y - z - lo];
        cz *= static_cast<double>(L - x - y - z) / static_cast<double>(z + 1);
        cz_pow *= t.b_only;
      }
      cy *= static_cast<double>(L - x - y) / static_cast<double>(y + 1);
      by *= t.a_only;
    }
    cx *= static_cast<double>(L - x) / static_cast<double>(x + 1);
    ax *= t.both;
  }
  return sum;
}

/// pi_ab from one table's outcomes and the marginal inclusions pi_a, pi_b
/// (inclusion_probability of p_a = both + a_only and p_b = both + b_only).
inline double joint_inclusion_probability(const table_outcomes& t, int L, int m, double pi_a, double pi_b) {
  const double lo = std::max(0.0, pi_a + pi_b - 1.0), hi = std::min(pi_a, pi_b);
  double r = -1.0;
  if (m <= 8) r = pi_a + pi_b - 1.0 + both_below_probability(t, L, m);
  if (!(r >= 1e-5 * L)) r = joint_inclusion_by_tables(t.both, t.a_only, t.b_only, t.neither, L, m);
  return std::clamp(r, lo, hi);
}

/// pi_ab for keys at cosines cos_qa, cos_qb to the query and cos_ab to each
/// other, under K bits, L tables and threshold m.
inline double joint_inclusion_probability_at(double cos_qa, double cos_qb, double cos_ab, int K, int L, int m) {
  const table_outcomes t = table_outcomes_at(cos_qa, cos_qb, cos_ab, K);
  return joint_inclusion_probability(t, L, m, inclusion_probability(t.both + t.a_only, L, m),
                                     inclusion_probability(t.both + t.b_only, L, m));
}

}  // namespace lshattn::collision
