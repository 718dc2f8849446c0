// The collision model: u = P(Binomial(L, p) >= m) against a long-double
// reference, the SimHash per-bit law, and u against Monte-Carlo over many
// independent hash families.
#include "lshattn/collision/inclusion.hpp"

#include <doctest/doctest.h>

#include <cmath>
#include <limits>
#include <vector>

#include "lshattn/hash/simhash.hpp"

using namespace lshattn;

namespace {

// Reference: every term C(L, j) p^j q^(L-j) in long double from logl/expl,
// then the upper tails summed from the smallest term up. q = 1 - p is exact
// in long double for a double p. Returns u_m for m = 0..L (u_0 = 1).
std::vector<long double> reference_tails(double p, int L) {
  const long double pl = p, ql = 1.0L - pl;
  const long double lp = std::log(pl), lq = std::log(ql);
  std::vector<long double> term(static_cast<std::size_t>(L) + 1);
  long double lc = 0.0L;  // ln C(L, j)
  for (int j = 0; j <= L; ++j) {
    if (j > 0) lc += std::log(static_cast<long double>(L - j + 1) / j);
    term[static_cast<std::size_t>(j)] = std::exp(lc + j * lp + (L - j) * lq);
  }
  std::vector<long double> tail(static_cast<std::size_t>(L) + 2, 0.0L);
  for (int j = L; j >= 0; --j) tail[static_cast<std::size_t>(j)] = tail[static_cast<std::size_t>(j) + 1] + term[static_cast<std::size_t>(j)];
  return tail;
}

std::vector<double> p_grid() {
  std::vector<double> ps;
  for (double e = -12; e <= -0.5; e += 0.25) ps.push_back(std::pow(10.0, e));  // 1e-12 .. 0.3
  for (double x : {0.4, 0.5, 0.6, 0.75, 0.9}) ps.push_back(x);
  for (double e = -1.25; e >= -12; e -= 0.25) ps.push_back(1.0 - std::pow(10.0, e));  // .. 1 - 1e-12
  ps.push_back(1e-12);
  ps.push_back(1.0 - 1e-12);
  return ps;
}

}  // namespace

TEST_CASE("inclusion_probability: relative error < 1e-9 against long double, p in [1e-12, 1 - 1e-12], every m") {
  double worst = 0.0;
  std::size_t checked = 0, bad = 0;
  for (int L : {1, 2, 10, 150, 1024}) {
    for (double p : p_grid()) {
      const auto tail = reference_tails(p, L);
      for (int m = 1; m <= L; ++m) {
        const long double ref = tail[static_cast<std::size_t>(m)];
        const double u = collision::inclusion_probability(p, L, m);
        ++checked;
        if (ref < 1e-290L) {
          // Below double's normal range the value cannot carry relative
          // accuracy; it must still be tiny and non-negative.
          bad += !(u >= 0.0 && u <= 1e-289);
          continue;
        }
        const double rel = static_cast<double>(std::fabs((u - ref) / ref));
        worst = std::max(worst, rel);
        if (rel >= 1e-9) {
          ++bad;
          if (bad < 10) MESSAGE("L " << L << " m " << m << " p " << p << " u " << u << " ref " << static_cast<double>(ref));
        }
      }
    }
  }
  CHECK(bad == 0);
  MESSAGE("worst relative error " << worst << " over " << checked << " (L, p, m)");
  CHECK(collision::inclusion_probability(0.0, 10, 1) == 0.0);
  CHECK(collision::inclusion_probability(1.0, 10, 10) == 1.0);
  CHECK(collision::inclusion_probability(-0.5, 10, 1) == 0.0);
}

TEST_CASE("inclusion_probability: m = 2 closed form 1 - q^L - L p q^(L-1) at moderate p") {
  for (int L : {2, 10, 150, 300})
    for (double p : {1e-3, 0.01, 0.05, 0.2, 0.5, 0.8}) {
      const long double q = 1.0L - p;
      const long double ref = 1.0L - std::pow(q, L) - L * p * std::pow(q, L - 1);
      CHECK(std::fabs(collision::inclusion_probability(p, L, 2) - ref) <= 1e-12L * ref);
    }
  // method.md: at cos = 0 with K = 10, L = 150, m = 2: p = 2^-10, u = 0.0097.
  CHECK(collision::inclusion_probability_at(0.0, 10, 150, 2) == doctest::Approx(0.0097).epsilon(0.01));
  CHECK(collision::log_binomial(150, 2) == doctest::Approx(std::log(11175.0)).epsilon(1e-15));
  CHECK(collision::log_binomial(10, 0) == 0.0);
}

TEST_CASE("collision model: per-bit law, clamping and zero norms") {
  CHECK(collision::bit_collision_probability(1.0) == 1.0);
  CHECK(collision::bit_collision_probability(-1.0) == 0.0);
  CHECK(collision::bit_collision_probability(0.0) == 0.5);
  CHECK(collision::bit_collision_probability(0.5) == doctest::Approx(2.0 / 3.0).epsilon(1e-15));
  CHECK(collision::bit_collision_probability(1.0000001) == 1.0);  // clamped, no NaN from acos
  CHECK(collision::bit_collision_probability(-1.5) == 0.0);
  CHECK(collision::table_collision_probability(0.5, 10) == std::ldexp(1.0, -10));
  CHECK(collision::cosine(3.0, 1.0, 2.0) == 1.0);    // rounding past 1
  CHECK(collision::cosine(-3.0, 1.0, 2.0) == -1.0);
  CHECK(collision::cosine(1.0, 2.0, 2.0) == 0.25);
  CHECK(collision::cosine(0.0, 0.0, 5.0) == 0.0);    // zero vector: every bit agrees with probability 1/2
  CHECK(collision::cosine(1.0, 5.0, 0.0) == 0.0);
  CHECK(collision::cosine(0.0, 0.0, 0.0) == 0.0);
  // u is monotone in the cosine and in m.
  double prev = 0.0;
  for (double c = -1.0; c <= 1.0; c += 0.01) {
    const double u = collision::inclusion_probability_at(c, 8, 40, 2);
    CHECK(u >= prev);
    prev = u;
  }
  for (int m = 1; m < 40; ++m)
    CHECK(collision::inclusion_probability(0.1, 40, m + 1) <= collision::inclusion_probability(0.1, 40, m));
  const hash::simhash<> f(8, 6, 3, 1);
  CHECK(f.table_collision_probability(0.3) == collision::table_collision_probability(collision::bit_collision_probability(0.3), 6));
}

TEST_CASE("u matches Monte-Carlo over independent hash families") {
  // A fixed pair (x, y) at a chosen angle; T families with different seeds.
  // The indicator [collide in >= m tables] is Bernoulli(u) per family,
  // independent across seeds, so the frequency has SE sqrt(u (1 - u) / T);
  // checked at 4 SE. The per-bit agreement frequency over T * K * L bits has
  // SE sqrt(P (1 - P) / (T K L)).
  const std::size_t d = 3, T = 3000;  // the per-bit law 1 - theta/pi holds in any dimension >= 2
  struct setting {
    double cos;
    int K, L, m;
  };
  for (const setting s : {setting{0.5, 4, 10, 2}, setting{0.8, 6, 8, 1}, setting{0.0, 2, 12, 4}, setting{0.95, 8, 5, 3}}) {
    INFO("cos " << s.cos << " K " << s.K << " L " << s.L << " m " << s.m);
    std::vector<float> x(d, 0.0f), y(d, 0.0f);
    x[0] = 1.0f;
    y[0] = static_cast<float>(s.cos);
    y[1] = static_cast<float>(std::sqrt(1.0 - s.cos * s.cos));
    const double c = collision::cosine(static_cast<double>(y[0]), 1.0, std::hypot(static_cast<double>(y[0]), static_cast<double>(y[1])));
    const double u = collision::inclusion_probability_at(c, s.K, s.L, s.m);
    const double P = collision::bit_collision_probability(c);
    std::size_t hits = 0, bit_agree = 0;
    std::vector<std::uint32_t> cx(static_cast<std::size_t>(s.L)), cy(cx.size());
    for (std::size_t t = 0; t < T; ++t) {
      const hash::simhash<> f(d, s.K, s.L, 0x9000 + t);
      f.hash(x.data(), cx.data());
      f.hash(y.data(), cy.data());
      int tables = 0;
      for (std::size_t l = 0; l < cx.size(); ++l) {
        tables += cx[l] == cy[l];
        bit_agree += static_cast<std::size_t>(s.K - __builtin_popcount(cx[l] ^ cy[l]));
      }
      hits += tables >= s.m;
    }
    const double freq = static_cast<double>(hits) / T;
    CHECK(std::fabs(freq - u) <= 4.0 * std::sqrt(u * (1 - u) / T));
    const double bits = static_cast<double>(T) * s.K * s.L;
    CHECK(std::fabs(static_cast<double>(bit_agree) / bits - P) <= 4.0 * std::sqrt(P * (1 - P) / bits));
  }
}
