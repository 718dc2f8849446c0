#pragma once
#include "lshattn/core/params.hpp"
#include "lshattn/estimator/sample.hpp"

namespace lshattn::estimator {

/// Exact attention: every key of the sampled range, pi = 1. The ground truth
/// the other estimators are measured against.
struct exact {
  static constexpr bool uses_index = false;
  void validate() const noexcept {}
  template <class T, class I>
  void sample(const sample_context<T, I>& ctx, sample_set& out) const {
    out.reset(ctx.queries.rows);
    for (std::size_t i = ctx.begin; i < ctx.end; ++i) out.ids.push_back(static_cast<std::uint32_t>(i));
    out.log_pi.assign(out.group * out.ids.size(), 0.0);
  }
};

}  // namespace lshattn::estimator
