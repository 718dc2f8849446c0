#pragma once
#include <algorithm>
#include <utility>

#include "lshattn/estimator/sample.hpp"

namespace lshattn::estimator {

/// Oracle top-k: for each query head, the k keys of the sampled range with the
/// highest scores, attended exactly (pi = 1). Biased when attention is not
/// sparse: the tail's mass 1 - W_T is dropped (method.md). A baseline; it reads
/// every key to find the top k.
struct topk {
  static constexpr bool uses_index = false;
  std::size_t k = 0;  ///< keys per query head

  void validate() const noexcept {}
  template <class T, class I>
  void sample(const sample_context<T, I>& ctx, sample_set& out) const {
    const std::size_t g = ctx.queries.rows, n = ctx.end - ctx.begin, d = ctx.keys.cols;
    out.reset(g);
    std::vector<std::vector<std::uint32_t>> chosen(g);
    std::vector<std::pair<double, std::uint32_t>> s(n);
    for (std::size_t h = 0; h < g; ++h) {
      for (std::size_t i = 0; i < n; ++i)
        s[i] = {score(ctx.queries.row(h), ctx.keys.row(ctx.begin + i), d, ctx.scale),
                static_cast<std::uint32_t>(ctx.begin + i)};
      const std::size_t take = std::min(k, n);
      // Highest score first; ties broken by the lower position, so the set is deterministic.
      std::partial_sort(s.begin(), s.begin() + static_cast<std::ptrdiff_t>(take), s.end(), [](auto& a, auto& b) {
        return a.first != b.first ? a.first > b.first : a.second < b.second;
      });
      for (std::size_t i = 0; i < take; ++i) chosen[h].push_back(s[i].second);
      std::sort(chosen[h].begin(), chosen[h].end());
      std::vector<std::uint32_t> merged;
      std::set_union(out.ids.begin(), out.ids.end(), chosen[h].begin(), chosen[h].end(), std::back_inserter(merged));
      out.ids.swap(merged);
    }
    out.allocate_weights();
    for (std::size_t h = 0; h < g; ++h)
      for (std::uint32_t id : chosen[h]) {
        const auto j = static_cast<std::size_t>(std::lower_bound(out.ids.begin(), out.ids.end(), id) - out.ids.begin());
        out.log_pi[h * out.ids.size() + j] = 0.0;
      }
  }
};

}  // namespace lshattn::estimator
