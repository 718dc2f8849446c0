#pragma once
#include <algorithm>
#include <cmath>

#include "lshattn/estimator/sample.hpp"
#include "lshattn/random/philox.hpp"

namespace lshattn::estimator {

/// Oracle sampling: each query head includes key i independently with
/// probability pi_i = min(1, c w_i), proportional to its softmax weight w_i and
/// capped at 1, with c chosen so that sum pi_i = k (Poisson sampling with
/// probability proportional to size). It is the importance-sampling design
/// that the LSH estimator approximates without seeing the scores; keys whose
/// pi reaches 1 are attended exactly, so with k >= n it is exact attention.
/// A baseline: it reads every key. Random stream: (seed, ctx.stream).
struct oracle_sampling {
  static constexpr bool uses_index = false;
  std::size_t k = 0;  ///< expected keys per query head
  std::uint64_t seed = 1;

  void validate() const noexcept {}

  /// Inclusion probabilities min(1, c w_i) with sum = min(k, n), from log weights.
  static void inclusion(const std::vector<double>& logw, double k, std::vector<double>& pi) {
    const std::size_t n = logw.size();
    pi.assign(n, 1.0);
    if (k >= static_cast<double>(n)) return;
    if (k <= 0.0) {
      pi.assign(n, 0.0);
      return;
    }
    std::vector<std::size_t> order(n);
    for (std::size_t i = 0; i < n; ++i) order[i] = i;
    std::sort(order.begin(), order.end(), [&](std::size_t a, std::size_t b) { return logw[a] > logw[b]; });
    const double mx = logw[order[0]];
    // Capping: the r largest get pi = 1, the rest c w_i with c = (k - r) / sum_rest.
    std::vector<double> suffix(n + 1, 0.0);
    for (std::size_t j = n; j-- > 0;) suffix[j] = suffix[j + 1] + std::exp(logw[order[j]] - mx);
    std::size_t r = 0;
    while (r < n) {
      const double c = (k - static_cast<double>(r)) / suffix[r];
      if (c * std::exp(logw[order[r]] - mx) < 1.0) break;
      ++r;
    }
    const double c = (k - static_cast<double>(r)) / suffix[r];
    for (std::size_t j = 0; j < n; ++j)
      pi[order[j]] = j < r ? 1.0 : std::min(1.0, c * std::exp(logw[order[j]] - mx));
  }

  template <class T, class I>
  void sample(const sample_context<T, I>& ctx, sample_set& out) const {
    const std::size_t g = ctx.queries.rows, n = ctx.end - ctx.begin, d = ctx.keys.cols;
    out.reset(g);
    random::philox_engine rng(seed, ctx.stream);
    std::vector<double> logw(n), pi;
    std::vector<std::vector<std::pair<std::uint32_t, double>>> chosen(g);
    for (std::size_t h = 0; h < g; ++h) {
      for (std::size_t i = 0; i < n; ++i) logw[i] = score(ctx.queries.row(h), ctx.keys.row(ctx.begin + i), d, ctx.scale);
      inclusion(logw, static_cast<double>(k), pi);
      for (std::size_t i = 0; i < n; ++i)
        if (pi[i] >= 1.0 || rng.uniform() < pi[i]) chosen[h].push_back({static_cast<std::uint32_t>(ctx.begin + i), std::log(pi[i])});
      std::vector<std::uint32_t> ids, merged;
      for (auto& c : chosen[h]) ids.push_back(c.first);
      std::set_union(out.ids.begin(), out.ids.end(), ids.begin(), ids.end(), std::back_inserter(merged));
      out.ids.swap(merged);
    }
    out.allocate_weights();
    for (std::size_t h = 0; h < g; ++h)
      for (auto [id, lp] : chosen[h]) {
        const auto j = static_cast<std::size_t>(std::lower_bound(out.ids.begin(), out.ids.end(), id) - out.ids.begin());
        out.log_pi[h * out.ids.size() + j] = lp;
      }
  }
};

}  // namespace lshattn::estimator
