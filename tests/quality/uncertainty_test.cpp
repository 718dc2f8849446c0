#include "lshattn/quality/uncertainty.hpp"

#include <doctest/doctest.h>

#include <cmath>
#include <functional>
#include <lshattn/lshattn.hpp>
#include <vector>

#include "quality/npy.hpp"
#include "shared_data.hpp"

// Coverage of the nominal 95% intervals o_hat_j +- 1.96 se_j. Each of T
// trials draws a fresh sample (estimator seed or index seed t) and contributes
// ONE indicator, coordinate j = t mod d, so the T indicators are independent
// Bernoulli(c). If the intervals are calibrated, c = 0.95 and the observed
// rate has standard error sqrt(0.95 * 0.05 / T) (0.0069 at T = 1000); we accept
// |rate - 0.95| <= 3 standard errors. Seeds are fixed, so the outcome is
// deterministic; the tolerance says how unlucky a calibrated estimator would
// have to be to fail (about 0.3%).

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

// run(t, request) performs trial t's decode into the request's output and std_error.
double coverage(const problem& p, int T, const std::function<void(int, decode_request<float, float>&)>& run) {
  std::vector<float> out(p.d), se(p.d), ess(1);
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
    covered += std::abs(static_cast<double>(out[j]) - p.exact[j]) <= 1.96 * se[j] ? 1 : 0;
  }
  return static_cast<double>(covered) / T;
}

void check_calibrated(double rate, int T) {
  const double sd = std::sqrt(0.95 * 0.05 / T);
  CHECK(rate >= 0.95 - 3 * sd);
  CHECK(rate <= 0.95 + 3 * sd);
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
  });
  MESSAGE("oracle sampling coverage ", rate);
  check_calibrated(rate, T);
}
void run_uniform(const problem& p, std::size_t k) {
  const double rate = coverage(p, T, [&](int t, auto& r) {
    decode(reference, estimator::uniform{k, 2000u + static_cast<std::uint64_t>(t)}, p.params, r);
  });
  MESSAGE("uniform coverage ", rate);
  check_calibrated(rate, T);
}
double run_lsh(const problem& p, lsh_params lp, int trials = T) {
  return coverage(p, trials, [&](int t, auto& r) {
    lp.seed = 3000u + static_cast<std::uint64_t>(t);
    lsh_index<> idx(p.d, 1, lp);
    idx.build(p.kc(), 0, p.n);
    r.index = &idx;
    decode(reference, estimator::lsh{}, p.params, r);
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

TEST_CASE("error bars: 95% coverage, oracle sampling, synthetic") { run_oracle(isotropic(1024, 16, 1.0), 100); }
TEST_CASE("error bars: 95% coverage, uniform (SRS), synthetic") { run_uniform(isotropic(1024, 16, 1.0), 200); }
TEST_CASE("error bars: 95% coverage, LSH, isotropic synthetic") {
  // K=4, L=10, m=2: u(0) ~ 0.13, about 130 keys of 1024 sampled.
  const double rate = run_lsh(isotropic(1024, 16, 1.0), lsh_params{4, 10, 2, 0});
  MESSAGE("lsh coverage ", rate);
  check_calibrated(rate, T);
}
TEST_CASE("error bars: 95% coverage, oracle sampling, GloVe") { run_oracle(glove(2048, 5000, 4.0), 150); }
TEST_CASE("error bars: 95% coverage, uniform (SRS), GloVe") { run_uniform(glove(2048, 5000, 4.0), 300); }
namespace {
// MagicPIG's inclusion probabilities u_i, but each key drawn independently
// (a true Poisson design): what the variance formula assumes of the LSH design.
struct independent_lsh {
  static constexpr bool uses_index = false;
  lsh_params lp;
  std::uint64_t seed = 0;
  void validate() const {}
  template <class TK, class I>
  void sample(const estimator::sample_context<TK, I>& ctx, estimator::sample_set& out) const {
    const std::size_t d = ctx.keys.cols;
    std::vector<double> mean(d, 0.0);
    for (std::size_t i = ctx.begin; i < ctx.end; ++i)
      for (std::size_t j = 0; j < d; ++j) mean[j] += ctx.keys(i, j);
    for (auto& x : mean) x /= static_cast<double>(ctx.end - ctx.begin);
    random::philox_engine rng(seed, ctx.stream);
    out.reset(1);
    std::vector<double> lp_in;
    const float* q = ctx.queries.row(0);
    double qn = 0.0;
    for (std::size_t j = 0; j < d; ++j) qn += static_cast<double>(q[j]) * q[j];
    for (std::size_t i = ctx.begin; i < ctx.end; ++i) {
      double dot = 0.0, kn = 0.0;
      for (std::size_t j = 0; j < d; ++j) {
        const double c = ctx.keys(i, j) - mean[j];
        dot += q[j] * c;
        kn += c * c;
      }
      const double u = collision::inclusion_probability_at(collision::cosine(dot, std::sqrt(qn), std::sqrt(kn)),
                                                           lp.K, lp.L, lp.m);
      if (rng.uniform() < u) {
        out.ids.push_back(static_cast<std::uint32_t>(i));
        lp_in.push_back(std::log(u));
      }
    }
    out.log_pi = lp_in;
  }
};
}  // namespace

TEST_CASE("error bars: LSH on GloVe undercovers while the same u drawn independently is calibrated") {
  // Known limitation (docs/quality.md, quality/uncertainty.hpp): real word
  // vectors cluster, so the words near the query share hyperplane sides and
  // collide together; their inclusions are positively correlated and their
  // residuals share a sign, which the Poisson variance form omits. The same
  // inclusion probabilities drawn independently are covered at 95%: the
  // formula is right for the design it assumes, and the gap is the correlation.
  const problem p = glove(2048, 5000, 4.0);
  const lsh_params lp{4, 10, 2, 0};
  constexpr int T = 600;  // fewer trials (tolerance 3 x 0.0089) to keep this case a few seconds under ASan
  const double indep = coverage(p, T, [&](int t, auto& r) {
    decode(reference, independent_lsh{lp, 4000u + static_cast<std::uint64_t>(t)}, p.params, r);
  });
  MESSAGE("independent inclusions with LSH's u: coverage ", indep);
  check_calibrated(indep, T);
  const double rate = run_lsh(p, lp, T);
  MESSAGE("LSH (correlated inclusions) coverage on GloVe: ", rate, " (documented undercoverage)");
  CHECK(rate < indep);  // the direction of the documented gap; not a calibration claim
}
