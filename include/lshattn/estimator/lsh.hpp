#pragma once
#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include <Eigen/Core>

#include "lshattn/collision/inclusion.hpp"
#include "lshattn/collision/joint_inclusion.hpp"
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
    for (std::size_t h = 0; h < g; ++h) {
      const float* q = ctx.queries.row(h);
      const double qn = norm_of(q, d);
      std::size_t j_out = 0;
      for (std::uint32_t id : per_head[h]) {
        while (out.ids[j_out] != id) ++j_out;
        double dot = 0.0, kn = 0.0;
        centred_dot(q, ctx.keys.row(id), mean, d, dot, kn);
        const double c = collision::cosine(dot, qn, std::sqrt(kn));
        // A retrieved key has u > 0 in exact arithmetic; the floor keeps a
        // rounding-level cosine of -1 from turning into an infinite weight.
        out.log_pi[h * out.ids.size() + j_out] =
            collision::log_inclusion_probability_at(c, index.family().bits(), L, threshold);
      }
    }
  }

  /// The joint inclusion probabilities of the ids head h sampled (finite
  /// ln pi, in the set's order), [k, k] row-major with pi_i on the diagonal:
  /// the design's second-order probabilities, for the error bars
  /// (quality/uncertainty.hpp). From the angles between the query and the two
  /// centred keys and between the keys (collision/joint_inclusion.hpp, the
  /// SimHash model); O(k^2 d) time, 8 k^2 bytes. The marginals are computed
  /// as in sample().
  template <class T, class I>
  void joint_inclusion(const sample_context<T, I>& ctx, const sample_set& set, std::size_t h,
                       std::vector<double>& out) const {
    const I& index = *ctx.index;
    const int threshold = m > 0 ? m : index.threshold();
    const int K = index.family().bits(), L = index.family().tables();
    const std::size_t d = ctx.keys.cols;
    const auto mean = index.mean(ctx.kv_head);
    const float* q = ctx.queries.row(h);
    const double qn = norm_of(q, d);
    std::vector<double> x;  // the sampled centred keys, [k, d] row-major
    std::vector<double> norm, theta, p, pi;  // per key: |x|, angle to q, table and set inclusion probabilities
    for (std::size_t j = 0; j < set.ids.size(); ++j) {
      if (set.log_pi_of(h, j) == -std::numeric_limits<double>::infinity()) continue;
      double dot = 0.0, kn = 0.0;
      centred_dot(q, ctx.keys.row(set.ids[j]), mean, d, dot, kn, &x);
      norm.push_back(std::sqrt(kn));
      const double c = collision::cosine(dot, qn, norm.back());
      theta.push_back(std::acos(c));
      p.push_back(index.family().table_collision_probability(c));
      pi.push_back(collision::inclusion_probability(p.back(), L, threshold));
    }
    const std::size_t n = pi.size();
    using row_major = Eigen::Matrix<double, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
    const Eigen::Map<const row_major> X(x.data(), static_cast<Eigen::Index>(n), static_cast<Eigen::Index>(d));
    Eigen::VectorXd dots(static_cast<Eigen::Index>(n));
    out.assign(n * n, 0.0);
    for (std::size_t a = 0; a < n; ++a) {
      out[a * n + a] = pi[a];
      const auto rest = static_cast<Eigen::Index>(n - a - 1);
      // Key a against every later key: one matrix-vector product.
      dots.head(rest).noalias() = X.bottomRows(rest) * X.row(static_cast<Eigen::Index>(a)).transpose();
      for (std::size_t b = a + 1; b < n; ++b) {
        const double cab = collision::cosine(dots(static_cast<Eigen::Index>(b - a - 1)), norm[a], norm[b]);
        const auto t = collision::table_outcomes_of_angles(theta[a], theta[b], std::acos(cab), p[a], p[b], K);
        out[a * n + b] = out[b * n + a] = collision::joint_inclusion_probability(t, L, threshold, pi[a], pi[b]);
      }
    }
  }

 private:
  static double norm_of(const float* q, std::size_t d) {
    double s = 0.0;
    for (std::size_t j = 0; j < d; ++j) s += static_cast<double>(q[j]) * q[j];
    return std::sqrt(s);
  }

  /// q . x and |x|^2 in float64 for the centred key x = k - mean, rounded in
  /// float as the index hashed it; x is appended to *centred when given.
  template <class T, class M>
  static void centred_dot(const float* q, const T* k, const M& mean, std::size_t d, double& dot, double& kn,
                          std::vector<double>* centred = nullptr) {
    for (std::size_t j = 0; j < d; ++j) {
      const double xc = static_cast<double>(to_float(k[j]) - mean[j]);
      if (centred) centred->push_back(xc);
      dot += static_cast<double>(q[j]) * xc;
      kn += xc * xc;
    }
  }
};

}  // namespace lshattn::estimator
