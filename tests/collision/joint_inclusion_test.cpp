// Joint inclusion of two keys (collision/joint_inclusion.hpp): the
// three-vector hyperplane law against Monte-Carlo, pi_ab's closed form against
// a long-double dynamic programme over the tables, and pi_ab against
// Monte-Carlo over independent SimHash families.
#include "lshattn/collision/joint_inclusion.hpp"

#include <doctest/doctest.h>

#include <cmath>
#include <cstdint>
#include <vector>

#include "lshattn/hash/simhash.hpp"
#include "lshattn/random/normal.hpp"

using namespace lshattn;

namespace {

constexpr long double pi_l = 3.14159265358979323846264338327950288L;

// q, a, b in R^3 with a at angle alpha from q, b at angle beta from q, and b's
// component orthogonal to q rotated by phi from a's: every valid triple of
// angles arises this way.
struct triple {
  double qa, qb, ab;  // cosines
};
triple make_triple(double alpha, double beta, double phi) {
  return {std::cos(alpha), std::cos(beta),
          std::cos(alpha) * std::cos(beta) + std::sin(alpha) * std::sin(beta) * std::cos(phi)};
}
std::vector<double> vectors_of(double alpha, double beta, double phi, std::size_t d) {
  std::vector<double> v(3 * d, 0.0);  // rows q, a, b
  v[0] = 1.0;
  v[d + 0] = std::cos(alpha);
  v[d + 1] = std::sin(alpha);
  v[2 * d + 0] = std::cos(beta);
  v[2 * d + 1] = std::sin(beta) * std::cos(phi);
  v[2 * d + 2] = std::sin(beta) * std::sin(phi);
  return v;
}

// The reference: the four outcomes from the same double cosines, evaluated in
// long double, then the dynamic programme in long double.
long double reference_pi_ab(const triple& t, int K, int L, int m) {
  const long double tqa = std::acos(static_cast<long double>(t.qa)), tqb = std::acos(static_cast<long double>(t.qb));
  const long double tab = std::acos(static_cast<long double>(t.ab));
  const long double pa = std::pow(1.0L - tqa / pi_l, K), pb = std::pow(1.0L - tqb / pi_l, K);
  long double A = std::pow(1.0L - (tqa + tqb + tab) / (2.0L * pi_l), K);
  A = std::min(std::max(A, std::max(0.0L, pa + pb - 1.0L)), std::min(pa, pb));
  return collision::joint_inclusion_by_tables<long double>(A, pa - A, pb - A, 1.0L - pa - pb + A, L, m);
}

std::vector<double> angle_grid() { return {0.0, 0.05, 0.3, 0.8, 1.3, 1.5707963267948966, 2.0, 2.6, 3.0}; }

}  // namespace

TEST_CASE("three vectors on one side of a random hyperplane: 1 - (sum of angles) / 2pi, against Monte-Carlo") {
  // N independent Gaussian hyperplanes in d = 6 (the triple spans 3 of them);
  // the frequency of "q, a, b all on one side" is Binomial(N, P3) / N, SE
  // sqrt(P3 (1 - P3) / N), checked at 4 SE (10 configurations: a calibrated
  // law fails one with probability about 6e-4).
  const std::size_t d = 6, N = 200000;
  std::vector<float> w(N * d);
  random::fill_normal(w.data(), w.size(), 0x3a3a, 7);
  struct config {
    double alpha, beta, phi;
  };
  for (const config c : {config{0.3, 0.4, 0.2}, config{0.3, 0.4, 3.0}, config{1.2, 0.7, 1.0}, config{1.5, 1.5, 1.5},
                         config{2.5, 0.5, 0.5}, config{2.0, 2.2, 0.1}, config{0.05, 0.05, 0.0}, config{3.0, 1.0, 2.0},
                         config{0.9, 2.4, 3.1}, config{1.0, 1.0, 0.0}}) {
    INFO("alpha " << c.alpha << " beta " << c.beta << " phi " << c.phi);
    const auto v = vectors_of(c.alpha, c.beta, c.phi, d);
    std::size_t same = 0;
    for (std::size_t r = 0; r < N; ++r) {
      double s[3] = {0.0, 0.0, 0.0};
      for (std::size_t k = 0; k < 3; ++k)
        for (std::size_t j = 0; j < d; ++j) s[k] += v[k * d + j] * static_cast<double>(w[r * d + j]);
      same += (s[0] > 0) == (s[1] > 0) && (s[0] > 0) == (s[2] > 0);
    }
    const triple t = make_triple(c.alpha, c.beta, c.phi);
    const double P3 = collision::triple_bit_collision_probability(t.qa, t.qb, t.ab);
    const double freq = static_cast<double>(same) / N;
    CHECK(std::fabs(freq - P3) <= 4.0 * std::sqrt(P3 * (1.0 - P3) / N) + 1e-12);
  }
  // Special cases: identical a = b reduces to the pair law; a = -q makes the event impossible.
  CHECK(collision::triple_bit_collision_probability(0.3, 0.3, 1.0) ==
        doctest::Approx(collision::bit_collision_probability(0.3)).epsilon(1e-15));
  CHECK(collision::triple_bit_collision_probability(-1.0, 0.2, -0.2) == 0.0);
  CHECK(collision::triple_bit_collision_probability(1.0, 1.0, 1.0) == 1.0);
}

TEST_CASE("pi_ab: closed form and its fallback against a long-double DP over the tables") {
  // Accuracy target: relative error 1e-10 (a few hundred ulps: the inputs pass
  // through acos and powers up to 4096) wherever the reference is a normal
  // double and the triple is well conditioned (below). The bare closed form
  // pi_a + pi_b - 1 + P(both below) is held to an absolute error of (L + 10)
  // ulps-ish (1e-15 each: D^L's relative error is L times D's); the library
  // switches to the DP below 1e-5 L, and the worst relative error of the bare
  // form is printed to show why.
  double worst = 0.0, worst_bare = 0.0;
  std::size_t checked = 0;
  struct family {
    int K, L, m;
  };
  for (const family f : {family{1, 1, 1}, family{4, 10, 2}, family{4, 10, 1}, family{10, 150, 2}, family{8, 40, 3},
                         family{6, 20, 8}, family{3, 30, 12}, family{12, 300, 2}, family{2, 4, 4}}) {
    for (double alpha : angle_grid())
      for (double beta : angle_grid())
        for (double phi : {0.0, 0.4, 1.5707963267948966, 3.141592653589793}) {
          const triple t = make_triple(alpha, beta, phi);
          const long double ref = reference_pi_ab(t, f.K, f.L, f.m);
          const double got = collision::joint_inclusion_probability_at(t.qa, t.qb, t.ab, f.K, f.L, f.m);
          INFO("K " << f.K << " L " << f.L << " m " << f.m << " alpha " << alpha << " beta " << beta << " phi " << phi);
          // Where q, a, b nearly surround the origin (P3 = 1 - sum / 2pi near
          // 0), P3 is a cancellation of the angles themselves, known to about
          // 1e-16 absolutely in any precision: only an absolute check there.
          const long double P3 = 1.0L - (std::acos(static_cast<long double>(t.qa)) +
                                          std::acos(static_cast<long double>(t.qb)) +
                                          std::acos(static_cast<long double>(t.ab))) / (2.0L * pi_l);
          if (ref < 1e-300L || P3 < 1e-3L) {
            CHECK(std::fabs(static_cast<long double>(got) - ref) <= 1e-12L);
            continue;
          }
          ++checked;
          const double rel = static_cast<double>(std::fabs((static_cast<long double>(got) - ref) / ref));
          worst = std::max(worst, rel);
          CHECK(rel <= 1e-10);
          if (f.m <= 8) {
            const auto o = collision::table_outcomes_at(t.qa, t.qb, t.ab, f.K);
            const double pa = collision::inclusion_probability(o.both + o.a_only, f.L, f.m);
            const double pb = collision::inclusion_probability(o.both + o.b_only, f.L, f.m);
            const double bare = pa + pb - 1.0 + collision::both_below_probability(o, f.L, f.m);
            CHECK(std::fabs(static_cast<long double>(bare) - ref) <= 1e-15L * (f.L + 10));
            worst_bare = std::max(worst_bare, static_cast<double>(std::fabs((bare - ref) / ref)));
          }
        }
  }
  MESSAGE("pi_ab: ", checked, " cases, worst relative error ", worst, " (bare closed form: ", worst_bare, ")");
  CHECK(checked > 2000);
}

TEST_CASE("pi_ab: identities and bounds") {
  // m = 1: P(C_a >= 1, C_b >= 1) = 1 - (1 - p_a)^L - (1 - p_b)^L + D^L.
  const triple t = make_triple(0.7, 1.1, 0.9);
  const auto o = collision::table_outcomes_at(t.qa, t.qb, t.ab, 5);
  const double pa = o.both + o.a_only, pb = o.both + o.b_only;
  const double m1 = 1.0 - std::pow(1.0 - pa, 12) - std::pow(1.0 - pb, 12) + std::pow(o.neither, 12);
  CHECK(collision::joint_inclusion_probability_at(t.qa, t.qb, t.ab, 5, 12, 1) == doctest::Approx(m1).epsilon(1e-13));
  // The same key twice: pi_aa = pi_a.
  const double ua = collision::inclusion_probability_at(0.4, 6, 20, 2);
  CHECK(collision::joint_inclusion_probability_at(0.4, 0.4, 1.0, 6, 20, 2) == doctest::Approx(ua).epsilon(1e-13));
  // Symmetric, within the Frechet bounds, and above independence for close keys.
  for (double phi : {0.0, 0.2, 1.0, 2.0, 3.1}) {
    const triple s = make_triple(0.6, 0.9, phi);
    const double ab = collision::joint_inclusion_probability_at(s.qa, s.qb, s.ab, 4, 10, 2);
    const double ba = collision::joint_inclusion_probability_at(s.qb, s.qa, s.ab, 4, 10, 2);
    const double u1 = collision::inclusion_probability_at(s.qa, 4, 10, 2), u2 = collision::inclusion_probability_at(s.qb, 4, 10, 2);
    CHECK(ab == doctest::Approx(ba).epsilon(1e-14));
    CHECK(ab >= std::max(0.0, u1 + u2 - 1.0));
    CHECK(ab <= std::min(u1, u2));
    if (phi <= 0.2) CHECK(ab > u1 * u2 + 0.01);  // keys a few degrees apart share most hyperplane sides
  }
  // Integer powers agree with std::pow to a few ulps.
  for (double x : {0.1, 0.5, 0.93, 0.999})
    for (int n : {0, 1, 2, 7, 32, 4095}) CHECK(collision::integer_power(x, n) == doctest::Approx(std::pow(x, n)).epsilon(1e-13));
}

TEST_CASE("pi_ab matches Monte-Carlo over independent hash families") {
  // T SimHash families with different seeds; q, a, b fixed. The indicator
  // [a and b both collide with q in >= m tables] is Bernoulli(pi_ab),
  // independent across seeds: frequency SE sqrt(pi_ab (1 - pi_ab) / T), checked
  // at 4 SE. Where the keys are close, the test also shows the independence
  // product pi_a pi_b is rejected at the same 4 SE (the test has power).
  const std::size_t d = 8, T = 4000;
  struct setting {
    double alpha, beta, phi;
    int K, L, m;
    bool correlated;
  };
  for (const setting s : {setting{0.6, 0.7, 0.15, 4, 10, 2, true}, setting{0.9, 0.9, 0.3, 6, 20, 2, true},
                          setting{1.2, 1.0, 2.5, 3, 8, 1, false}, setting{0.5, 1.4, 1.5, 4, 12, 3, false},
                          setting{1.0, 1.1, 0.05, 8, 30, 2, true}}) {
    INFO("alpha " << s.alpha << " beta " << s.beta << " phi " << s.phi << " K " << s.K << " L " << s.L << " m " << s.m);
    const auto v = vectors_of(s.alpha, s.beta, s.phi, d);
    std::vector<float> q(d), a(d), b(d);
    for (std::size_t j = 0; j < d; ++j) {
      q[j] = static_cast<float>(v[j]);
      a[j] = static_cast<float>(v[d + j]);
      b[j] = static_cast<float>(v[2 * d + j]);
    }
    // Cosines of the float vectors that are hashed.
    auto cosf = [&](const std::vector<float>& x, const std::vector<float>& y) {
      double xy = 0, xx = 0, yy = 0;
      for (std::size_t j = 0; j < d; ++j) {
        xy += static_cast<double>(x[j]) * y[j];
        xx += static_cast<double>(x[j]) * x[j];
        yy += static_cast<double>(y[j]) * y[j];
      }
      return collision::cosine(xy, std::sqrt(xx), std::sqrt(yy));
    };
    const double pab = collision::joint_inclusion_probability_at(cosf(q, a), cosf(q, b), cosf(a, b), s.K, s.L, s.m);
    const double ua = collision::inclusion_probability_at(cosf(q, a), s.K, s.L, s.m);
    const double ub = collision::inclusion_probability_at(cosf(q, b), s.K, s.L, s.m);
    std::size_t both = 0;
    std::vector<std::uint32_t> cq(static_cast<std::size_t>(s.L)), ca(cq.size()), cb(cq.size());
    for (std::size_t t = 0; t < T; ++t) {
      const hash::simhash<> f(d, s.K, s.L, 0x7000 + t);
      f.hash(q.data(), cq.data());
      f.hash(a.data(), ca.data());
      f.hash(b.data(), cb.data());
      int na = 0, nb = 0;
      for (std::size_t l = 0; l < cq.size(); ++l) {
        na += ca[l] == cq[l];
        nb += cb[l] == cq[l];
      }
      both += na >= s.m && nb >= s.m;
    }
    const double freq = static_cast<double>(both) / T;
    MESSAGE("pi_ab ", pab, " Monte-Carlo ", freq, " pi_a pi_b ", ua * ub);
    CHECK(std::fabs(freq - pab) <= 4.0 * std::sqrt(pab * (1 - pab) / T));
    const double indep = ua * ub;
    if (s.correlated) CHECK(std::fabs(freq - indep) > 4.0 * std::sqrt(indep * (1 - indep) / T));
  }
}
