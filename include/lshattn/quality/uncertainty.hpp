#pragma once
// Error bars for one self-normalised decode output: the estimated standard
// error of every output element and Kish's effective sample size, computed
// from the sampled terms alone (no second sample, no exact pass).
//
// The output of one query head is the ratio estimator
//   o_hat = N_hat / Z_hat,  N_hat = A + sum_S (w_i / pi_i) v_i,  Z_hat = B + sum_S w_i / pi_i,
// where A, B are the exactly attended (dense) numerator and denominator and
// w_i = exp(s_i). Linearising the ratio around (N, Z) (the delta method, as for
// any ratio estimator: Sarndal, Swensson & Wretman, "Model Assisted Survey
// Sampling", 1992, the chapter on estimating ratios and means) gives
//   o_hat - o ~ sum_S (y_i / pi_i) - sum_U y_i  with residuals y_i = w_i (v_i - o) / Z, so Var(o_hat) is the variance of the HT
// estimator of the total of y over the sampled range U. Plugging in o_hat and
// Z_hat for o and Z:
//
//   Poisson-type designs (each key included independently with probability
//   pi_i: oracle sampling, and MagicPIG's m-of-L rule treated as such), HT's
//   unbiased variance estimator for Poisson sampling (Horvitz & Thompson
//   1952; Sarndal et al. 1992, Poisson sampling in chapter 3):
//     V_j = sum_S (1 - pi_i) / pi_i^2 * y_ij^2.
//   Keys with pi_i = 1 (top-k, exact, capped oracle keys) contribute nothing.
//
//   Simple random sampling of k of the N keys without replacement (uniform):
//   the finite-population form (Cochran, "Sampling Techniques", 3rd ed. 1977:
//   chapter 2 for the SRS variance with its (1 - f) correction, chapter 6 for
//   the ratio estimator),
//     V_j = N^2 (1 - k/N) s_j^2 / k,  s_j^2 = sum_S (y_ij - ybar_j)^2 / (k - 1).
//
// Caveats, stated where users read them:
//   * The LSH design is not Poisson: keys close to each other share hyperplanes
//     and tend to collide together, so inclusions are positively correlated;
//     the Poisson form ignores these covariances (it underestimates when
//     clustered keys have residuals of one sign, overestimates otherwise).
//     docs/quality.md reports the measured coverage.
//   * The linearisation ignores the ratio's O(1/|S|) bias; with a handful of
//     effective samples intervals undercover.
//   * Top-k's error is bias (the dropped tail), which no sampling variance sees:
//     its standard error is 0 by construction.
//
// Effective sample size (Kish 1965, "Survey Sampling"): of the
// sampled part only, ESS = (sum_S W_i)^2 / sum_S W_i^2 with W_i = w_i / pi_i;
// 0 when the head sampled nothing. The dense part is exact and is not counted.

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <limits>
#include <vector>

#include "lshattn/estimator/uniform.hpp"

namespace lshattn::quality {

/// How a sampling design chose its keys, which decides its variance formula.
enum class sampling_design : unsigned char {
  poisson,        ///< independent inclusions with probabilities pi_i (lsh, oracle, topk, exact)
  simple_random,  ///< k of N without replacement, pi = k / N (uniform)
};

/// The design of an estimator type: Poisson unless specialised.
template <class Est>
inline constexpr sampling_design design_of = sampling_design::poisson;
template <>
inline constexpr sampling_design design_of<estimator::uniform> = sampling_design::simple_random;

/// Accumulates the sampled terms of one query head after o_hat and ln Z_hat
/// are known, then writes the standard errors and the ESS.
/// Usage: reset(o_hat, lse); add(s_i, ln pi_i, v_i) for every i in S; finish(...).
class uncertainty_accumulator {
 public:
  /// o_hat: the final output of the head (d values); lse: ln Z_hat (natural log).
  void reset(const double* o_hat, std::size_t d, double lse) {
    o_.assign(o_hat, o_hat + d);
    lse_ = lse;
    sum1_.assign(d, 0.0);
    sum2_.assign(d, 0.0);
    poisson_.assign(d, 0.0);
    k_ = 0;
    logw_.clear();
  }

  /// One sampled key: raw score s (scaled, no -ln pi correction), ln pi, value row.
  template <class TV>
  void add(double s, double log_pi, const TV* v) {
    const double pi = std::exp(log_pi);
    const double a = s - log_pi - lse_;  // ln (W_i / Z_hat), W_i = w_i / pi_i
    logw_.push_back(a);
    ++k_;
    const double r = std::exp(s - lse_);              // w_i / Z_hat
    const double c = (1.0 - pi) * std::exp(2.0 * a);  // (1 - pi_i) / pi_i^2 * (w_i / Z_hat)^2
    for (std::size_t j = 0; j < o_.size(); ++j) {
      const double dv = static_cast<double>(to_float(v[j])) - o_[j];
      const double y = r * dv;
      sum1_[j] += y;
      sum2_[j] += y * y;
      poisson_[j] += c * dv * dv;
    }
  }

  /// Writes d standard errors to se (may be null) and returns the ESS.
  /// range: N, the number of keys in the sampled range (for simple_random).
  double finish(sampling_design design, std::size_t range, float* se) const {
    if (se) {
      const double N = static_cast<double>(range), k = static_cast<double>(k_);
      for (std::size_t j = 0; j < o_.size(); ++j) {
        double v = 0.0;
        if (design == sampling_design::poisson) {
          v = poisson_[j];
        } else if (k_ >= 2 && range > k_) {
          const double s2 = (sum2_[j] - sum1_[j] * sum1_[j] / k) / (k - 1.0);
          v = N * N * (1.0 - k / N) * std::max(0.0, s2) / k;
        }
        se[j] = static_cast<float>(std::sqrt(std::max(0.0, v)));
      }
    }
    if (logw_.empty()) return 0.0;
    double mx = -std::numeric_limits<double>::infinity();
    for (double a : logw_) mx = std::max(mx, a);
    double s1 = 0.0, s2 = 0.0;
    for (double a : logw_) {
      const double e = std::exp(a - mx);
      s1 += e;
      s2 += e * e;
    }
    return s1 * s1 / s2;
  }

 private:
  std::vector<double> o_, sum1_, sum2_, poisson_, logw_;
  double lse_ = 0.0;
  std::size_t k_ = 0;
};

}  // namespace lshattn::quality
