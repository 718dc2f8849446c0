// Synthetic workloads: deterministic for a seed, shaped as documented.
#include "lshattn/workload/synthetic.hpp"

#include <doctest/doctest.h>

#include <cmath>
#include <string>
#include <vector>

#include "expect_error.hpp"

using namespace lshattn;

namespace {
double norm2(const float* x, std::size_t d) {
  double s = 0;
  for (std::size_t j = 0; j < d; ++j) s += static_cast<double>(x[j]) * x[j];
  return s;
}
}  // namespace

TEST_CASE("llm_like: deterministic for a seed, different across seeds, documented shapes") {
  workload::llm_like_params p;
  p.tokens = 600, p.q_heads = 8, p.kv_heads = 2, p.dim = 32, p.clusters = 8;
  const auto a = workload::llm_like(p), b = workload::llm_like(p);
  CHECK(a.keys == b.keys);
  CHECK(a.values == b.values);
  CHECK(a.queries == b.queries);
  CHECK(a.keys.size() == 2 * 600 * 32);
  CHECK(a.values.size() == 2 * 600 * 32);
  CHECK(a.queries.size() == 8 * 32);
  CHECK(a.tokens == 600);
  p.seed += 1;
  const auto c = workload::llm_like(p);
  CHECK(a.keys != c.keys);
  CHECK(a.queries != c.queries);
  for (float x : a.keys) REQUIRE(std::isfinite(x));
}

TEST_CASE("llm_like: the common offset dominates the key mean, sinks and query sharpness as documented") {
  workload::llm_like_params p;
  p.tokens = 2000, p.q_heads = 8, p.kv_heads = 2, p.dim = 64, p.clusters = 16;
  const auto w = workload::llm_like(p);
  const std::size_t n = p.tokens, d = p.dim, g = p.q_heads / p.kv_heads;
  for (std::size_t h = 0; h < p.kv_heads; ++h) {
    const float* K = w.keys.data() + h * n * d;
    std::vector<double> mean(d, 0.0);
    for (std::size_t t = 0; t < n; ++t)
      for (std::size_t j = 0; j < d; ++j) mean[j] += K[t * d + j];
    for (auto& m : mean) m /= static_cast<double>(n);
    double mean2 = 0, spread = 0;
    for (double m : mean) mean2 += m * m;
    for (std::size_t t = 0; t < n; ++t)
      for (std::size_t j = 0; j < d; ++j) spread += (K[t * d + j] - mean[j]) * (K[t * d + j] - mean[j]);
    spread /= static_cast<double>(n);
    // Expected: |mean|^2 ~ offset^2 d = 9 d (a chi-square with d degrees of
    // freedom, SD 9 sqrt(2 d)), the spread about 2 d (cluster centres + noise).
    // 9 d - 4 SD = 9 * (64 - 45) > 2 d + margin: the offset dominates.
    CHECK(mean2 > spread);
    CHECK(mean2 / static_cast<double>(d) == doctest::Approx(9.0).epsilon(4.0 * std::sqrt(2.0 / static_cast<double>(d))));
    // Sinks: the first keys sit sink_strength along a shared direction: far from the mean.
    for (std::size_t t = 0; t < p.sinks; ++t) {
      double dist = 0;
      for (std::size_t j = 0; j < d; ++j) dist += (K[t * d + j] - mean[j]) * (K[t * d + j] - mean[j]);
      CHECK(dist > 4.0 * spread);  // ~ sink_strength^2 d = 16 d against ~2 d
    }
  }
  // Query norms: beta_j sqrt(d), beta geometric from beta_max (head 0) to beta_min (last head).
  for (std::size_t h = 0; h < p.q_heads; ++h) {
    const double frac = static_cast<double>(h) / static_cast<double>(p.q_heads - 1);
    const double beta = p.beta_max * std::pow(p.beta_min / p.beta_max, frac);
    CHECK(std::sqrt(norm2(w.queries.data() + h * d, d)) == doctest::Approx(beta * std::sqrt(static_cast<double>(d))).epsilon(1e-6));
  }
  (void)g;
}

TEST_CASE("anchor: deterministic, keys carry twice a shared offset, query norms as documented") {
  workload::anchor_params p;
  p.tokens = 1500, p.q_heads = 16, p.kv_heads = 2, p.dim = 128;
  const auto a = workload::anchor(p), b = workload::anchor(p);
  CHECK(a.keys == b.keys);
  CHECK(a.queries == b.queries);
  CHECK(a.values == b.values);
  const std::size_t n = p.tokens, d = p.dim;
  // The same offset in both KV heads: the per-dimension means agree to
  // sampling error (SE sqrt(2/n) for the difference of two means of N(0,1)).
  std::vector<double> m0(d, 0.0), m1(d, 0.0);
  for (std::size_t t = 0; t < n; ++t)
    for (std::size_t j = 0; j < d; ++j) m0[j] += a.keys[t * d + j], m1[j] += a.keys[(n + t) * d + j];
  double offset2 = 0;
  for (std::size_t j = 0; j < d; ++j) {
    m0[j] /= static_cast<double>(n), m1[j] /= static_cast<double>(n);
    CHECK(std::fabs(m0[j] - m1[j]) < 4.0 * std::sqrt(2.0 / static_cast<double>(n)));
    offset2 += m0[j] * m0[j];
  }
  // |2 z|^2 for z ~ N(0, I_d): mean 4 d, SD 4 sqrt(2 d).
  CHECK(std::fabs(offset2 - 4.0 * d) < 4.0 * 4.0 * std::sqrt(2.0 * d));
  // Values are N(0, 1): mean square 1 within 4 SE (SE sqrt(2 / count)).
  const double vs = norm2(a.values.data(), a.values.size()) / static_cast<double>(a.values.size());
  CHECK(std::fabs(vs - 1.0) < 4.0 * std::sqrt(2.0 / static_cast<double>(a.values.size())));
  // Each query is z + a k with z ~ N(0, I_d), k one key of its KV head and
  // a = |z| / (2 |k|): |q|^2 / d = |z|^2 / d (1 + 1/4) + |z| (z . k/|k|) / d,
  // mean 1.25; per head the SD is about sqrt(2/d + 1/d), so the mean over
  // q_heads heads has SE sqrt(3 / d / q_heads). Checked at 4 SE.
  double qn = 0;
  for (std::size_t h = 0; h < p.q_heads; ++h) qn += norm2(a.queries.data() + h * d, d) / static_cast<double>(d);
  qn /= static_cast<double>(p.q_heads);
  CHECK(std::fabs(qn - 1.25) < 4.0 * std::sqrt(3.0 / static_cast<double>(d * p.q_heads)));
}

TEST_CASE("workloads reject bad shapes naming the argument") {
  const auto expect = [](auto&& f, const std::string& arg) { test::expect_error(f, errc::invalid_argument, arg); };
  workload::llm_like_params p;
  p.tokens = 0;
  expect([&] { workload::llm_like(p); }, "tokens");
  p.tokens = 10, p.dim = 0;
  expect([&] { workload::llm_like(p); }, "dim");
  p.dim = 8, p.q_heads = 6, p.kv_heads = 4;
  expect([&] { workload::llm_like(p); }, "q_heads");
  p.q_heads = 8, p.clusters = 0;
  expect([&] { workload::llm_like(p); }, "clusters");
  workload::anchor_params ap;
  ap.tokens = 10, ap.q_heads = 2, ap.kv_heads = 4, ap.dim = 8;
  expect([&] { workload::anchor(ap); }, "q_heads");
}
