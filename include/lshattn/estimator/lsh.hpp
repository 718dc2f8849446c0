#pragma once
#include <algorithm>
#include <cmath>

#include "lshattn/collision/inclusion.hpp"
#include "lshattn/estimator/sample.hpp"

namespace lshattn::estimator {

/// MagicPIG's estimator (Chen et al. 2024, section 4): the keys that collide
/// with the query in at least m of the index's L tables, each weighted by the
/// inverse of its inclusion probability u_i = P(Binomial(L, p_i) >= m), with
/// p_i the table collision probability at the angle between the query and the
/// centred key. Self-normalised Horvitz-Thompson: consistent, bias O(1/|S|).
///
/// Under GQA one retrieval set is formed per KV head as the union of its query
/// heads' sets; each head keeps its own u and excludes ids it did not sample.
struct lsh {
  static constexpr bool uses_index = true;
  int m = 0;  ///< collision threshold; 0 takes the index's own m

  void validate() const {
    LSHATTN_REQUIRE(m >= 0, invalid_argument, "lsh.m", "m = ", m, " must be >= 1 (or 0 for the index's m)");
  }

  template <class T, class I>
  void sample(const sample_context<T, I>& ctx, sample_set& out) const {
    const I& index = *ctx.index;
    const int threshold = m > 0 ? m : index.threshold();
    const std::size_t g = ctx.queries.rows, d = ctx.keys.cols;
    const int L = index.family().tables();
    retrieval_workspace& ws = *ctx.retrieval;
    out.reset(g);
    // Per head: retrieve, then the union of ids (sorted merge).
    std::vector<std::vector<std::uint32_t>> per_head(g);
    for (std::size_t h = 0; h < g; ++h) {
      index.query(ctx.kv_head, ctx.queries.row(h), threshold, ws);
      per_head[h] = ws.ids;
      std::vector<std::uint32_t> merged;
      std::set_union(out.ids.begin(), out.ids.end(), ws.ids.begin(), ws.ids.end(), std::back_inserter(merged));
      out.ids.swap(merged);
    }
    out.allocate_weights();
    const auto mean = index.mean(ctx.kv_head);
    std::vector<float> x(d);
    for (std::size_t h = 0; h < g; ++h) {
      const float* q = ctx.queries.row(h);
      double qn = 0.0;
      for (std::size_t j = 0; j < d; ++j) qn += static_cast<double>(q[j]) * q[j];
      qn = std::sqrt(qn);
      std::size_t j_out = 0;
      for (std::uint32_t id : per_head[h]) {
        while (out.ids[j_out] != id) ++j_out;
        const T* k = ctx.keys.row(id);
        double dot = 0.0, kn = 0.0;
        for (std::size_t j = 0; j < d; ++j) {
          const double xc = static_cast<double>(to_float(k[j]) - mean[j]);  // the centred key as hashed
          dot += static_cast<double>(q[j]) * xc;
          kn += xc * xc;
        }
        const double c = collision::cosine(dot, qn, std::sqrt(kn));
        const double u = collision::inclusion_probability(index.family().table_collision_probability(c), L, threshold);
        // A retrieved key has u > 0 in exact arithmetic; the floor keeps a
        // rounding-level cosine of -1 from turning into an infinite weight.
        out.log_pi[h * out.ids.size() + j_out] = std::log(std::max(u, std::numeric_limits<double>::min()));
      }
    }
  }
};

}  // namespace lshattn::estimator
