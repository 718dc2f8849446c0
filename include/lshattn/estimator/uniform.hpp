#pragma once
#include <algorithm>
#include <cmath>

#include "lshattn/estimator/sample.hpp"
#include "lshattn/random/philox.hpp"

namespace lshattn::estimator {

/// Uniform sampling: a simple random sample of k keys of the sampled range,
/// without replacement (Knuth's selection sampling, TAOCP 3.4.2 algorithm S),
/// shared by the query heads of a KV head; pi = k / n for every key. With
/// k >= n it is exact attention. Random stream: (seed, ctx.stream).
struct uniform {
  static constexpr bool uses_index = false;
  std::size_t k = 0;
  std::uint64_t seed = 1;

  void validate() const noexcept {}
  template <class T, class I>
  void sample(const sample_context<T, I>& ctx, sample_set& out) const {
    const std::size_t g = ctx.queries.rows, n = ctx.end - ctx.begin;
    out.reset(g);
    const std::size_t take = std::min(k, n);
    random::philox_engine rng(seed, ctx.stream);
    std::size_t need = take;
    for (std::size_t i = 0; i < n && need; ++i)
      if (rng.below(n - i) < need) {
        out.ids.push_back(static_cast<std::uint32_t>(ctx.begin + i));
        --need;
      }
    const double lp = take == n ? 0.0 : std::log(static_cast<double>(take) / static_cast<double>(n));
    out.log_pi.assign(g * out.ids.size(), lp);
  }
};

}  // namespace lshattn::estimator
