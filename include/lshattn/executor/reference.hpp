#pragma once
// The reference executor: plain scalar C++ with float64 accumulation, written
// for clarity. It is the ground truth that the SIMD and CUDA executors are
// tested against, and the semantics every executor implements:
//   for each KV head: S = estimator.sample(...);
//   for each of its query heads h:
//     dense state  over [0, begin) U [end, tokens)   (exact softmax)
//     sampled state over S with scores s_i - ln pi_{h,i} (Horvitz-Thompson)
//     output, lse = merge(dense, sampled)             (core/state.hpp)

#include <cmath>
#include <limits>
#include <span>
#include <vector>

#include "lshattn/core/state.hpp"
#include "lshattn/estimator/sample.hpp"
#include "lshattn/executor/request.hpp"
#include "lshattn/quality/uncertainty.hpp"

namespace lshattn::executor {

/// Execution policy of the reference executor (use the value lshattn::reference).
struct reference_policy {
  template <estimator::sampler Est, element_type TQ, element_type TK, element_type TV, class I>
  void decode(const Est& est, const decode_params& p, std::span<const decode_request<TQ, TK, TV, I>> batch) const {
    for (const auto& r : batch) detail::validate_request(est, r, p);
    std::size_t seq = 0;
    for (const auto& r : batch) run_one(est, p, r, seq++);
  }

 private:
  template <class Est, class TQ, class TK, class TV, class I>
  static void run_one(const Est& est, const decode_params& p, const decode_request<TQ, TK, TV, I>& r,
                      std::size_t seq) {
    const std::size_t hq = r.queries.rows, hk = r.keys.heads, d = r.queries.cols, n = r.keys.tokens;
    const std::size_t group = hq / hk;
    const double scale = p.effective_scale(d);
    const auto [b, e] = detail::sampled_range<Est>(r, p);
    std::vector<float> q(group * d);
    std::vector<double> o_dense(d), o_samp(d);
    retrieval_workspace ws;
    estimator::sample_set set;
    quality::uncertainty_accumulator unc;
    std::vector<float> se(d);
    std::vector<double> joint;  // pi_ik of one head's sampled keys (correlated designs only)
    for (std::size_t kh = 0; kh < hk; ++kh) {
      for (std::size_t g = 0; g < group; ++g)
        for (std::size_t j = 0; j < d; ++j) q[g * d + j] = to_float(r.queries(kh * group + g, j));
      estimator::sample_context<TK, I> ctx{r.keys.head(kh), b, e, matrix_view<const float>(q.data(), group, d),
                                           scale, r.index, kh, seq * hk + kh, &ws};
      est.sample(ctx, set);
      for (std::size_t g = 0; g < group; ++g) {
        const float* qh = q.data() + g * d;
        double lse_dense = -std::numeric_limits<double>::infinity();
        double lse_samp = lse_dense;
        softmax_accumulate(qh, r, kh, scale, 0, b, nullptr, o_dense, lse_dense);
        softmax_accumulate(qh, r, kh, scale, e, n, nullptr, o_dense, lse_dense);
        softmax_accumulate(qh, r, kh, scale, 0, set.ids.size(), &set, o_samp, lse_samp, g);
        merge_state(o_dense.data(), lse_dense, o_samp.data(), lse_samp, d);
        const std::size_t h = kh * group + g;
        for (std::size_t j = 0; j < d; ++j) r.output(h, j) = static_cast<float>(o_dense[j]);
        if (!r.lse.empty()) r.lse[h] = static_cast<float>(lse_in_base(lse_dense, p.base));
        if (!r.std_error.empty() || !r.ess.empty()) {
          // Error bars from the sampled terms, given the final o_hat and ln Z_hat.
          constexpr quality::sampling_design design = quality::design_of<Est>;
          unc.reset(o_dense.data(), d, lse_dense, r.std_error.empty() ? quality::sampling_design::poisson : design);
          for (std::size_t j = 0; j < set.ids.size(); ++j) {
            const double lp = set.log_pi_of(g, j);
            if (lp == -std::numeric_limits<double>::infinity()) continue;
            unc.add(estimator::score(qh, r.keys.row(kh, set.ids[j]), d, scale), lp, r.values.row(kh, set.ids[j]));
          }
          // A correlated design's pair terms need its joint inclusion
          // probabilities, over the ids head g sampled (in the order added).
          if constexpr (design == quality::sampling_design::joint)
            if (!r.std_error.empty()) est.joint_inclusion(ctx, set, g, joint);
          const double ess = unc.finish(design, e - b, r.std_error.empty() ? nullptr : se.data(), joint);
          if (!r.std_error.empty())
            for (std::size_t j = 0; j < d; ++j) r.std_error(h, j) = se[j];
          if (!r.ess.empty()) r.ess[h] = static_cast<float>(ess);
        }
        if (r.stats) {
          std::size_t in = 0;
          for (std::size_t j = 0; j < set.ids.size(); ++j) in += std::isfinite(set.log_pi_of(g, j)) ? 1 : 0;
          r.stats->sampled_keys += in;
          r.stats->dense_keys += b + (n - e);
          r.stats->sampled_range += e - b;
        }
      }
      if (r.stats) r.stats->union_keys += set.ids.size();
    }
  }

  // Fold positions [lo, hi) into the running state (o, lse): either cache
  // tokens directly (set == nullptr) or entries of a sample set, whose scores
  // are corrected by -ln pi for head g and skipped where pi = 0.
  template <class TQ, class TK, class TV, class I>
  static void softmax_accumulate(const float* q, const decode_request<TQ, TK, TV, I>& r, std::size_t kh,
                                 double scale, std::size_t lo, std::size_t hi, const estimator::sample_set* set,
                                 std::vector<double>& o, double& lse, std::size_t g = 0) {
    const std::size_t d = o.size();
    if (lse == -std::numeric_limits<double>::infinity()) std::fill(o.begin(), o.end(), 0.0);
    double mx = lse, sum = std::isfinite(lse) ? 1.0 : 0.0;  // o is normalised: carry it with weight e^(lse - mx)
    for (std::size_t i = lo; i < hi; ++i) {
      std::size_t t = i;
      double corr = 0.0;
      if (set) {
        corr = set->log_pi_of(g, i);
        if (corr == -std::numeric_limits<double>::infinity()) continue;
        t = set->ids[i];
      }
      const double s = estimator::score(q, r.keys.row(kh, t), d, scale) - corr;
      const TV* v = r.values.row(kh, t);
      if (s > mx) {  // rescale what has been accumulated
        const double f = sum > 0.0 ? std::exp(mx - s) : 0.0;
        for (std::size_t j = 0; j < d; ++j) o[j] *= f;
        sum *= f;
        mx = s;
      }
      const double w = std::exp(s - mx);
      sum += w;
      for (std::size_t j = 0; j < d; ++j) o[j] += w * static_cast<double>(to_float(v[j]));
    }
    if (sum > 0.0) {
      // o currently holds sum_i w_i v_i (relative to mx) plus the carried normalised part.
      for (std::size_t j = 0; j < d; ++j) o[j] /= sum;
      lse = mx + std::log(sum);
    } else if (std::isnan(sum)) {
      // A NaN score (non-finite key) fails every comparison above; without
      // this the state would keep lse = -inf and the merge would silently drop
      // the whole part. The documented policy is that it reaches the output.
      std::fill(o.begin(), o.end(), std::numeric_limits<double>::quiet_NaN());
      lse = std::numeric_limits<double>::quiet_NaN();
    }
  }
};

}  // namespace lshattn::executor

namespace lshattn {
/// The reference executor: lshattn::decode(lshattn::reference, ...).
inline constexpr executor::reference_policy reference{};
}  // namespace lshattn
