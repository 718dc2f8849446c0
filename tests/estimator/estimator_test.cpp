// Estimators: Horvitz-Thompson unbiasedness over many independent seeds,
// exactness when the design takes every key, top-k against brute force, and
// the per-head bookkeeping of the sample sets.
#include "lshattn/estimator/sample.hpp"

#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <numeric>
#include <vector>

#include "lshattn/decode.hpp"
#include "lshattn/estimator/exact.hpp"
#include "lshattn/estimator/lsh.hpp"
#include "lshattn/estimator/oracle.hpp"
#include "lshattn/estimator/topk.hpp"
#include "lshattn/estimator/uniform.hpp"
#include "lshattn/executor/reference.hpp"
#include "lshattn/random/normal.hpp"

using namespace lshattn;

namespace {

struct problem {
  std::size_t n, d, g;
  std::vector<float> keys, values, queries;  // [n, d], [n, d], [g, d]
  double scale;
  problem(std::size_t n_, std::size_t d_, std::size_t g_, std::uint64_t seed) : n(n_), d(d_), g(g_) {
    keys.resize(n * d);
    values.resize(n * d);
    queries.resize(g * d);
    std::vector<float> offset(d);
    random::fill_normal(keys.data(), keys.size(), seed, 1);
    random::fill_normal(values.data(), values.size(), seed, 2);
    random::fill_normal(offset.data(), d, seed, 3);
    random::fill_normal(queries.data(), queries.size(), seed, 4);
    for (std::size_t t = 0; t < n; ++t)
      for (std::size_t j = 0; j < d; ++j) keys[t * d + j] += 2.0f * offset[j];
    // Each query leans towards one key (centred), so the weights are uneven.
    for (std::size_t h = 0; h < g; ++h)
      for (std::size_t j = 0; j < d; ++j) queries[h * d + j] += 1.5f * (keys[(7 + 13 * h) * d + j] - 2.0f * offset[j]);
    scale = 1.0 / std::sqrt(static_cast<double>(d));
  }
  matrix_view<const float> kview() const { return {keys.data(), n, d}; }
  matrix_view<const float> qview() const { return {queries.data(), g, d}; }
  double score(std::size_t h, std::size_t t) const {
    return estimator::score(queries.data() + h * d, keys.data() + t * d, d, scale);
  }
  // Exact sums relative to the largest score: D = sum w_i, N_j = sum w_i v_ij.
  void exact_sums(std::size_t h, double& D, std::vector<double>& N, double& smax) const {
    smax = -1e300;
    for (std::size_t t = 0; t < n; ++t) smax = std::max(smax, score(h, t));
    D = 0;
    N.assign(d, 0.0);
    for (std::size_t t = 0; t < n; ++t) {
      const double w = std::exp(score(h, t) - smax);
      D += w;
      for (std::size_t j = 0; j < d; ++j) N[j] += w * values[t * d + j];
    }
  }
};

// Mean and standard error over seeds of the HT numerator (every coordinate)
// and denominator, sum_S w_i / pi_i (v_i), for every query head; checks each
// against the exact sum at 4 standard errors, with the SE estimated from the
// sample of seeds (sd / sqrt(S)). The seeds are independent draws of the
// design, so the CLT applies to the mean.
template <class Draw>
void check_unbiased(const problem& pb, std::size_t S, Draw&& draw) {
  const std::size_t m = pb.d + 1;  // d numerator coordinates, then the denominator
  std::vector<double> D(pb.g), smax(pb.g), exact(pb.g * m);
  for (std::size_t h = 0; h < pb.g; ++h) {
    std::vector<double> N;
    pb.exact_sums(h, D[h], N, smax[h]);
    std::copy(N.begin(), N.end(), exact.begin() + static_cast<std::ptrdiff_t>(h * m));
    exact[h * m + pb.d] = D[h];
  }
  std::vector<double> sum(pb.g * m, 0.0), sq(pb.g * m, 0.0), est(pb.g * m);
  estimator::sample_set set;
  double sizes = 0;
  for (std::size_t s = 0; s < S; ++s) {
    draw(s, set);
    std::fill(est.begin(), est.end(), 0.0);
    for (std::size_t h = 0; h < pb.g; ++h)
      for (std::size_t k = 0; k < set.ids.size(); ++k) {
        const double lp = set.log_pi_of(h, k);
        if (lp == -std::numeric_limits<double>::infinity()) continue;
        sizes += 1;
        const std::size_t t = set.ids[k];
        const double w = std::exp(pb.score(h, t) - smax[h] - lp);
        est[h * m + pb.d] += w;
        for (std::size_t j = 0; j < pb.d; ++j) est[h * m + j] += w * pb.values[t * pb.d + j];
      }
    for (std::size_t i = 0; i < est.size(); ++i) {
      sum[i] += est[i];
      sq[i] += est[i] * est[i];
    }
  }
  const double Sd = static_cast<double>(S);
  MESSAGE("mean sample size per head " << sizes / Sd / static_cast<double>(pb.g) << " of " << pb.n);
  for (std::size_t i = 0; i < est.size(); ++i) {
    const double mean = sum[i] / Sd;
    const double var = (sq[i] - Sd * mean * mean) / (Sd - 1);
    const double se = std::sqrt(std::max(var, 0.0) / Sd);
    INFO("head " << i / m << (i % m == pb.d ? " denominator" : " numerator coordinate ") << i % m << ": mean "
                 << mean << " exact " << exact[i] << " se " << se);
    CHECK(se > 0.0);  // the design is random: a zero SE would make the check vacuous
    CHECK(std::fabs(mean - exact[i]) <= 4.0 * se);
  }
}

}  // namespace

TEST_CASE("lsh: Horvitz-Thompson numerator and denominator are unbiased over hash families") {
  const problem pb(150, 16, 2, 11);
  retrieval_workspace ws;
  check_unbiased(pb, 2000, [&](std::size_t s, estimator::sample_set& set) {
    lsh_index<> idx(pb.d, 1, lsh_params{3, 6, 2, 1000 + s});
    idx.build(cache_view<const float>(pb.keys.data(), 1, pb.n, pb.d), 0, pb.n);
    estimator::sample_context<float> ctx{pb.kview(), 0, pb.n, pb.qview(), pb.scale, &idx, 0, 0, &ws};
    estimator::lsh{}.sample(ctx, set);
  });
}

TEST_CASE("uniform and oracle_sampling: Horvitz-Thompson sums are unbiased over seeds") {
  const problem pb(120, 8, 2, 12);
  check_unbiased(pb, 2000, [&](std::size_t s, estimator::sample_set& set) {
    estimator::sample_context<float> ctx{pb.kview(), 0, pb.n, pb.qview(), pb.scale, nullptr, 0, 5, nullptr};
    estimator::uniform{15, 100 + s}.sample(ctx, set);
  });
  check_unbiased(pb, 2000, [&](std::size_t s, estimator::sample_set& set) {
    estimator::sample_context<float> ctx{pb.kview(), 0, pb.n, pb.qview(), pb.scale, nullptr, 0, 5, nullptr};
    estimator::oracle_sampling{10, 100 + s}.sample(ctx, set);
  });
}

TEST_CASE("lsh sample set: per-head ids are that head's retrieval, ln pi = ln u from the collision model") {
  const problem pb(200, 16, 4, 13);
  lsh_index<> idx(pb.d, 1, lsh_params{4, 10, 2, 21});
  idx.build(cache_view<const float>(pb.keys.data(), 1, pb.n, pb.d), 0, pb.n);
  retrieval_workspace ws, mine;
  estimator::sample_set set;
  estimator::sample_context<float> ctx{pb.kview(), 0, pb.n, pb.qview(), pb.scale, &idx, 0, 0, &ws};
  for (int m : {0, 1, 3}) {
    estimator::lsh{m}.sample(ctx, set);
    const int threshold = m > 0 ? m : idx.threshold();
    CHECK(set.group == pb.g);
    CHECK(std::is_sorted(set.ids.begin(), set.ids.end()));
    CHECK(std::adjacent_find(set.ids.begin(), set.ids.end()) == set.ids.end());
    std::vector<std::uint32_t> all;
    for (std::size_t h = 0; h < pb.g; ++h) {
      idx.query(0, pb.queries.data() + h * pb.d, threshold, mine);
      std::vector<std::uint32_t> finite;
      for (std::size_t k = 0; k < set.ids.size(); ++k) {
        const double lp = set.log_pi_of(h, k);
        if (lp == -std::numeric_limits<double>::infinity()) continue;
        finite.push_back(set.ids[k]);
        // u at the angle between the query and the centred key, computed independently here.
        const float* key = pb.keys.data() + set.ids[k] * pb.d;
        const float* q = pb.queries.data() + h * pb.d;
        long double dot = 0, qn = 0, kn = 0;
        for (std::size_t j = 0; j < pb.d; ++j) {
          const long double x = static_cast<long double>(key[j] - idx.mean(0)[j]);
          dot += q[j] * x, qn += static_cast<long double>(q[j]) * q[j], kn += x * x;
        }
        const double c = static_cast<double>(dot / std::sqrt(qn * kn));
        const double u = collision::inclusion_probability_at(c, 4, 10, threshold);
        CHECK(lp == doctest::Approx(std::log(u)).epsilon(1e-9));
        CHECK(lp <= 0.0);
      }
      CHECK(finite == mine.ids);
      all.insert(all.end(), mine.ids.begin(), mine.ids.end());
    }
    std::sort(all.begin(), all.end());
    all.erase(std::unique(all.begin(), all.end()), all.end());
    CHECK(all == set.ids);  // the union over the group, nothing more
  }
}

TEST_CASE("topk: the k highest scores per head, ties to the lower position, pi = 1") {
  problem pb(90, 8, 4, 14);
  // Duplicate some keys to create exact ties.
  for (std::size_t j = 0; j < pb.d; ++j) pb.keys[40 * pb.d + j] = pb.keys[7 * pb.d + j], pb.keys[60 * pb.d + j] = pb.keys[7 * pb.d + j];
  estimator::sample_set set;
  for (std::size_t k : {std::size_t{0}, std::size_t{1}, std::size_t{2}, std::size_t{10}, std::size_t{80}, std::size_t{500}}) {
    for (auto [b, e] : {std::pair<std::size_t, std::size_t>{0, 90}, {5, 70}}) {
      estimator::sample_context<float> ctx{pb.kview(), b, e, pb.qview(), pb.scale, nullptr, 0, 0, nullptr};
      estimator::topk{k}.sample(ctx, set);
      for (std::size_t h = 0; h < pb.g; ++h) {
        std::vector<std::size_t> order(e - b);
        std::iota(order.begin(), order.end(), b);
        std::stable_sort(order.begin(), order.end(), [&](std::size_t x, std::size_t y) { return pb.score(h, x) > pb.score(h, y); });
        order.resize(std::min(k, e - b));
        std::sort(order.begin(), order.end());
        std::vector<std::size_t> got;
        for (std::size_t i = 0; i < set.ids.size(); ++i) {
          const double lp = set.log_pi_of(h, i);
          if (lp == -std::numeric_limits<double>::infinity()) continue;
          CHECK(lp == 0.0);
          got.push_back(set.ids[i]);
        }
        CHECK(got == order);
      }
    }
  }
}

TEST_CASE("oracle_sampling inclusion: sum pi = k, capped at 1, proportional to the weights") {
  std::vector<double> logw{0.0, 5.0, 4.9, -1.0, -2.0, 0.5, -30.0, 3.0};
  std::vector<double> pi;
  for (double k : {0.0, 0.5, 1.0, 2.0, 3.5, 7.0, 8.0, 20.0}) {
    estimator::oracle_sampling::inclusion(logw, k, pi);
    const double total = std::accumulate(pi.begin(), pi.end(), 0.0);
    CHECK(total == doctest::Approx(std::min(k, 8.0)).epsilon(1e-12));
    double c = -1;
    for (std::size_t i = 0; i < pi.size(); ++i) {
      CHECK(pi[i] >= 0.0);
      CHECK(pi[i] <= 1.0);
      if (pi[i] < 1.0 && pi[i] > 0.0) {  // uncapped: the same constant c = pi / w for all of them
        const double ci = pi[i] / std::exp(logw[i]);
        if (c < 0) c = ci;
        CHECK(ci == doctest::Approx(c).epsilon(1e-12));
      }
    }
    for (std::size_t i = 0; i < pi.size(); ++i)  // capped keys are the heaviest
      for (std::size_t j = 0; j < pi.size(); ++j)
        if (pi[i] == 1.0 && pi[j] < 1.0) CHECK(logw[i] >= logw[j]);
  }
}

TEST_CASE("designs that take every key equal exact attention") {
  const std::size_t hk = 2, g = 2, n = 260, d = 16;
  std::vector<float> K(hk * n * d), V(hk * n * d), Q(hk * g * d);
  random::fill_normal(K.data(), K.size(), 3, 1);
  random::fill_normal(V.data(), V.size(), 3, 2);
  random::fill_normal(Q.data(), Q.size(), 3, 3);
  cache_view<const float> kc(K.data(), hk, n, d), vc(V.data(), hk, n, d);
  const decode_params p{4, 16};
  std::vector<float> want(hk * g * d), got(want.size()), lse_want(hk * g), lse_got(hk * g);
  lsh_index<> idx(d, hk, lsh_params{1, 1024, 1, 8});
  idx.build(kc, p.sink, n - p.window);
  const auto run = [&](const auto& est, std::vector<float>& out, std::vector<float>& lse) {
    std::fill(out.begin(), out.end(), std::nanf(""));
    decode_stats st;
    decode(reference, est, p,
           decode_request<float, float>{matrix_view<const float>(Q.data(), hk * g, d), kc, vc, &idx,
                                        matrix_view<float>(out.data(), hk * g, d), lse, &st});
    return st;
  };
  run(estimator::exact{}, want, lse_want);
  // Budgets covering the whole sampled range: the same keys with pi = 1, so
  // the same float64 operations in the same order: identical results.
  for (std::size_t k : {n - p.sink - p.window, n}) {
    run(estimator::topk{k}, got, lse_got);
    CHECK(got == want);
    CHECK(lse_got == lse_want);
    run(estimator::uniform{k, 5}, got, lse_got);
    CHECK(got == want);
    CHECK(lse_got == lse_want);
    run(estimator::oracle_sampling{k, 5}, got, lse_got);
    CHECK(got == want);
    CHECK(lse_got == lse_want);
  }
  // LSH with K = 1, L = 1024, m = 1: a key escapes only if it misses all 1024
  // tables, probability (theta/pi)^1024 < 1e-20 here, so every key is taken
  // and 1 - u < 1e-20 rounds to u = 1 in float64: at most one float ulp apart.
  const auto st = run(estimator::lsh{}, got, lse_got);
  CHECK(st.sampled_keys == hk * g * (n - p.sink - p.window));
  for (std::size_t i = 0; i < got.size(); ++i) CHECK(std::fabs(got[i] - want[i]) <= 0x1p-23 * std::fabs(want[i]) + 1e-30);
  for (std::size_t i = 0; i < lse_got.size(); ++i) CHECK(std::fabs(lse_got[i] - lse_want[i]) <= 0x1p-23 * std::fabs(lse_want[i]));
}
