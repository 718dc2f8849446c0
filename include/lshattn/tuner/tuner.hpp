#pragma once
// Choosing K, L and m. MagicPIG's cost and quality both follow from the
// collision model (Chen et al. 2024, section 4; collision/inclusion.hpp): key
// i is sampled with probability u(c_i) = P(Bin(L, P(c_i)^K) >= m), where c_i is
// the cosine between the query and the centred key and P(c) = 1 - acos(c)/pi.
// So for a distribution of cosines the tuner predicts, without building an
// index:
//   keys sampled          E[sum_i u_i]                  = n * E_c[u(c)]
//   bucket entries walked E[sum_l |bucket_l(q)|]        = n * L * E_c[P(c)^K]
//   relative error        sqrt(sum_i (1 - u_i)/u_i * (w_i / Z)^2 |v_i - o|^2) / |o|
// The last line is the Poisson-design variance of the self-normalised
// estimate (quality/uncertainty.hpp) evaluated at the expected inclusion
// probabilities, averaged over the sample's queries as a median.
//
// The cosine distribution comes from a sample of real queries and keys when
// one is given (keys centred by the sample's mean, as the index does), else
// from the isotropic model: the cosine between a fixed direction and a
// uniformly random one in d dimensions, density ~ (1 - c^2)^((d - 3)/2).
// Cosines are binned (bins, default 1024, over [-1, 1]); each candidate
// (K, L, m) costs one inclusion evaluation per occupied bin.
//
// The error line treats inclusions as independent. They are not: keys near
// each other share hyperplane sides and collide together, and on clustered
// real data (GloVe, docs/quality.md) the true error is up to about twice the
// prediction. With verify_seeds > 0 the error mode therefore checks its choice
// by simulation (an index over the sample keys, the lsh estimator on every
// sample query, verify_seeds hyperplane seeds), and while the measured median
// misses the target it scales the model's predictions by the measured/target
// ratio and chooses again (at most 6 rounds; met = false if none verified).

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <utility>
#include <vector>

#include "lshattn/collision/inclusion.hpp"
#include "lshattn/decode.hpp"
#include "lshattn/estimator/exact.hpp"
#include "lshattn/estimator/lsh.hpp"
#include "lshattn/executor/reference.hpp"
#include "lshattn/index/lsh_index.hpp"
#include "lshattn/core/error.hpp"
#include "lshattn/core/params.hpp"
#include "lshattn/core/view.hpp"

namespace lshattn::tuner {

/// What to tune for. Shapes: sample queries [q, head_dim], keys [k, head_dim],
/// values [k, head_dim] (optional; needed for target_error and for the error prediction).
struct tune_request {
  std::size_t n = 0;         ///< keys in the sampled range (the index size), > 0
  std::size_t head_dim = 0;  ///< 1..max_head_dim
  std::size_t kv_heads = 1;  ///< for the index memory only
  /// Budget: expected sampled keys / n. Used when target_error == 0.
  double target_fraction = 0.02;
  /// If > 0: choose the cheapest parameters whose predicted median relative
  /// error is at most this (needs sample queries, keys and values).
  double target_error = 0.0;
  int m = 2;                 ///< collision threshold; 0 searches m in 1..4
  int K_min = 1, K_max = 20; ///< bits per table searched
  int L_max = 300;           ///< tables searched (a grid up to L_max)
  /// Without a sample, the fraction mode prefers the parameters that include a
  /// key at this cosine to the query most often (a "relevant" key).
  double signal_cosine = 0.3;
  /// Bytes per K+V row (2 * head_dim * element size) vs 4 bytes per bucket
  /// entry, to put retrieval into key-equivalents; 0: bf16 K and V.
  std::size_t row_bytes = 0;
  std::size_t bins = 1024;
  /// Optional sample (empty views: none).
  matrix_view<const float> queries{}, keys{}, values{};
  double scale = 0.0;  ///< score scale; 0: 1/sqrt(head_dim)
  /// > 0: verify (and in error mode calibrate) by simulation on the sample with
  /// this many index seeds; needs sample values. 0: the model alone.
  int verify_seeds = 0;

  void validate() const {
    LSHATTN_REQUIRE(n >= 1, invalid_argument, "n", "n = ", n, " must be >= 1");
    LSHATTN_REQUIRE(head_dim >= 1 && head_dim <= max_head_dim, invalid_argument, "head_dim", "head_dim = ", head_dim,
                    " must be in 1..", max_head_dim);
    LSHATTN_REQUIRE(kv_heads >= 1, invalid_argument, "kv_heads", "kv_heads = ", kv_heads, " must be >= 1");
    LSHATTN_REQUIRE(target_fraction > 0.0 && target_fraction <= 1.0, invalid_argument, "target_fraction",
                    "target_fraction = ", target_fraction, " must be in (0, 1]");
    LSHATTN_REQUIRE(target_error >= 0.0 && std::isfinite(target_error), invalid_argument, "target_error",
                    "target_error = ", target_error, " must be finite and >= 0");
    LSHATTN_REQUIRE(m >= 0 && m <= 4, invalid_argument, "m", "m = ", m, " must be 0 (search) or 1..4");
    LSHATTN_REQUIRE(K_min >= 1 && K_max <= 32 && K_min <= K_max, invalid_argument, "K_min", "[K_min, K_max] = [",
                    K_min, ", ", K_max, "] must lie in 1..32");
    LSHATTN_REQUIRE(L_max >= 1 && L_max <= max_tables, invalid_argument, "L_max", "L_max = ", L_max,
                    " must be in 1..", max_tables);
    LSHATTN_REQUIRE(bins >= 16 && bins <= (1u << 20), invalid_argument, "bins", "bins = ", bins,
                    " must be in 16..2^20");
    LSHATTN_REQUIRE(std::isfinite(scale) && scale >= 0.0, invalid_argument, "scale", "scale = ", scale,
                    " must be finite and >= 0");
    const bool has_sample = !queries.empty() || !keys.empty();
    if (has_sample) {
      LSHATTN_REQUIRE(!queries.empty() && !keys.empty(), invalid_argument, "queries",
                      "a sample needs both queries and keys");
      LSHATTN_REQUIRE(queries.cols == head_dim && keys.cols == head_dim, shape_mismatch, "keys",
                      "sample queries and keys must have head_dim = ", head_dim, " columns (got ", queries.cols,
                      " and ", keys.cols, ")");
      LSHATTN_REQUIRE(values.empty() || (values.rows == keys.rows && values.cols == head_dim), shape_mismatch,
                      "values", "sample values must be empty or ", keys.rows, " x ", head_dim);
    }
    LSHATTN_REQUIRE(target_error == 0.0 || (has_sample && !values.empty()), invalid_argument, "target_error",
                    "a target error needs a sample of queries, keys and values");
    LSHATTN_REQUIRE(verify_seeds >= 0 && (verify_seeds == 0 || !values.empty()), invalid_argument, "verify_seeds",
                    "verify_seeds = ", verify_seeds, " must be >= 0, and > 0 needs sample values");
  }
};

/// The chosen parameters and what they are predicted to cost.
struct tune_result {
  lsh_params params{};
  double expected_keys = 0.0;            ///< E[sum u_i] over the n keys
  double expected_fraction = 0.0;        ///< expected_keys / n
  double expected_bucket_entries = 0.0;  ///< E[ids walked in the L buckets]
  double cost_key_equivalents = 0.0;     ///< expected_keys + bucket entries * 4 / row_bytes
  double predicted_error = std::numeric_limits<double>::quiet_NaN();  ///< median over sample queries; NaN: no values
  double signal_inclusion = 0.0;         ///< u at signal_cosine
  std::size_t index_bytes = 0;           ///< tables + means for kv_heads heads, plus the hyperplanes
  std::size_t candidates = 0;            ///< (K, L, m) triples evaluated
  /// With verify_seeds > 0: measured on the sample (median relative error over
  /// queries x seeds; mean sampled fraction). NaN otherwise.
  double measured_error = std::numeric_limits<double>::quiet_NaN();
  double measured_fraction = std::numeric_limits<double>::quiet_NaN();
  bool met = false;                      ///< false: nothing met the target; the closest is returned
};

/// Bytes an lsh_index over n keys takes (lsh_index::memory_bytes() plus the
/// SimHash family's hyperplanes); an upper bound when the directory is sparse.
inline std::size_t index_memory_bytes(std::size_t n, std::size_t head_dim, std::size_t kv_heads, int K, int L) {
  const std::uint64_t B = std::uint64_t{1} << K;
  const bool dense = B <= 2 * n + 1024;  // lsh_index's directory rule
  const std::size_t dir = dense ? (B + 1) * 4 : (std::min<std::uint64_t>(B, n) * 2 + 1) * 4;
  const std::size_t per_table = n * 4 + dir;
  return kv_heads * (static_cast<std::size_t>(L) * per_table + head_dim * 4) +
         head_dim * static_cast<std::size_t>(K) * static_cast<std::size_t>(L) * 4;
}

namespace detail {

/// Cosine histogram (mass per bin, summing to 1) and, per sample query, the
/// error weights per bin: sum over keys in the bin of (w/Z)^2 |v - o|^2 / |o|^2.
struct cosine_model {
  std::size_t bins = 0;
  std::vector<double> mass;                 // [bins]
  std::vector<std::vector<double>> err;     // [queries][bins], empty without values
  [[nodiscard]] double centre(std::size_t b) const {
    return -1.0 + (static_cast<double>(b) + 0.5) * 2.0 / static_cast<double>(bins);
  }
  [[nodiscard]] std::size_t bin(double c) const {
    const auto b = static_cast<std::ptrdiff_t>((c + 1.0) * 0.5 * static_cast<double>(bins));
    return static_cast<std::size_t>(std::clamp<std::ptrdiff_t>(b, 0, static_cast<std::ptrdiff_t>(bins) - 1));
  }
};

inline cosine_model make_model(const tune_request& r) {
  cosine_model cm;
  cm.bins = r.bins;
  cm.mass.assign(r.bins, 0.0);
  const std::size_t d = r.head_dim;
  if (r.queries.empty()) {
    // Isotropic: density of the cosine to a random direction, ~ (1 - c^2)^((d-3)/2).
    const double e = (static_cast<double>(d) - 3.0) / 2.0;
    double tot = 0.0;
    for (std::size_t b = 0; b < r.bins; ++b) {
      const double c = cm.centre(b);
      cm.mass[b] = d == 1 ? 0.0 : std::pow(std::max(1e-300, 1.0 - c * c), e);
      tot += cm.mass[b];
    }
    if (d == 1) {  // +-1 only
      cm.mass.front() = cm.mass.back() = 0.5;
      tot = 1.0;
    }
    for (auto& x : cm.mass) x /= tot;
    return cm;
  }
  const std::size_t nq = r.queries.rows, nk = r.keys.rows;
  std::vector<double> mean(d, 0.0);
  for (std::size_t i = 0; i < nk; ++i)
    for (std::size_t j = 0; j < d; ++j) mean[j] += static_cast<double>(r.keys(i, j));
  for (auto& x : mean) x /= static_cast<double>(nk);
  std::vector<double> kn(nk, 0.0);
  std::vector<double> kc(nk * d);
  for (std::size_t i = 0; i < nk; ++i) {
    for (std::size_t j = 0; j < d; ++j) {
      kc[i * d + j] = static_cast<double>(r.keys(i, j)) - mean[j];
      kn[i] += kc[i * d + j] * kc[i * d + j];
    }
    kn[i] = std::sqrt(kn[i]);
  }
  const double scale = r.scale > 0.0 ? r.scale : 1.0 / std::sqrt(static_cast<double>(d));
  const bool with_values = !r.values.empty();
  if (with_values) cm.err.assign(nq, std::vector<double>(r.bins, 0.0));
  std::vector<double> s(nk), o(d);
  std::vector<std::size_t> bidx(nk);
  for (std::size_t q = 0; q < nq; ++q) {
    double qn = 0.0;
    for (std::size_t j = 0; j < d; ++j) qn += static_cast<double>(r.queries(q, j)) * r.queries(q, j);
    qn = std::sqrt(qn);
    double mx = -std::numeric_limits<double>::infinity();
    for (std::size_t i = 0; i < nk; ++i) {
      double dc = 0.0, dr = 0.0;
      for (std::size_t j = 0; j < d; ++j) {
        dc += static_cast<double>(r.queries(q, j)) * kc[i * d + j];
        dr += static_cast<double>(r.queries(q, j)) * static_cast<double>(r.keys(i, j));
      }
      bidx[i] = cm.bin(collision::cosine(dc, qn, kn[i]));
      cm.mass[bidx[i]] += 1.0;
      s[i] = dr * scale;
      mx = std::max(mx, s[i]);
    }
    if (!with_values) continue;
    double Z = 0.0;
    std::fill(o.begin(), o.end(), 0.0);
    for (std::size_t i = 0; i < nk; ++i) {
      s[i] = std::exp(s[i] - mx);
      Z += s[i];
      for (std::size_t j = 0; j < d; ++j) o[j] += s[i] * static_cast<double>(r.values(i, j));
    }
    double on = 0.0;
    for (auto& x : o) {
      x /= Z;
      on += x * x;
    }
    on = std::max(on, 1e-300);
    for (std::size_t i = 0; i < nk; ++i) {
      double dv = 0.0;
      for (std::size_t j = 0; j < d; ++j) {
        const double t = static_cast<double>(r.values(i, j)) - o[j];
        dv += t * t;
      }
      const double a = s[i] / Z;
      cm.err[q][bidx[i]] += a * a * dv / on;
    }
  }
  const double tot = static_cast<double>(nq) * static_cast<double>(nk);
  for (auto& x : cm.mass) x /= tot;
  return cm;
}

inline std::vector<int> table_grid(int L_max) {
  static constexpr int g[] = {1,  2,  3,  4,  5,  6,  8,  10, 12, 15,  20,  25,  30,  40,  50,  60,  75,
                              90, 100, 120, 150, 170, 200, 250, 300, 400, 500, 600, 800, 1000, 1500, 2000, 3000, 4096};
  std::vector<int> out;
  for (int L : g)
    if (L <= L_max) out.push_back(L);
  if (out.empty() || out.back() != L_max) out.push_back(L_max);
  return out;
}

/// Relative errors (sorted, one per query and seed) and the mean sampled
/// fraction of the lsh estimator with parameters p on the request's sample
/// (keys indexed in full, sink = window = 0).
inline std::pair<std::vector<double>, double> simulate(const tune_request& r, lsh_params p) {
  const std::size_t d = r.head_dim, nk = r.keys.rows;
  std::vector<float> keys(nk * d), values(nk * d), q(d), exact(d), out(d);
  for (std::size_t i = 0; i < nk; ++i)
    for (std::size_t j = 0; j < d; ++j) {
      keys[i * d + j] = r.keys(i, j);
      values[i * d + j] = r.values(i, j);
    }
  const cache_view<const float> kc(keys.data(), 1, nk, d), vc(values.data(), 1, nk, d);
  const decode_params dp{0, 0, static_cast<float>(r.scale)};
  std::vector<double> errs;
  double frac = 0.0;
  for (int s = 0; s < r.verify_seeds; ++s) {
    p.seed = lsh_params{}.seed + static_cast<std::uint64_t>(s);
    lsh_index<> idx(d, 1, p);
    idx.build(kc, 0, nk);
    for (std::size_t h = 0; h < r.queries.rows; ++h) {
      for (std::size_t j = 0; j < d; ++j) q[j] = r.queries(h, j);
      decode_request<float, float> req{matrix_view<const float>(q.data(), 1, d), kc, vc, &idx,
                                       matrix_view<float>(exact.data(), 1, d)};
      lshattn::decode(reference, estimator::exact{}, dp, req);
      decode_stats st;
      req.output = matrix_view<float>(out.data(), 1, d);
      req.stats = &st;
      lshattn::decode(reference, estimator::lsh{}, dp, req);
      double e2 = 0.0, o2 = 0.0;
      for (std::size_t j = 0; j < d; ++j) {
        e2 += (static_cast<double>(out[j]) - exact[j]) * (static_cast<double>(out[j]) - exact[j]);
        o2 += static_cast<double>(exact[j]) * exact[j];
      }
      errs.push_back(o2 > 0.0 ? std::sqrt(e2 / o2) : std::sqrt(e2));
      frac += static_cast<double>(st.sampled_keys) / static_cast<double>(std::max<std::size_t>(1, st.sampled_range));
    }
  }
  std::sort(errs.begin(), errs.end());
  return {errs, frac / static_cast<double>(errs.size())};
}

}  // namespace detail

/// Picks (K, L, m). Fraction mode (target_error == 0): among the candidates
/// whose expected fraction of sampled keys is at most target_fraction, the one
/// with the smallest predicted error (with sample values), else the largest
/// inclusion of a key at signal_cosine; ties go to the smaller cost. Error
/// mode: the cheapest candidate (in key-equivalents) whose predicted median
/// relative error is at most target_error. If nothing qualifies, met = false
/// and the candidate closest to the target is returned. Throws on bad input.
inline tune_result tune(const tune_request& r) {
  r.validate();
  const detail::cosine_model cm = detail::make_model(r);
  const double n = static_cast<double>(r.n);
  const double row_bytes = r.row_bytes ? static_cast<double>(r.row_bytes) : 4.0 * static_cast<double>(r.head_dim);
  const bool error_mode = r.target_error > 0.0;
  const bool have_err = !cm.err.empty();
  std::vector<std::size_t> occupied;
  for (std::size_t b = 0; b < cm.bins; ++b)
    if (cm.mass[b] > 0.0) occupied.push_back(b);

  std::vector<tune_result> all;
  std::vector<double> pK(cm.bins), u(cm.bins), errs;
  const int m_lo = r.m == 0 ? 1 : r.m, m_hi = r.m == 0 ? 4 : r.m;
  for (int K = r.K_min; K <= r.K_max; ++K) {
    for (std::size_t b : occupied) pK[b] = std::pow(collision::bit_collision_probability(cm.centre(b)), K);
    for (int L : detail::table_grid(r.L_max)) {
      for (int m = m_lo; m <= std::min(m_hi, L); ++m) {
        double eu = 0.0, ep = 0.0;
        for (std::size_t b : occupied) {
          u[b] = collision::inclusion_probability(pK[b], L, m);
          eu += cm.mass[b] * u[b];
          ep += cm.mass[b] * pK[b];
        }
        tune_result c;
        c.params = lsh_params{K, L, m, lsh_params{}.seed};
        c.expected_keys = n * eu;
        c.expected_fraction = eu;
        c.expected_bucket_entries = n * static_cast<double>(L) * ep;
        c.cost_key_equivalents = c.expected_keys + c.expected_bucket_entries * 4.0 / row_bytes;
        c.signal_inclusion = collision::inclusion_probability_at(r.signal_cosine, K, L, m);
        if (have_err) {
          errs.clear();
          for (const auto& e : cm.err) {
            double v = 0.0;
            for (std::size_t b : occupied)
              if (e[b] > 0.0) v += u[b] > 0.0 ? (1.0 - u[b]) / u[b] * e[b] : std::numeric_limits<double>::infinity();
            errs.push_back(std::sqrt(v));
          }
          std::nth_element(errs.begin(), errs.begin() + static_cast<std::ptrdiff_t>(errs.size() / 2), errs.end());
          c.predicted_error = errs[errs.size() / 2];
        }
        all.push_back(c);
      }
    }
  }
  // Lower score is better; a candidate that misses the target scores above
  // every one that meets it and is ranked by how far it misses.
  auto select = [&](double factor) {
    std::size_t best = 0;
    double best_score = std::numeric_limits<double>::infinity();
    for (std::size_t i = 0; i < all.size(); ++i) {
      tune_result& c = all[i];
      double score = 0.0;
      if (error_mode) {
        const double e = c.predicted_error * factor;
        c.met = e <= r.target_error;
        score = c.met ? c.cost_key_equivalents : 1e200 + e;
      } else {
        c.met = c.expected_fraction <= r.target_fraction;
        const double quality = have_err ? c.predicted_error : -c.signal_inclusion;
        score = c.met ? quality + 1e-12 * c.cost_key_equivalents / n : 1e200 + (c.expected_fraction - r.target_fraction);
      }
      if (score < best_score) {
        best_score = score;
        best = i;
      }
    }
    return all[best];
  };
  tune_result best = select(1.0);
  if (r.verify_seeds > 0) {
    double factor = 1.0;
    for (int round = 0;; ++round) {
      const auto [errs, frac] = detail::simulate(r, best.params);
      const std::size_t N = errs.size();
      best.measured_error = errs[N / 2];
      best.measured_fraction = frac;
      if (!error_mode) break;
      // Met with confidence: a sign test that the median is below the target,
      // i.e. the N/2 + 2 sqrt(N)/2 smallest error (an upper ~97.7% confidence
      // bound on the median) is at most the target. Without the margin a choice
      // made at the edge misses on fresh queries half of the time.
      const auto hi = std::min(N - 1, static_cast<std::size_t>(std::ceil(N / 2.0 + std::sqrt(static_cast<double>(N)))));
      best.met = errs[hi] <= r.target_error;
      if (best.met || !(best.predicted_error > 0.0) || round == 5) break;
      factor = std::max(factor * 1.1, errs[hi] / r.target_error * factor);
      best = select(factor);
    }
  }
  best.candidates = all.size();
  best.index_bytes = index_memory_bytes(r.n, r.head_dim, r.kv_heads, best.params.K, best.params.L);
  return best;
}

}  // namespace lshattn::tuner
