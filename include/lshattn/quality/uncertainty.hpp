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
//   General designs with first- and second-order inclusion probabilities
//   pi_i and pi_ik (MagicPIG's m-of-L rule: sampling_design::joint), the
//   Horvitz-Thompson variance estimator (Horvitz & Thompson 1952; Sarndal et
//   al. 1992, section 2.8, the pi estimator's variance and its unbiased estimator):
//     V_j = sum_S (1 - pi_i) / pi_i^2 * y_ij^2
//         + sum_{i != k in S} (pi_ik - pi_i pi_k) / (pi_ik pi_i pi_k) * y_ij y_kj.
//   Written with e_i = y_i / pi_i (the weighted residual) it is the quadratic
//   form sum_ik g_ik e_ij e_kj with g_ii = 1 - pi_i, g_ik = 1 - pi_i pi_k / pi_ik:
//   coefficients of order 1, no overflow for small pi. The coefficient matrix
//   is formed once per head, then one pass per element: O(|S|^2 d). The
//   estimator supplies pi_ik (estimator::lsh::joint_inclusion, from
//   collision/joint_inclusion.hpp). Unbiased because every pi_ik > 0, but not
//   necessarily positive: a negative value is clamped to 0. The
//   Sen-Yates-Grundy form, which is non-negative when every pi_i pi_k >= pi_ik,
//   needs a fixed sample size, and neither holds here (the LSH sample size is
//   random, and nearby keys have pi_ik > pi_i pi_k).
//
//   Poisson designs (each key included independently with probability pi_i:
//   oracle sampling), the same estimator with pi_ik = pi_i pi_k, which leaves
//   the diagonal only (Sarndal et al. 1992, Poisson sampling in chapter 3):
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
//   * LSH's inclusions are correlated (keys close to each other share
//     hyperplane sides and collide together). The Poisson form ignores that and
//     undercovers badly on clustered data (GloVe: 0.6 for nominal 0.95); the
//     joint form accounts for it. docs/quality.md reports both coverages.
//   * The linearisation ignores the ratio's O(1/|S|) bias, and the variance
//     estimate is itself noisy (the pair terms add to that), so o_hat / se is
//     studentised: +- 1.96 se covers about P(|t_nu| <= 1.96), nu = 2 /
//     CV^2(se^2), 0.93 to 0.94 on GloVe. With a handful of effective samples
//     intervals undercover more, whatever the variance formula.
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
#include <span>
#include <vector>

#include <Eigen/Core>

#include "lshattn/core/error.hpp"
#include "lshattn/estimator/lsh.hpp"
#include "lshattn/estimator/uniform.hpp"

namespace lshattn::quality {

/// How a sampling design chose its keys, which decides its variance formula.
enum class sampling_design : unsigned char {
  poisson,        ///< independent inclusions with probabilities pi_i (oracle, topk, exact)
  simple_random,  ///< k of N without replacement, pi = k / N (uniform)
  joint,          ///< correlated inclusions; the estimator supplies pi_ik through joint_inclusion() (lsh)
};

/// The design of an estimator type: Poisson unless specialised.
template <class Est>
inline constexpr sampling_design design_of = sampling_design::poisson;
template <>
inline constexpr sampling_design design_of<estimator::uniform> = sampling_design::simple_random;
template <>
inline constexpr sampling_design design_of<estimator::lsh> = sampling_design::joint;

/// Accumulates the sampled terms of one query head after o_hat and ln Z_hat
/// are known, then writes the standard errors and the ESS.
/// Usage: reset(o_hat, d, lse, design); add(s_i, ln pi_i, v_i) for every i
/// in S; finish(...), with the [k, k] joint inclusion probabilities of the
/// added keys (in the order added) for sampling_design::joint.
class uncertainty_accumulator {
 public:
  /// o_hat: the final output of the head (d values); lse: ln Z_hat (natural log).
  /// design: sampling_design::joint keeps every term (|S| x d doubles) for the pair sums.
  void reset(const double* o_hat, std::size_t d, double lse, sampling_design design = sampling_design::poisson) {
    keep_ = design == sampling_design::joint;
    e_.clear();
    log_pi_.clear();
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
    log_pi_.push_back(log_pi);
    ++k_;
    const double W = std::exp(a);  // e_i = (W_i / Z_hat) (v_i - o_hat) = y_i / pi_i
    const double r = std::exp(s - lse_);              // w_i / Z_hat
    const double c = (1.0 - pi) * std::exp(2.0 * a);  // (1 - pi_i) / pi_i^2 * (w_i / Z_hat)^2
    for (std::size_t j = 0; j < o_.size(); ++j) {
      const double dv = static_cast<double>(to_float(v[j])) - o_[j];
      const double y = r * dv;
      sum1_[j] += y;
      sum2_[j] += y * y;
      poisson_[j] += c * dv * dv;
      if (keep_) e_.push_back(W * dv);
    }
  }

  /// Writes d standard errors to se (may be null) and returns the ESS.
  /// range: N, the number of keys in the sampled range (for simple_random).
  /// joint: for sampling_design::joint, pi_ik of the added keys, [k, k]
  /// row-major, symmetric (the diagonal is not read).
  double finish(sampling_design design, std::size_t range, float* se, std::span<const double> joint = {}) const {
    if (se) {
      const std::size_t d = o_.size();
      std::vector<double> var(d, 0.0);
      if (design == sampling_design::poisson) {
        var = poisson_;
      } else if (design == sampling_design::simple_random) {
        const double N = static_cast<double>(range), k = static_cast<double>(k_);
        if (k_ >= 2 && range > k_)
          for (std::size_t j = 0; j < d; ++j) {
            const double s2 = (sum2_[j] - sum1_[j] * sum1_[j] / k) / (k - 1.0);
            var[j] = N * N * (1.0 - k / N) * std::max(0.0, s2) / k;
          }
      } else {
        LSHATTN_REQUIRE(keep_, invalid_argument, "design",
                        "the joint design needs reset(..., sampling_design::joint) before add()");
        LSHATTN_REQUIRE(joint.size() == k_ * k_, shape_mismatch, "joint", "joint has ", joint.size(),
                        " entries but must be k * k = ", k_ * k_);
        pair_variance(joint, var.data());
      }
      for (std::size_t j = 0; j < d; ++j) se[j] = static_cast<float>(std::sqrt(std::max(0.0, var[j])));
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
  // sum_ik g_ik e_ij e_kj with g_ii = 1 - pi_i and g_ik = 1 - pi_i pi_k / pi_ik,
  // by rows of the upper half: for each i, the row g_i. (k of them) and one
  // vector-matrix product with the later terms, k^2 d / 2 multiply-adds in all
  // and no k x k temporary.
  void pair_variance(std::span<const double> joint, double* var) const {
    using row_major = Eigen::Matrix<double, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
    const auto k = static_cast<Eigen::Index>(k_), d = static_cast<Eigen::Index>(o_.size());
    const Eigen::Map<const row_major> E(e_.data(), k, d);
    Eigen::Map<Eigen::RowVectorXd> v(var, d);
    Eigen::RowVectorXd g(k), cross(d);
    for (Eigen::Index i = 0; i < k; ++i) {
      const double lpi = log_pi_[static_cast<std::size_t>(i)];
      const Eigen::Index rest = k - i - 1;
      for (Eigen::Index c = i + 1; c < k; ++c) {
        // pi_ik > 0 whenever both keys were sampled; the floor keeps an
        // underflowed value from dividing by zero.
        const double pik = std::max(joint[static_cast<std::size_t>(i * k + c)], std::numeric_limits<double>::min());
        g(c - i - 1) = 2.0 * (1.0 - std::exp(lpi + log_pi_[static_cast<std::size_t>(c)] - std::log(pik)));
      }
      cross.noalias() = g.head(rest) * E.bottomRows(rest);
      cross += (1.0 - std::exp(lpi)) * E.row(i);
      v += E.row(i).cwiseProduct(cross);
    }
  }

  std::vector<double> o_, sum1_, sum2_, poisson_, logw_, log_pi_, e_;
  double lse_ = 0.0;
  std::size_t k_ = 0;
  bool keep_ = false;
};

}  // namespace lshattn::quality
