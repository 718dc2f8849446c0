#include "lshattn/quality/uncertainty.hpp"

#include <doctest/doctest.h>

#include <cmath>
#include <functional>
#include <limits>
#include <lshattn/lshattn.hpp>
#include <vector>

#include "quality/npy.hpp"
#include "shared_data.hpp"

// Coverage of the nominal 95% intervals o_hat_j +- 1.96 se_j. Each of T
// trials draws a fresh sample (estimator seed or index seed t) and contributes
// ONE indicator, coordinate j = t mod d, so the T indicators are independent
// Bernoulli(c) (the d elements of one output share a sample and are
// correlated; taking one per trial avoids a design effect). If the intervals
// are calibrated, c = 0.95 and the observed rate has standard error
// sqrt(0.95 * 0.05 / T) (0.0069 at T = 1000); we accept |rate - 0.95| <= 3
// standard errors. Seeds are fixed, so the outcome is deterministic; the
// tolerance says how unlucky a calibrated estimator would have to be to fail
// (about 0.3%).
//
// The same trials also test the variance itself: R = sum_t err_t^2 / sum_t
// se_t^2 estimates MSE / E[se^2], which is 1 for an unbiased variance estimate
// (the bias of o_hat is negligible here). Its standard error over independent
// trials is the ratio estimator's, sqrt(sum_t (err_t^2 - R se_t^2)^2) /
// sum_t se_t^2 (delta method); checked at 3 standard errors.
//
// An unbiased but estimated variance still covers less than 95%: o_hat / se
// is studentised, and with se^2 ~ sigma^2 chi2_nu / nu (independent of a
// normal error) the coverage of +- 1.96 se is P(|t_nu| <= 1.96), nu = 2 /
// CV^2(se^2) (Satterthwaite). LSH's pair terms make se noisier than the
// Poisson form's (nu about 30 on GloVe), so its coverage is checked against
// that expected rate, with nu measured per element over the same trials, at
// the same 3 binomial standard errors.

using namespace lshattn;

namespace {

struct problem {
  std::size_t n = 0, d = 0;
  std::vector<float> keys, values, query, exact;  // keys/values [1, n, d], query [1, d], exact [1, d]
  decode_params params{0, 0};
  cache_view<const float> kc() const { return {keys.data(), 1, n, d}; }
  cache_view<const float> vc() const { return {values.data(), 1, n, d}; }
};

void compute_exact(problem& p) {
  p.exact.assign(p.d, std::nanf(""));
  decode_request<float, float> r{matrix_view<const float>(p.query.data(), 1, p.d), p.kc(), p.vc(), nullptr,
                                 matrix_view<float>(p.exact.data(), 1, p.d)};
  decode(reference, estimator::exact{}, p.params, r);
}

struct coverage_result {
  double rate = 0.0;   // fraction of trials whose interval covered
  double ratio = 0.0;  // R = sum err^2 / sum se^2
  double ratio_se = 0.0;
  double nu = 0.0;      // Satterthwaite degrees of freedom of se^2
  double t_rate = 0.0;  // P(|t_nu| <= 1.96)
};

// P(|t_nu| <= x) by the trapezoid rule on the density (error far below 1e-6 with 20000 steps).
double student_t_central(double nu, double x) {
  const int N = 20000;
  const double h = x / N;
  const double lc = std::lgamma((nu + 1) / 2) - std::lgamma(nu / 2) - 0.5 * std::log(nu * 3.14159265358979323846);
  double sum = 0.0;
  for (int i = 0; i <= N; ++i) {
    const double t = i * h;
    sum += (i == 0 || i == N ? 0.5 : 1.0) * std::exp(lc - (nu + 1) / 2 * std::log1p(t * t / nu));
  }
  return 2.0 * sum * h;
}

// run(t, request) performs trial t's decode into the request's output and std_error.
coverage_result coverage(const problem& p, int T, const std::function<void(int, decode_request<float, float>&)>& run) {
  std::vector<float> out(p.d), se(p.d), ess(1);
  std::vector<double> err2, se2;
  std::vector<double> m2(p.d, 0.0), m4(p.d, 0.0);  // per element: sums of se^2 and se^4 over trials
  int covered = 0;
  for (int t = 0; t < T; ++t) {
    std::fill(out.begin(), out.end(), std::nanf(""));  // poisoned: unwritten elements show
    std::fill(se.begin(), se.end(), std::nanf(""));
    decode_request<float, float> r{matrix_view<const float>(p.query.data(), 1, p.d), p.kc(), p.vc(), nullptr,
                                   matrix_view<float>(out.data(), 1, p.d)};
    r.std_error = matrix_view<float>(se.data(), 1, p.d);
    r.ess = ess;
    run(t, r);
    const std::size_t j = static_cast<std::size_t>(t) % p.d;
    REQUIRE(std::isfinite(out[j]));
    REQUIRE(std::isfinite(se[j]));
    REQUIRE(se[j] >= 0.0f);
    const double e = static_cast<double>(out[j]) - p.exact[j];
    covered += std::abs(e) <= 1.96 * se[j] ? 1 : 0;
    err2.push_back(e * e);
    se2.push_back(static_cast<double>(se[j]) * se[j]);
    for (std::size_t c = 0; c < p.d; ++c) {
      const double v = static_cast<double>(se[c]) * se[c];
      m2[c] += v;
      m4[c] += v * v;
    }
  }
  coverage_result c;
  c.rate = static_cast<double>(covered) / T;
  double a = 0.0, b = 0.0;
  for (int t = 0; t < T; ++t) {
    a += err2[static_cast<std::size_t>(t)];
    b += se2[static_cast<std::size_t>(t)];
  }
  c.ratio = a / b;
  double dev = 0.0;
  for (int t = 0; t < T; ++t) {
    const double r = err2[static_cast<std::size_t>(t)] - c.ratio * se2[static_cast<std::size_t>(t)];
    dev += r * r;
  }
  c.ratio_se = std::sqrt(dev) / b;
  double cv2 = 0.0;
  for (std::size_t k = 0; k < p.d; ++k) {
    const double mean = m2[k] / T, var = m4[k] / T - mean * mean;
    cv2 += mean > 0.0 ? var / (mean * mean) / static_cast<double>(p.d) : 0.0;
  }
  c.nu = cv2 > 0.0 ? 2.0 / cv2 : std::numeric_limits<double>::infinity();
  c.t_rate = std::isfinite(c.nu) ? student_t_central(c.nu, 1.96) : 0.95;
  return c;
}

void check_calibrated(double rate, int T) {
  const double sd = std::sqrt(0.95 * 0.05 / T);
  CHECK(rate >= 0.95 - 3 * sd);
  CHECK(rate <= 0.95 + 3 * sd);
}
void check_unbiased_variance(const coverage_result& c) { CHECK(std::fabs(c.ratio - 1.0) <= 3.0 * c.ratio_se); }
void check_studentised(const coverage_result& c, int T) {
  const double sd = std::sqrt(c.t_rate * (1.0 - c.t_rate) / T);
  CHECK(c.rate >= c.t_rate - 3 * sd);
  CHECK(c.rate <= c.t_rate + 3 * sd);
}

// Isotropic synthetic: keys, values N(0, I); query of norm sigma * sqrt(d) so
// that scores are N(0, sigma^2): softmax weights log-normal, ESS ~ n e^{-sigma^2}.
problem isotropic(std::size_t n, std::size_t d, double sigma) {
  problem p;
  p.n = n;
  p.d = d;
  p.keys.resize(n * d);
  p.values.resize(n * d);
  p.query.resize(d);
  random::fill_normal(p.keys.data(), p.keys.size(), 11, 1);
  random::fill_normal(p.values.data(), p.values.size(), 11, 2);
  random::fill_normal(p.query.data(), d, 11, 3);
  double qn = 0.0;
  for (float x : p.query) qn += static_cast<double>(x) * x;
  for (float& x : p.query) x = static_cast<float>(x / std::sqrt(qn) * sigma * std::sqrt(static_cast<double>(d)));
  compute_exact(p);
  return p;
}

// GloVe: keys = values = the first n word vectors (real, anisotropic, with a
// common offset); the query is word `row` with scores q.k / tau.
problem glove(std::size_t n, std::size_t row, double tau) {
  const auto m = lshattn_examples::read_npy(quality_test::shared_file("glove-100d-first131072.f16.npy"), row + 1);
  problem p;
  p.n = n;
  p.d = m.cols;
  p.keys.assign(m.data.begin(), m.data.begin() + static_cast<std::ptrdiff_t>(n * p.d));
  p.values = p.keys;
  p.query.assign(m.row(row), m.row(row) + p.d);
  p.params.scale = static_cast<float>(1.0 / tau);
  compute_exact(p);
  return p;
}

constexpr int T = 1000;

void run_oracle(const problem& p, std::size_t k) {
  const double rate = coverage(p, T, [&](int t, auto& r) {
    decode(reference, estimator::oracle_sampling{k, 1000u + static_cast<std::uint64_t>(t)}, p.params, r);
  }).rate;
  MESSAGE("oracle sampling coverage ", rate);
  check_calibrated(rate, T);
}
void run_uniform(const problem& p, std::size_t k) {
  const double rate = coverage(p, T, [&](int t, auto& r) {
    decode(reference, estimator::uniform{k, 2000u + static_cast<std::uint64_t>(t)}, p.params, r);
  }).rate;
  MESSAGE("uniform coverage ", rate);
  check_calibrated(rate, T);
}

// The lsh estimator with its design declared Poisson (design_of's default for
// an unknown type): the error bars as they were before the pair terms.
struct lsh_as_poisson {
  static constexpr bool uses_index = true;
  estimator::lsh inner;
  void validate() const { inner.validate(); }
  template <class TK, class I>
  void sample(const estimator::sample_context<TK, I>& ctx, estimator::sample_set& out) const {
    inner.sample(ctx, out);
  }
};
static_assert(quality::design_of<lsh_as_poisson> == quality::sampling_design::poisson);
static_assert(quality::design_of<estimator::lsh> == quality::sampling_design::joint);

// LSH trials: trial t builds an index with hyperplane seed 3000 + t.
template <class Est = estimator::lsh>
coverage_result run_lsh(const problem& p, lsh_params lp, int trials = T) {
  return coverage(p, trials, [&](int t, auto& r) {
    lp.seed = 3000u + static_cast<std::uint64_t>(t);
    lsh_index<> idx(p.d, 1, lp);
    idx.build(p.kc(), 0, p.n);
    r.index = &idx;
    decode(reference, Est{}, p.params, r);
  });
}

}  // namespace

TEST_CASE("error bars: the Poisson form matches a closed-form case") {
  // One sampled key with pi = 1/2 and an exact dense key: the variance formula by hand.
  const std::size_t d = 1;
  std::vector<float> v1{2.0f}, o{0.5f};
  quality::uncertainty_accumulator acc;
  const double o_hat = 1.2, lse = std::log(3.0);  // Z_hat = 3
  acc.reset(&o_hat, d, lse);
  acc.add(0.0, std::log(0.5), v1.data());  // w = 1, pi = 1/2: y = (1/3)(2 - 1.2)
  float se = -1.0f;
  const double ess = acc.finish(quality::sampling_design::poisson, 10, &se);
  const double y = (2.0 - 1.2) / 3.0;
  CHECK(se == doctest::Approx(std::sqrt((1 - 0.5) / 0.25 * y * y)).epsilon(1e-6));
  CHECK(ess == doctest::Approx(1.0));
}

TEST_CASE("error bars: exact and top-k report zero, ESS counts the sampled part") {
  problem p = isotropic(300, 8, 1.0);
  std::vector<float> out(p.d), se(p.d, std::nanf("")), ess(1, std::nanf(""));
  decode_request<float, float> r{matrix_view<const float>(p.query.data(), 1, p.d), p.kc(), p.vc(), nullptr,
                                 matrix_view<float>(out.data(), 1, p.d)};
  r.std_error = matrix_view<float>(se.data(), 1, p.d);
  r.ess = ess;
  decode(reference, estimator::exact{}, p.params, r);
  for (float x : se) CHECK(x == 0.0f);
  CHECK(ess[0] > 1.0f);
  CHECK(ess[0] <= 300.0f);
  decode(reference, estimator::topk{20}, p.params, r);
  for (float x : se) CHECK(x == 0.0f);
  // A wrongly shaped std_error is rejected before anything is written.
  std::vector<float> bad(2 * p.d);
  r.std_error = matrix_view<float>(bad.data(), 2, p.d);
  CHECK_THROWS_AS(decode(reference, estimator::exact{}, p.params, r), lshattn::error);
}

TEST_CASE("error bars: the joint (pair) form matches a closed-form case") {
  // Two sampled keys, pi = 0.5 and 0.25, pi_12 = 0.2 (> pi_1 pi_2 = 0.125):
  // V = sum_i (1 - pi_i)/pi_i^2 y_i^2 + 2 (pi_12 - pi_1 pi_2)/(pi_12 pi_1 pi_2) y_1 y_2.
  const std::size_t d = 2;
  const double o_hat[2] = {1.0, -1.0}, lse = std::log(4.0);  // Z_hat = 4
  const float v1[2] = {3.0f, 0.0f}, v2[2] = {2.0f, -3.0f};
  const double p1 = 0.5, p2 = 0.25, p12 = 0.2;
  quality::uncertainty_accumulator acc;
  acc.reset(o_hat, d, lse, quality::sampling_design::joint);
  acc.add(0.0, std::log(p1), v1);            // w = 1
  acc.add(std::log(2.0), std::log(p2), v2);  // w = 2
  const std::vector<double> joint{p1, p12, p12, p2};
  float se[2] = {-1.0f, -1.0f};
  acc.finish(quality::sampling_design::joint, 10, se, joint);
  for (std::size_t j = 0; j < d; ++j) {
    const double y1 = 1.0 * (v1[j] - o_hat[j]) / 4.0, y2 = 2.0 * (v2[j] - o_hat[j]) / 4.0;
    const double V = (1 - p1) / (p1 * p1) * y1 * y1 + (1 - p2) / (p2 * p2) * y2 * y2 +
                     2.0 * (p12 - p1 * p2) / (p12 * p1 * p2) * y1 * y2;
    CHECK(se[j] == doctest::Approx(std::sqrt(std::max(0.0, V))).epsilon(1e-6));
  }
  // With pi_12 = pi_1 pi_2 the joint form is the Poisson form.
  const std::vector<double> indep{p1, p1 * p2, p1 * p2, p2};
  float se_j[2], se_p[2];
  acc.finish(quality::sampling_design::joint, 10, se_j, indep);
  acc.finish(quality::sampling_design::poisson, 10, se_p);
  for (std::size_t j = 0; j < d; ++j) CHECK(se_j[j] == doctest::Approx(se_p[j]).epsilon(1e-6));
  // A negative HT estimate (pi_12 far below pi_1 pi_2, residuals of one sign) is clamped to 0.
  quality::uncertainty_accumulator neg;
  const double o0[1] = {0.0};
  const float one[1] = {1.0f};
  neg.reset(o0, 1, std::log(2.0), quality::sampling_design::joint);
  neg.add(0.0, std::log(0.5), one);
  neg.add(0.0, std::log(0.5), one);
  float se_n = -1.0f;  // V = e^2 (0.5 + 0.5 + 2 (1 - 0.25 / 0.05)) < 0
  neg.finish(quality::sampling_design::joint, 10, &se_n, std::vector<double>{0.5, 0.05, 0.05, 0.5});
  CHECK(se_n == 0.0f);
  // Misuse is reported: pair terms need the joint reset, and a k x k matrix.
  CHECK_THROWS_AS(acc.finish(quality::sampling_design::joint, 10, se, std::vector<double>{p1, p12, p12}), lshattn::error);
  quality::uncertainty_accumulator plain;
  plain.reset(o_hat, d, lse);
  plain.add(0.0, std::log(p1), v1);
  CHECK_THROWS_AS(plain.finish(quality::sampling_design::joint, 10, se, std::vector<double>{p1}), lshattn::error);
}

TEST_CASE("error bars: lsh joint inclusion probabilities match the index over hash seeds, GQA") {
  // Six keys (two tight clusters and two loners) in d = 8, two query heads of
  // one KV head (GQA). Over T index seeds, the frequency with which a head
  // samples both keys of a pair is Bernoulli(pi_ik) per seed, independent
  // across seeds: SE sqrt(pi (1 - pi) / T), checked at 4 SE for every pair and
  // key of both heads (42 checks: a correct model fails one with probability
  // about 0.3%). This checks the model end to end: centring by the index mean,
  // the raw query, the set's order, each head's own probabilities.
  const std::size_t n = 6, d = 8, T = 3000;
  std::vector<float> keys(n * d), noise(n * d), q(2 * d);
  random::fill_normal(noise.data(), noise.size(), 21, 1);
  random::fill_normal(q.data(), q.size(), 21, 2);
  for (std::size_t i = 0; i < n; ++i)
    for (std::size_t j = 0; j < d; ++j) {
      const float centre = i < 2 ? (j == 0 ? 2.0f : 0.0f) : i < 4 ? (j == 1 ? 2.0f : 0.0f) : 0.0f;
      keys[i * d + j] = centre + (i < 4 ? 0.15f : 1.0f) * noise[i * d + j] + 0.5f;  // + a common offset
    }
  for (std::size_t j = 0; j < d; ++j) q[j] += 2.0f * (j == 0) + 1.0f * (j == 1);
  const lsh_params lp{3, 8, 2, 0};
  const cache_view<const float> kc{keys.data(), 1, n, d};
  std::vector<double> count(2 * n * n, 0.0);
  std::vector<double> model;
  estimator::sample_set set;
  retrieval_workspace ws;
  for (std::size_t t = 0; t < T; ++t) {
    lsh_index<> idx(d, 1, {lp.K, lp.L, lp.m, 0x5000 + t});
    idx.build(kc, 0, n);
    estimator::sample_context<float> ctx{kc.head(0), 0, n, matrix_view<const float>(q.data(), 2, d), 1.0, &idx, 0, 0, &ws};
    estimator::lsh est;
    est.sample(ctx, set);
    for (std::size_t h = 0; h < 2; ++h) {
      std::vector<std::uint32_t> in;
      for (std::size_t j = 0; j < set.ids.size(); ++j)
        if (std::isfinite(set.log_pi_of(h, j))) in.push_back(set.ids[j]);
      for (auto a : in)
        for (auto b : in) count[h * n * n + a * n + b] += 1.0;
      if (t == 0) {  // the model does not depend on the seed: all keys, by a set holding every id
        estimator::sample_set all;
        all.reset(2);
        for (std::uint32_t i = 0; i < n; ++i) all.ids.push_back(i);
        all.log_pi.assign(2 * n, 0.0);
        std::vector<double> m;
        est.joint_inclusion(ctx, all, h, m);
        model.insert(model.end(), m.begin(), m.end());
        // On the seed's own set, the diagonal is the set's pi.
        est.joint_inclusion(ctx, set, h, m);
        for (std::size_t a = 0, j = 0; j < set.ids.size(); ++j) {
          if (!std::isfinite(set.log_pi_of(h, j))) continue;
          CHECK(m[a * in.size() + a] == doctest::Approx(std::exp(set.log_pi_of(h, j))).epsilon(1e-12));
          ++a;
        }
      }
    }
  }
  int correlated = 0;
  for (std::size_t h = 0; h < 2; ++h)
    for (std::size_t a = 0; a < n; ++a)
      for (std::size_t b = a; b < n; ++b) {
        const double pm = model[h * n * n + a * n + b], f = count[h * n * n + a * n + b] / T;
        INFO("head " << h << " keys " << a << ", " << b << ": model " << pm << " frequency " << f);
        CHECK(std::fabs(f - pm) <= 4.0 * std::sqrt(pm * (1 - pm) / T) + 1e-12);
        const double indep = model[h * n * n + a * n + a] * model[h * n * n + b * n + b];
        if (a != b && pm - indep > 4.0 * std::sqrt(pm * (1 - pm) / T)) ++correlated;
      }
  MESSAGE("pairs whose joint inclusion clearly exceeds independence: ", correlated);
  CHECK(correlated >= 2);  // the clusters: what the Poisson form misses
}

TEST_CASE("error bars: an LSH head that samples nothing reports zero") {
  // K = 32 bits in one table: a key collides with probability (1 - theta/pi)^32,
  // about 2^-32 at right angles, so none of 300 random keys is retrieved.
  const problem p = isotropic(300, 8, 1.0);
  lsh_index<> idx(p.d, 1, lsh_params{32, 1, 1, 5});
  idx.build(p.kc(), 0, p.n);
  std::vector<float> out(p.d), se(p.d, std::nanf("")), ess(1, std::nanf(""));
  decode_request<float, float> r{matrix_view<const float>(p.query.data(), 1, p.d), p.kc(), p.vc(), &idx,
                                 matrix_view<float>(out.data(), 1, p.d)};
  r.std_error = matrix_view<float>(se.data(), 1, p.d);
  r.ess = ess;
  decode_stats st;
  r.stats = &st;
  decode(reference, estimator::lsh{}, p.params, r);
  REQUIRE(st.sampled_keys == 0);
  for (float x : se) CHECK(x == 0.0f);
  CHECK(ess[0] == 0.0f);
}

TEST_CASE("error bars: 95% coverage, oracle sampling, synthetic") { run_oracle(isotropic(1024, 16, 1.0), 100); }
TEST_CASE("error bars: 95% coverage, uniform (SRS), synthetic") { run_uniform(isotropic(1024, 16, 1.0), 200); }
TEST_CASE("error bars: 95% coverage, LSH, isotropic synthetic") {
  // K=4, L=10, m=2: u(0) ~ 0.13, about 130 keys of 1024 sampled.
  const coverage_result c = run_lsh(isotropic(1024, 16, 1.0), lsh_params{4, 10, 2, 0});
  MESSAGE("lsh coverage ", c.rate, ", MSE / E[se^2] ", c.ratio, " +- ", c.ratio_se, ", nu ", c.nu,
          ", studentised target ", c.t_rate);
  check_calibrated(c.rate, T);
  check_studentised(c, T);
  check_unbiased_variance(c);
}
TEST_CASE("error bars: 95% coverage, oracle sampling, GloVe") { run_oracle(glove(2048, 5000, 4.0), 150); }
TEST_CASE("error bars: 95% coverage, uniform (SRS), GloVe") { run_uniform(glove(2048, 5000, 4.0), 300); }
TEST_CASE("error bars: 95% coverage, LSH, GloVe (pair terms)") {
  // Real word vectors cluster: words near the query share hyperplane sides
  // and are retrieved together, and their residuals share a sign. The pair
  // terms of the HT variance account for it (docs/quality.md).
  // Measured: coverage 0.930, nu 32 (expected 0.941), R 1.05 +- 0.05. The
  // nominal band (0.929 to 0.971) is met too but only at its edge, so the
  // case asserts the studentised target, which is what theory predicts for
  // an unbiased variance estimate this noisy (see the top of this file).
  const coverage_result c = run_lsh(glove(2048, 5000, 4.0), lsh_params{4, 10, 2, 0});
  MESSAGE("lsh coverage on GloVe ", c.rate, ", MSE / E[se^2] ", c.ratio, " +- ", c.ratio_se, ", nu ", c.nu,
          ", studentised target ", c.t_rate);
  check_studentised(c, T);
  check_unbiased_variance(c);
}
TEST_CASE("error bars: LSH on GloVe, the Poisson form alone undercovers") {
  // The same samples (seeds) as above with the pair terms left out: the
  // variance is underestimated several-fold and the intervals undercover far
  // outside the calibrated band. Fewer trials (600, band 3 x 0.0089) suffice.
  constexpr int T = 600;
  const coverage_result c = run_lsh<lsh_as_poisson>(glove(2048, 5000, 4.0), lsh_params{4, 10, 2, 0}, T);
  MESSAGE("Poisson-form coverage on GloVe ", c.rate, ", MSE / E[se^2] ", c.ratio, " +- ", c.ratio_se);
  CHECK(c.rate < 0.95 - 3 * std::sqrt(0.95 * 0.05 / T));
  CHECK(c.ratio > 1.0 + 3.0 * c.ratio_se);
}
