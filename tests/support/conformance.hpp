#pragma once
// The executor conformance suite: one body of checks that every executor
// (reference, CPU-SIMD, CUDA) must pass against lshattn::reference.
//
// Interface (call these from a doctest TEST_CASE):
//
//   lshattn::conformance::run_conformance(exec, tol_scale[, caps]);
//     Every estimator (exact, lsh with m = 2 and m = 1, topk, uniform,
//     oracle_sampling) x every element type (float, bf16, fp16 for keys,
//     values and queries, plus one mixed float/bf16/fp16 request) x several
//     shapes (head_dim 64/96/128, GQA group 1 and 4, a batch of two requests
//     with different context lengths, contiguous / interleaved [tokens, heads,
//     d] / padded strided caches, strided queries and outputs), natural and
//     base-2 LSE, default and explicit scale. Outputs and LSE are poisoned with
//     NaN before each run and the padding between output rows with a sentinel;
//     afterwards every element must be written and finite, the padding
//     untouched, outputs and LSE within the fp32 bound below of the reference,
//     and the decode_stats counters (dense, sampled and union key counts) equal
//     to the reference's, which pins the sampled sets: the index's hash codes
//     and the random baselines' Philox streams (stream = request position in
//     the batch * kv_heads + kv_head) must be the same.
//     tol_scale multiplies the fp32 rounding bound: 1 for an fp32 executor,
//     0 demands bit-identical results (the reference against itself).
//
//   lshattn::conformance::run_error_conformance(exec);
//     Every bad-input case of decode throws lshattn::error with the right errc
//     and argument(), writes nothing to the poisoned outputs or LSE (in any
//     request of the batch) and nothing to stderr.
//
//   lshattn::conformance::run_nan_policy_conformance(exec);
//     A NaN in an attended key or value propagates into the outputs of the
//     query heads that read it (the KV head's group) and into no other head.
//
//   lshattn::conformance::check_hash_codes(hash_fn);
//     hash_fn(const hash::simhash<>& f, const float* x, size_t n, size_t ld,
//     uint32_t* codes) must produce f.hash()'s codes bit for bit, [n, L]
//     row-major, on random and adversarial (dot product ~ 0) inputs, with
//     magnitudes from 1e-41 (subnormal) to 1e37 (near float overflow).
//
// Exec is any value with exec.decode(est, params, std::span<const
// decode_request<TQ, TK, TV>>) over host-memory views (what lshattn::decode
// forwards to); a device backend passes a thin adapter that stages the
// buffers to and from the device (tests/cuda/conformance_adapter.cuh).
//
// caps (a conformance::capabilities, last argument of the three runners)
// says what the executor implements; every part it does not is named in the
// test output as skipped, with the reason (doctest MESSAGE), and a runner
// that would run nothing at all fails. The default is everything, which is
// what the reference and CPU executors pass: with it every runner does
// exactly what it did before capabilities existed.

#include <doctest/doctest.h>

#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdint>
#include <cstring>
#include <limits>
#include <span>
#include <string>
#include <tuple>
#include <vector>

#include "lshattn/lshattn.hpp"

namespace lshattn::conformance {

/// What an executor implements, and the error it adds beyond the fp32 model
/// of detail::rounding_bound (each non-zero value is derived where it is set).
struct capabilities {
  std::string name = "executor";
  bool exact = true, lsh = true, topk = true, uniform = true, oracle_sampling = true;
  std::vector<std::size_t> head_dims;  ///< empty: any head_dim
  bool mixed_kv_types = true;          ///< keys and values of different element types in one request
  /// Whether decode rejects non-finite queries (errc::non_finite); a device
  /// executor that never reads device memory on the host cannot.
  bool rejects_non_finite_queries = true;
  /// Extra absolute error of every log-weight (s_i - ln pi_i), added to the
  /// bound's delta.
  double log_weight_error = 0.0;
  /// Relative error of every weight as it multiplies its value row (P V),
  /// with the softmax sum taken from the exact-to-fp32 weights.
  double weight_rel_error = 0.0;
  /// ln pi of an LSH-sampled key evaluated at a cosine computed in fp32
  /// ((q . k - q . mean) / (|q| |k - mean|) from fp32 dot products) and
  /// looked up within lsh_table_error of ln pi at that cosine: the suite
  /// then adds, per query head, the largest change of ln pi over the
  /// cosine's rounding interval (detail::fp32_cosine_log_pi_error).
  bool lsh_fp32_cosine = false;
  double lsh_table_error = 0.0;

  [[nodiscard]] bool supports_head_dim(std::size_t d) const {
    return head_dims.empty() || std::find(head_dims.begin(), head_dims.end(), d) != head_dims.end();
  }
  template <class Est>
  [[nodiscard]] bool supports() const {
    if constexpr (std::is_same_v<Est, estimator::exact>) return exact;
    else if constexpr (std::is_same_v<Est, estimator::lsh>) return lsh;
    else if constexpr (std::is_same_v<Est, estimator::topk>) return topk;
    else if constexpr (std::is_same_v<Est, estimator::uniform>) return uniform;
    else return oracle_sampling;
  }
};

namespace detail {

inline constexpr float poison = std::numeric_limits<float>::quiet_NaN();
inline constexpr float sentinel = -7777.25f;  // padding between output rows: must stay untouched

/// Deterministic test data from Philox (never std::<random> distributions).
struct rng {
  random::philox_engine e;
  explicit rng(std::uint64_t seed, std::uint64_t stream = 0) : e(seed, stream) {}
  double uniform() { return e.uniform(); }
  double normal() {  // Box-Muller on two uniforms; only test data, so libm is fine here
    const double u1 = e.uniform() + 0x1p-53, u2 = e.uniform();
    return std::sqrt(-2.0 * std::log(u1)) * std::cos(6.283185307179586 * u2);
  }
};

enum class layout { contiguous, interleaved, padded };

inline const char* name_of(layout l) {
  return l == layout::contiguous ? "contiguous" : l == layout::interleaved ? "interleaved" : "padded";
}

/// Owning storage for one cache [kv_heads, tokens, dim] in a given layout.
template <class T>
struct cache_buffer {
  std::vector<T> data;
  cache_view<const T> view;
  cache_buffer(std::size_t hk, std::size_t n, std::size_t d, layout l) {
    std::size_t hs = 0, ts = 0, size = 0;
    switch (l) {
      case layout::contiguous: hs = n * d, ts = d, size = hk * n * d; break;
      case layout::interleaved: hs = d, ts = hk * d, size = n * hk * d; break;
      case layout::padded: ts = d + 8, hs = n * ts + 24, size = hk * hs; break;
    }
    data.assign(size, from_float<T>(0.0f));
    view = cache_view<const T>(data.data(), hk, n, d, hs, ts);
  }
  T& at(std::size_t h, std::size_t t, std::size_t j) {
    return data[static_cast<std::size_t>(view.row(h, t) - data.data()) + j];
  }
};

/// One request's inputs and outputs, owned.
template <class TQ, class TK, class TV>
struct request_data {
  std::size_t hq, hk, n, d;
  cache_buffer<TK> keys;
  cache_buffer<TV> values;
  std::vector<TQ> queries;  // [hq, d + qpad]
  std::size_t q_stride;
  std::vector<float> out;  // [hq, o_stride]
  std::size_t o_stride;
  std::vector<float> lse;
  lsh_index<> index;
  decode_stats stats;

  request_data(std::size_t hq_, std::size_t hk_, std::size_t n_, std::size_t d_, layout l, std::uint64_t seed,
               const lsh_params& lp, const decode_params& dp)
      : hq(hq_), hk(hk_), n(n_), d(d_), keys(hk_, n_, d_, l), values(hk_, n_, d_, l),
        q_stride(l == layout::contiguous ? d_ : d_ + 5), o_stride(l == layout::contiguous ? d_ : d_ + 3),
        index(d_, hk_, lp) {
    // Keys share a large common offset per head (as LLM keys do, which is what
    // centring is for); queries point a little towards one random key so the
    // softmax is peaked but not one-hot; values are N(0, 1).
    rng r(seed, 0xc0f0);
    const std::size_t g = hq / hk;
    queries.assign(hq * q_stride, from_float<TQ>(0.0f));
    for (std::size_t h = 0; h < hk; ++h) {
      std::vector<double> offset(d);
      for (auto& x : offset) x = 2.0 * r.normal();
      for (std::size_t t = 0; t < n; ++t)
        for (std::size_t j = 0; j < d; ++j) {
          keys.at(h, t, j) = from_float<TK>(static_cast<float>(offset[j] + r.normal()));
          values.at(h, t, j) = from_float<TV>(static_cast<float>(r.normal()));
        }
      for (std::size_t k = 0; k < g; ++k) {
        const std::size_t target = static_cast<std::size_t>(r.uniform() * static_cast<double>(n));
        const double beta = 0.5 + 1.5 * r.uniform();
        for (std::size_t j = 0; j < d; ++j) {
          const double kj = to_float(keys.at(h, target, j)) - offset[j];
          queries[(h * g + k) * q_stride + j] = from_float<TQ>(static_cast<float>(r.normal() + beta * kj));
        }
      }
    }
    out.assign(hq * o_stride, sentinel);
    lse.assign(hq, poison);
    index.build(keys.view, std::min(dp.sink, n), n > dp.window ? std::max(std::min(dp.sink, n), n - dp.window) : std::min(dp.sink, n));
  }

  void poison_outputs() {
    std::fill(out.begin(), out.end(), sentinel);
    for (std::size_t h = 0; h < hq; ++h)
      for (std::size_t j = 0; j < d; ++j) out[h * o_stride + j] = poison;
    std::fill(lse.begin(), lse.end(), poison);
    stats = {};
  }
  decode_request<TQ, TK, TV> request() {
    return {matrix_view<const TQ>(queries.data(), hq, d, q_stride), keys.view, values.view, &index,
            matrix_view<float>(out.data(), hq, d, o_stride), lse, &stats};
  }
};

/// Widened query row of head h.
template <class TQ, class TK, class TV>
std::vector<float> query_row(const request_data<TQ, TK, TV>& r, std::size_t h) {
  std::vector<float> q(r.d);
  for (std::size_t j = 0; j < r.d; ++j) q[j] = to_float(r.queries[h * r.q_stride + j]);
  return q;
}

/// The sample sets the estimator draws for request `seq` of a batch, through
/// the contract's streams, so the suite knows the expected counters and the
/// largest |ln pi| (which enters the rounding bound).
struct expected_counts {
  decode_stats stats;
  double max_abs_log_pi = 0.0;
};
template <class Est, class TQ, class TK, class TV>
expected_counts expected_samples(const Est& est, const decode_params& p, request_data<TQ, TK, TV>& rd,
                                 std::size_t seq) {
  expected_counts ec;
  const auto req = rd.request();
  const auto [b, e] = lshattn::detail::sampled_range<Est>(req, p);
  const std::size_t g = rd.hq / rd.hk;
  retrieval_workspace ws;
  estimator::sample_set set;
  for (std::size_t kh = 0; kh < rd.hk; ++kh) {
    std::vector<float> q(g * rd.d);
    for (std::size_t k = 0; k < g; ++k) {
      const auto row = query_row(rd, kh * g + k);
      std::copy(row.begin(), row.end(), q.begin() + static_cast<std::ptrdiff_t>(k * rd.d));
    }
    estimator::sample_context<TK> ctx{rd.keys.view.head(kh), b, e, matrix_view<const float>(q.data(), g, rd.d),
                                      p.effective_scale(rd.d), &rd.index, kh, seq * rd.hk + kh, &ws};
    est.sample(ctx, set);
    ec.stats.union_keys += set.ids.size();
    for (std::size_t k = 0; k < g; ++k) {
      ec.stats.dense_keys += b + (rd.n - e);
      ec.stats.sampled_range += e - b;
      for (std::size_t j = 0; j < set.ids.size(); ++j) {
        const double lp = set.log_pi_of(k, j);
        if (std::isfinite(lp)) {
          ++ec.stats.sampled_keys;
          ec.max_abs_log_pi = std::max(ec.max_abs_log_pi, std::fabs(lp));
        }
      }
    }
  }
  return ec;
}

/// Rounding bound of an fp32 executor for query head h, derived as follows.
/// Let eps = 2^-24 (fp32 unit roundoff), c = 4 (a 4-sigma factor on the
/// random-walk model of accumulated rounding, in which the error of an n-term
/// sum grows like sqrt(n) eps times the magnitude of its partial sums).
///  - Score s_i = scale * q . k_i in fp32: |ds_i| <= c sqrt(d) eps A with
///    A = max_i scale * sum_j |q_j k_ij|; rounding s_i, the correction ln pi
///    and the exponential add a few ulps of |s_i - ln pi| <= A + Lambda,
///    Lambda = max |ln pi|: delta = c eps (sqrt(d) A + A + Lambda + 8).
///  - Softmax output o = sum p_i v_i: perturbing every log-weight by at most
///    delta moves p_i by p_i (ds_i - sum_k p_k ds_k), so |do| <= 2 delta Vmax,
///    Vmax = max |v_ij|; accumulating n weighted values and normalising adds
///    c sqrt(n) eps Vmax. Merging two states adds a few eps more.
///  - LSE = ln sum w_i: |dlse| <= delta + c sqrt(n) eps + eps |lse|.
/// The bound is conservative: a naive fp32 executor (float scores, float exp,
/// float sums in token order) stays below 1.3% of the output bound and 10% of
/// the LSE bound on the suite's inputs, while structural faults (one key
/// missed, a wrong weight) exceed it many times over, and the stats counters
/// catch any difference in the sampled sets exactly.
struct bound {
  double out = 0.0, lse = 0.0;
};
/// An executor's declared extra error (capabilities) enters as follows: an
/// absolute log-weight error x adds to delta (so 2 x Vmax to the output and
/// x to the LSE, by the same perturbation argument), a relative weight error
/// r in P V alone adds r Vmax to the output (the normaliser is unaffected).
template <class TK, class TV>
bound rounding_bound(const float* q, const matrix_view<const TK>& keys, const matrix_view<const TV>& values,
                     double scale, double lambda, double lse, double extra_delta = 0.0, double weight_rel = 0.0) {
  constexpr double eps = 0x1p-24, c = 4.0;
  double A = 0.0, vmax = 0.0;
  for (std::size_t t = 0; t < keys.rows; ++t) {
    const TK* k = keys.row(t);
    const TV* v = values.row(t);
    double s = 0.0;
    for (std::size_t j = 0; j < keys.cols; ++j) {
      s += std::fabs(static_cast<double>(q[j]) * to_float(k[j]));
      vmax = std::max(vmax, static_cast<double>(std::fabs(to_float(v[j]))));
    }
    A = std::max(A, scale * s);
  }
  const double d = static_cast<double>(keys.cols), n = static_cast<double>(keys.rows);
  const double delta = c * eps * (std::sqrt(d) * A + A + lambda + 8.0) + extra_delta;
  return {(2.0 * delta + c * std::sqrt(n) * eps + 4.0 * eps + weight_rel) * vmax,
          delta + c * std::sqrt(n) * eps + eps * std::fabs(lse)};
}
template <class TQ, class TK, class TV>
bound rounding_bound(const request_data<TQ, TK, TV>& rd, std::size_t h, double scale, double lambda, double lse,
                     double extra_delta = 0.0, double weight_rel = 0.0) {
  const std::size_t kh = h / (rd.hq / rd.hk);
  const auto q = query_row(rd, h);
  return rounding_bound(q.data(), rd.keys.view.head(kh), rd.values.view.head(kh), scale, lambda, lse, extra_delta,
                        weight_rel);
}

/// For an executor that evaluates ln pi of an LSH-sampled key at an fp32
/// cosine (capabilities::lsh_fp32_cosine), the largest error that causes in
/// any log-weight of each query head. The cosine c = (q.k - q.mean) /
/// (|q| |x|), x = k - mean rounded to float (as the index hashed it), from
/// fp32 sums of d terms: in the random-walk model used above (c = 4 sigma),
/// |d(q.k)| <= c sqrt(d) eps sum|q_j k_j|, likewise q.mean, and |x|^2 and
/// |q|^2 have relative error c sqrt(d) eps (half that after the square
/// root); with a few roundings for the subtraction, product and quotient,
///   |dc| <= [c sqrt(d) eps (sum|q_j k_j| + sum|q_j mean_j|)] / (|q| |x|)
///           + |c| (c sqrt(d) eps + 4 eps) + 4 eps.
/// ln pi(c) is increasing in c, so its change over [c - dc, c + dc] is the
/// larger of the two end differences; the table error is added on top.
template <class TQ, class TK, class TV>
std::vector<double> fp32_cosine_log_pi_error(const estimator::lsh& est, const decode_params& p,
                                             request_data<TQ, TK, TV>& rd, std::size_t seq, double table_error) {
  constexpr double eps = 0x1p-24, c4 = 4.0;
  const std::size_t g = rd.hq / rd.hk, d = rd.d;
  const int K = rd.index.family().bits(), L = rd.index.family().tables();
  const int m = est.m > 0 ? est.m : rd.index.threshold();
  const auto req = rd.request();
  const auto [b, e] = lshattn::detail::sampled_range<estimator::lsh>(req, p);
  std::vector<double> err(rd.hq, 0.0);
  retrieval_workspace ws;
  estimator::sample_set set;
  for (std::size_t kh = 0; kh < rd.hk; ++kh) {
    std::vector<float> q(g * d);
    for (std::size_t k = 0; k < g; ++k) {
      const auto row = query_row(rd, kh * g + k);
      std::copy(row.begin(), row.end(), q.begin() + static_cast<std::ptrdiff_t>(k * d));
    }
    estimator::sample_context<TK> ctx{rd.keys.view.head(kh), b, e, matrix_view<const float>(q.data(), g, d),
                                      p.effective_scale(d), &rd.index, kh, seq * rd.hk + kh, &ws};
    est.sample(ctx, set);
    const auto mean = rd.index.mean(kh);
    for (std::size_t k = 0; k < g; ++k) {
      const float* qk = q.data() + k * d;
      double qn = 0.0, qm_abs = 0.0;
      for (std::size_t j = 0; j < d; ++j) {
        qn += static_cast<double>(qk[j]) * qk[j];
        qm_abs += std::fabs(static_cast<double>(qk[j]) * mean[j]);
      }
      qn = std::sqrt(qn);
      double worst = 0.0;
      for (std::size_t j = 0; j < set.ids.size(); ++j) {
        if (!std::isfinite(set.log_pi_of(k, j))) continue;
        const TK* key = rd.keys.view.row(kh, set.ids[j]);
        double dot = 0.0, xn = 0.0, qk_abs = 0.0;
        for (std::size_t i = 0; i < d; ++i) {
          const double x = static_cast<double>(to_float(key[i]) - mean[i]);
          dot += static_cast<double>(qk[i]) * x;
          xn += x * x;
          qk_abs += std::fabs(static_cast<double>(qk[i]) * to_float(key[i]));
        }
        const double den = qn * std::sqrt(xn);
        const double cos = collision::cosine(dot, qn, std::sqrt(xn));
        const double dc = (den > 0 ? c4 * std::sqrt(static_cast<double>(d)) * eps * (qk_abs + qm_abs) / den : 2.0) +
                          std::fabs(cos) * (c4 * std::sqrt(static_cast<double>(d)) * eps + 4.0 * eps) + 4.0 * eps;
        const double at = collision::log_inclusion_probability_at(cos, K, L, m);
        const double lo = collision::log_inclusion_probability_at(std::max(-1.0, cos - dc), K, L, m);
        const double hi = collision::log_inclusion_probability_at(std::min(1.0, cos + dc), K, L, m);
        worst = std::max({worst, std::fabs(at - lo), std::fabs(hi - at)});
      }
      err[kh * g + k] = worst + table_error;
    }
  }
  return err;
}

template <class Est>
std::string describe(const Est&) {
  if constexpr (std::is_same_v<Est, estimator::exact>) return "exact";
  else if constexpr (std::is_same_v<Est, estimator::lsh>) return "lsh";
  else if constexpr (std::is_same_v<Est, estimator::topk>) return "topk";
  else if constexpr (std::is_same_v<Est, estimator::uniform>) return "uniform";
  else return "oracle_sampling";
}

struct shape {
  std::size_t d, hq, hk, n0, n1;
  layout lay;
  decode_params params;
  lsh_params lsh;
};

/// Runs one estimator over one batch of two requests through exec and the reference and compares.
template <class TQ, class TK, class TV>
using batch_data = std::vector<request_data<TQ, TK, TV>>;

template <class TQ, class TK, class TV>
batch_data<TQ, TK, TV> make_batch(const shape& s, std::uint64_t seed) {
  batch_data<TQ, TK, TV> b;
  b.reserve(2);  // request_data holds views into its own buffers: never reallocate
  for (std::size_t i = 0; i < 2; ++i)
    b.emplace_back(s.hq, s.hk, i == 0 ? s.n0 : s.n1, s.d, s.lay, seed + i, s.lsh, s.params);
  return b;
}

/// Runs one estimator over one batch of two requests through exec and the
/// reference (two identical copies of the inputs) and compares.
template <class Exec, class Est, class TQ, class TK, class TV>
void compare_one(const Exec& exec, const Est& est, const shape& s, double tol_scale, const capabilities& caps,
                 batch_data<TQ, TK, TV>& mine, batch_data<TQ, TK, TV>& ref) {
  if (!caps.supports<Est>()) return;  // reported once by run_conformance
  std::vector<decode_request<TQ, TK, TV>> rq_mine, rq_ref;
  for (std::size_t i = 0; i < 2; ++i) {
    mine[i].poison_outputs();
    ref[i].poison_outputs();
    rq_mine.push_back(mine[i].request());
    rq_ref.push_back(ref[i].request());
  }
  const std::string what = describe(est) + " " + to_string(dtype_of<TQ>) + "/" + to_string(dtype_of<TK>) + "/" +
                           to_string(dtype_of<TV>) + " d=" + std::to_string(s.d) + " hq=" + std::to_string(s.hq) +
                           " hk=" + std::to_string(s.hk) + " " + name_of(s.lay) +
                           (s.params.base == lse_base::base2 ? " base2" : " natural");
  INFO(what);
  lshattn::decode(reference, est, s.params, std::span<const decode_request<TQ, TK, TV>>(rq_ref));
  lshattn::decode(exec, est, s.params, std::span<const decode_request<TQ, TK, TV>>(rq_mine));

  for (std::size_t i = 0; i < 2; ++i) {
    auto& a = mine[i];
    auto& r = ref[i];
    const auto ec = expected_samples(est, s.params, r, i);
    std::vector<double> extra(a.hq, caps.log_weight_error);
    if constexpr (std::is_same_v<Est, estimator::lsh>)
      if (caps.lsh_fp32_cosine) {
        const auto ce = fp32_cosine_log_pi_error(est, s.params, r, i, caps.lsh_table_error);
        for (std::size_t h = 0; h < a.hq; ++h) extra[h] += ce[h];
      }
    const double scale = s.params.effective_scale(s.d);
    const double lse_unit = s.params.base == lse_base::base2 ? 1.0 / ln2 : 1.0;
    std::size_t unwritten = 0, padding_touched = 0, bad_out = 0, bad_lse = 0;
    double worst_out = 0.0, worst_lse = 0.0;
    for (std::size_t h = 0; h < a.hq; ++h) {
      const double lse_nat = lse_to_natural(r.lse[h], s.params.base);
      const bound b = rounding_bound(r, h, scale, ec.max_abs_log_pi, lse_nat, extra[h], caps.weight_rel_error);
      for (std::size_t j = 0; j < a.o_stride; ++j) {
        const float x = a.out[h * a.o_stride + j], y = r.out[h * r.o_stride + j];
        if (j >= a.d) {
          padding_touched += std::memcmp(&x, &sentinel, sizeof x) != 0;
          continue;
        }
        if (!std::isfinite(x) || !std::isfinite(y)) {
          ++unwritten;
          continue;
        }
        const double err = std::fabs(static_cast<double>(x) - y);
        worst_out = std::max(worst_out, b.out > 0 ? err / b.out : (err > 0 ? 1e300 : 0.0));
        bad_out += err > tol_scale * b.out;
      }
      if (!std::isfinite(a.lse[h]) || !std::isfinite(r.lse[h])) {
        ++unwritten;
      } else {
        const double err = std::fabs(static_cast<double>(a.lse[h]) - r.lse[h]);
        const double tol = b.lse * lse_unit;
        worst_lse = std::max(worst_lse, tol > 0 ? err / tol : (err > 0 ? 1e300 : 0.0));
        bad_lse += err > tol_scale * tol;
      }
    }
    INFO("request " << i << " (tokens " << a.n << "): worst error / bound: output " << worst_out << ", lse "
                    << worst_lse << "; tol_scale " << tol_scale);
    CHECK(unwritten == 0);
    CHECK(padding_touched == 0);
    CHECK(bad_out == 0);
    CHECK(bad_lse == 0);
    // The counters pin the sampled sets: same ids per head, same union per KV head.
    CHECK(r.stats.dense_keys == ec.stats.dense_keys);
    CHECK(r.stats.sampled_keys == ec.stats.sampled_keys);
    CHECK(r.stats.union_keys == ec.stats.union_keys);
    CHECK(r.stats.sampled_range == ec.stats.sampled_range);
    CHECK(a.stats.dense_keys == ec.stats.dense_keys);
    CHECK(a.stats.sampled_keys == ec.stats.sampled_keys);
    CHECK(a.stats.union_keys == ec.stats.union_keys);
    CHECK(a.stats.sampled_range == ec.stats.sampled_range);
  }
}

template <class Exec, class TQ, class TK, class TV>
void run_dtype(const Exec& exec, const shape& s, double tol_scale, const capabilities& caps, std::uint64_t seed) {
  auto mine = make_batch<TQ, TK, TV>(s, seed), ref = make_batch<TQ, TK, TV>(s, seed);
  compare_one(exec, estimator::exact{}, s, tol_scale, caps, mine, ref);
  compare_one(exec, estimator::lsh{}, s, tol_scale, caps, mine, ref);
  compare_one(exec, estimator::lsh{1}, s, tol_scale, caps, mine, ref);
  compare_one(exec, estimator::topk{24}, s, tol_scale, caps, mine, ref);
  compare_one(exec, estimator::uniform{40, 7}, s, tol_scale, caps, mine, ref);
  compare_one(exec, estimator::oracle_sampling{40, 11}, s, tol_scale, caps, mine, ref);
}

/// Names every estimator caps lacks, as skipped (once per runner).
inline std::size_t report_skipped_estimators(const capabilities& caps, const std::string& runner) {
  std::size_t ran = 0;
  const auto one = [&](bool ok, const std::string& est) {
    ran += ok;
    if (!ok) MESSAGE("SKIPPED (" << caps.name << ", " << runner << "): estimator::" << est << " is not implemented by this executor");
  };
  one(caps.exact, "exact");
  one(caps.lsh, "lsh (m = 2 and m = 1)");
  one(caps.topk, "topk");
  one(caps.uniform, "uniform");
  one(caps.oracle_sampling, "oracle_sampling");
  return ran;
}

inline std::vector<shape> shapes() {
  decode_params natural{4, 16, 0.0f, lse_base::natural};
  decode_params base2{4, 16, 0.09f, lse_base::base2};
  decode_params short_window{2, 8, 0.0f, lse_base::base2};
  return {
      {64, 2, 2, 300, 517, layout::contiguous, natural, {6, 24, 2, 11}},
      {96, 8, 2, 260, 401, layout::interleaved, base2, {7, 32, 2, 12}},
      {128, 4, 1, 333, 190, layout::padded, short_window, {5, 16, 2, 13}},
  };
}

/// Redirects stderr to a temporary file for its lifetime; written() tells whether anything arrived.
class stderr_capture {
 public:
  stderr_capture() {
    std::fflush(stderr);
    file_ = std::tmpfile();
    saved_ = ::dup(2);
    if (file_ && saved_ >= 0) ::dup2(::fileno(file_), 2);
  }
  ~stderr_capture() {
    restore();
    if (file_) std::fclose(file_);
  }
  std::size_t written() {
    restore();
    if (!file_) return 0;
    std::fflush(file_);
    return static_cast<std::size_t>(std::ftell(file_) > 0 ? std::ftell(file_) : 0);
  }

 private:
  void restore() {
    if (saved_ >= 0) {
      std::fflush(stderr);
      ::dup2(saved_, 2);
      ::close(saved_);
      saved_ = -1;
    }
  }
  std::FILE* file_ = nullptr;
  int saved_ = -1;
};

}  // namespace detail

/// Compare exec with lshattn::reference over every estimator, element type and
/// shape (see the top of this file). tol_scale multiplies the fp32 bound
/// derived in detail::rounding_bound; 0 demands identical results.
template <class Exec>
void run_conformance(const Exec& exec, double tol_scale = 1.0, const capabilities& caps = {}) {
  std::size_t ran = 0;
  if (detail::report_skipped_estimators(caps, "run_conformance") == 0) {
    FAIL_CHECK(caps.name << ": no estimator to run the conformance suite with");
    return;
  }
  // The seeds advance whether or not a part runs, so each part sees the same data for every executor.
  std::uint64_t seed = 1000;
  for (const auto& s : detail::shapes()) {
    if (!caps.supports_head_dim(s.d)) {
      MESSAGE("SKIPPED (" << caps.name << ", run_conformance): the head_dim " << s.d << " shape (" << s.hq << " / "
                          << s.hk << " heads, " << std::string(detail::name_of(s.lay))
                          << "), every estimator and element type: head_dim not supported");
      seed += 30;
      continue;
    }
    detail::run_dtype<Exec, float, float, float>(exec, s, tol_scale, caps, seed += 10);
    detail::run_dtype<Exec, bf16, bf16, bf16>(exec, s, tol_scale, caps, seed += 10);
    detail::run_dtype<Exec, fp16, fp16, fp16>(exec, s, tol_scale, caps, seed += 10);
    ++ran;
  }
  const detail::shape mixed = detail::shapes()[1];  // a copy: shapes() returns a temporary
  if (!caps.mixed_kv_types)
    MESSAGE("SKIPPED (" << caps.name << ", run_conformance): the mixed float/bf16/fp16 request: keys and values of "
                           "different element types are not supported");
  else if (!caps.supports_head_dim(mixed.d))
    MESSAGE("SKIPPED (" << caps.name << ", run_conformance): the mixed float/bf16/fp16 request: head_dim "
                        << mixed.d << " not supported");
  else
    detail::run_dtype<Exec, float, bf16, fp16>(exec, mixed, tol_scale, caps, seed + 10), ++ran;
  if (ran == 0) FAIL_CHECK(caps.name << ": no shape of the conformance suite is supported");
}

namespace detail {

// A small valid request (float, hq = 4, hk = 2, n = 40, d = D, index over
// [4, 32)) that each error case mutates in one place. D is 16 unless the
// executor lacks that head_dim (error_head_dim): a bad request must fail on
// its own defect, not on a limit its valid neighbour in the batch already hits.
template <std::size_t D>
struct basic_fixture {
  static constexpr std::size_t hq = 4, hk = 2, n = 40, d = D;
  std::vector<float> K, V, Q, O, lse, big;
  lsh_index<> index{d, hk, lsh_params{4, 8, 2, 5}};
  decode_stats stats;
  basic_fixture() : K(hk * n * d), V(hk * n * d), Q(hq * d), O(hq * d, poison), lse(hq, poison), big(hq * 1100) {
    rng r(99);
    for (auto* v : {&K, &V, &Q})
      for (auto& x : *v) x = static_cast<float>(r.normal());
    index.build(keys(), 4, 32);
  }
  cache_view<const float> keys() const { return {K.data(), hk, n, d}; }
  cache_view<const float> values() const { return {V.data(), hk, n, d}; }
  decode_request<float, float> request() {
    return {matrix_view<const float>(Q.data(), hq, d), keys(), values(), &index, matrix_view<float>(O.data(), hq, d),
            lse, &stats};
  }
  bool untouched() const {
    const auto nan_bits = [](float x) { return std::isnan(x); };
    return std::all_of(O.begin(), O.end(), nan_bits) && std::all_of(lse.begin(), lse.end(), nan_bits) &&
           stats.dense_keys == 0 && stats.sampled_keys == 0 && stats.union_keys == 0;
  }
};

using error_fixture = basic_fixture<16>;

/// The head_dim of the error and NaN fixtures for caps: 16, else the smallest supported of 64 and 128 (0: none).
inline std::size_t error_head_dim(const capabilities& caps) {
  for (const std::size_t d : {16, 64, 128})
    if (caps.supports_head_dim(d)) return d;
  return 0;
}

template <class Fixture, class Exec, class Est, class Mutate>
void expect_error(const Exec& exec, const Est& est, decode_params p, errc code, const std::string& argument,
                  const char* what, Mutate&& mutate) {
  INFO("bad input: " << what);
  Fixture f, good;
  auto r = f.request();
  mutate(f, r, p);
  // A valid request first in the batch: nothing may be written to it either.
  std::vector<decode_request<float, float>> batch{good.request(), r};
  bool threw = false;
  std::size_t err_bytes = 0;
  {
    stderr_capture cap;
    try {
      lshattn::decode(exec, est, p, std::span<const decode_request<float, float>>(batch));
    } catch (const lshattn::error& e) {
      threw = true;
      CHECK(e.code() == code);
      CHECK(e.argument() == argument);
      CHECK(std::string(e.what()).find(argument) != std::string::npos);
    } catch (...) {
      FAIL_CHECK("threw something other than lshattn::error");
    }
    err_bytes = cap.written();
  }
  CHECK(threw);
  CHECK(err_bytes == 0);
  CHECK(f.untouched());
  CHECK(good.untouched());
}

}  // namespace detail

namespace detail {

template <std::size_t D, class Exec>
void run_error_cases(const Exec& exec, const capabilities& caps) {
  using error_fixture = basic_fixture<D>;
  using R = decode_request<float, float>;
  const decode_params p{4, 8, 0.0f, lse_base::natural};
  const estimator::lsh lsh{};
  const estimator::exact ex{};
  const auto expect_error = [&](const auto& est, decode_params q, errc code, const std::string& argument,
                                const char* what, auto&& mutate) {
    using Est = std::decay_t<decltype(est)>;
    if (!caps.supports<Est>()) {
      MESSAGE("SKIPPED (" << caps.name << ", run_error_conformance): \"" << std::string(what) << "\": it is checked with estimator::"
                          << describe(est) << ", which this executor does not implement");
      return;
    }
    detail::expect_error<error_fixture>(exec, est, q, code, argument, what, mutate);
  };
  expect_error(ex, p, errc::shape_mismatch, "queries.rows", "no query heads",
                       [](auto&, R& r, decode_params&) { r.queries.rows = 0; });
  expect_error(ex, p, errc::invalid_argument, "queries.cols", "head_dim 0",
                       [](auto&, R& r, decode_params&) { r.queries.cols = 0; });
  expect_error(ex, p, errc::invalid_argument, "queries.cols", "head_dim above max_head_dim",
                       [](auto& f, R& r, decode_params&) {
                         r.queries = matrix_view<const float>(f.big.data(), f.hq, max_head_dim + 1);
                       });
  expect_error(ex, p, errc::invalid_argument, "queries", "null query data",
                       [](auto&, R& r, decode_params&) { r.queries.data = nullptr; });
  expect_error(ex, p, errc::shape_mismatch, "keys.heads", "kv heads do not divide query heads",
                       [](auto&, R& r, decode_params&) {
                         r.keys.heads = 3;
                         r.keys.tokens = 20;
                       });
  expect_error(ex, p, errc::shape_mismatch, "values.heads", "values heads differ",
                       [](auto&, R& r, decode_params&) { r.values.heads = 1; });
  expect_error(ex, p, errc::shape_mismatch, "keys.dim", "keys head_dim mismatch",
                       [](auto&, R& r, decode_params&) { r.keys.dim = 8; });
  expect_error(ex, p, errc::shape_mismatch, "values.dim", "values head_dim mismatch",
                       [](auto&, R& r, decode_params&) { r.values.dim = 8; });
  expect_error(ex, p, errc::invalid_state, "keys.tokens", "empty cache",
                       [](auto&, R& r, decode_params&) {
                         r.keys.tokens = 0;
                         r.values.tokens = 0;
                       });
  expect_error(ex, p, errc::shape_mismatch, "values.tokens", "values shorter than keys",
                       [](auto&, R& r, decode_params&) { r.values.tokens = 39; });
  expect_error(ex, p, errc::shape_mismatch, "output", "output rows",
                       [](auto&, R& r, decode_params&) { r.output.rows = 3; });
  expect_error(ex, p, errc::invalid_argument, "output", "output row stride below cols",
                       [](auto&, R& r, decode_params&) { r.output.row_stride = 8; });
  expect_error(ex, p, errc::invalid_argument, "keys", "key token stride below dim",
                       [](auto&, R& r, decode_params&) { r.keys.token_stride = 8; });
  expect_error(ex, p, errc::shape_mismatch, "lse", "lse span size",
                       [](auto& f, R& r, decode_params&) { r.lse = std::span<float>(f.lse.data(), 3); });
  if (caps.rejects_non_finite_queries) {
    expect_error(ex, p, errc::non_finite, "queries", "NaN query",
                 [](auto& f, R&, decode_params&) { f.Q[3 * f.d + 7] = std::nanf(""); });
    expect_error(lsh, p, errc::non_finite, "queries", "infinite query",
                 [](auto& f, R&, decode_params&) { f.Q[5] = -std::numeric_limits<float>::infinity(); });
  } else {
    MESSAGE("SKIPPED (" << caps.name << ", run_error_conformance): \"NaN query\" and \"infinite query\": this "
                           "executor does not read the queries on the host, so non-finite ones are not rejected");
  }
  expect_error(ex, p, errc::invalid_argument, "scale", "NaN scale",
                       [](auto&, R&, decode_params& q) { q.scale = std::nanf(""); });
  expect_error(ex, p, errc::invalid_argument, "scale", "negative scale",
                       [](auto&, R&, decode_params& q) { q.scale = -0.5f; });
  expect_error(ex, p, errc::invalid_argument, "scale", "infinite scale",
                       [](auto&, R&, decode_params& q) { q.scale = std::numeric_limits<float>::infinity(); });
  expect_error(lsh, p, errc::invalid_argument, "index", "null index",
                       [](auto&, R& r, decode_params&) { r.index = nullptr; });
  static const lsh_index<> unbuilt(error_fixture::d, error_fixture::hk, lsh_params{4, 8, 2, 5});
  expect_error(lsh, p, errc::invalid_state, "index", "unbuilt index",
                       [](auto&, R& r, decode_params&) { r.index = &unbuilt; });
  static const lsh_index<> wrong_heads = [] {
    error_fixture f;
    lsh_index<> i(error_fixture::d, 1, lsh_params{4, 8, 2, 5});
    i.build(cache_view<const float>(f.K.data(), 1, error_fixture::n, error_fixture::d), 4, 32);
    return i;
  }();
  expect_error(lsh, p, errc::shape_mismatch, "index", "index kv_heads mismatch",
                       [](auto&, R& r, decode_params&) { r.index = &wrong_heads; });
  static const lsh_index<> wrong_dim = [] {
    error_fixture f;
    lsh_index<> i(8, error_fixture::hk, lsh_params{4, 8, 2, 5});
    i.build(cache_view<const float>(f.K.data(), error_fixture::hk, error_fixture::n, 8), 4, 32);
    return i;
  }();
  expect_error(lsh, p, errc::shape_mismatch, "index", "index head_dim mismatch",
                       [](auto&, R& r, decode_params&) { r.index = &wrong_dim; });
  expect_error(lsh, p, errc::shape_mismatch, "index", "index covers more tokens than the cache",
                       [](auto&, R& r, decode_params&) {
                         r.keys = r.keys.prefix(20);
                         r.values = r.values.prefix(20);
                       });
  expect_error(estimator::lsh{-1}, p, errc::invalid_argument, "lsh.m", "negative lsh.m",
                       [](auto&, R&, decode_params&) {});
}

/// Picks the fixture's head_dim for caps and runs body.template operator()<D>().
template <class Body>
void with_fixture_dim(const capabilities& caps, const std::string& runner, Body&& body) {
  const std::size_t d = error_head_dim(caps);
  if (d != 16)
    MESSAGE("NOTE (" << caps.name << ", " << runner << "): head_dim 16 is not supported; the fixture uses " << d);
  switch (d) {
    case 16: return body.template operator()<16>();
    case 64: return body.template operator()<64>();
    case 128: return body.template operator()<128>();
    default: FAIL_CHECK(caps.name << ": none of head_dim 16, 64, 128 is supported; " << runner << " cannot run");
  }
}

}  // namespace detail

/// Every bad-input case of decode (see the top of this file).
template <class Exec>
void run_error_conformance(const Exec& exec, const capabilities& caps = {}) {
  detail::with_fixture_dim(caps, "run_error_conformance",
                           [&]<std::size_t D>() { detail::run_error_cases<D>(exec, caps); });
}

namespace detail {

template <std::size_t D, class Exec, class Est>
void run_nan_policy_cases(const Exec& exec, const Est& est, const capabilities& caps) {
  using error_fixture = basic_fixture<D>;
  const decode_params p{4, 8, 0.0f, lse_base::natural};
  const std::size_t g = error_fixture::hq / error_fixture::hk, d = error_fixture::d;
  struct spot {
    bool key;
    std::size_t head, token, elem;
  };
  for (const spot s : {spot{true, 0, 1, 3}, spot{true, 1, 39, 0}, spot{false, 1, 0, 5}, spot{false, 0, 36, 15},
                       spot{true, 1, 20, 2}, spot{false, 0, 10, 9}}) {
    INFO("NaN in " << std::string(s.key ? "key" : "value") << " of kv head " << s.head << " at token " << s.token
                   << " (estimator::" << describe(est) << ", head_dim " << D << ")");
    error_fixture clean, dirty;
    auto& buf = s.key ? dirty.K : dirty.V;
    buf[(s.head * error_fixture::n + s.token) * d + s.elem] = std::nanf("");
    lshattn::decode(reference, est, p, clean.request());
    lshattn::decode(exec, est, p, dirty.request());
    for (std::size_t h = 0; h < error_fixture::hq; ++h) {
      const bool reads_it = h / g == s.head;
      for (std::size_t j = 0; j < d; ++j) {
        const float x = dirty.O[h * d + j];
        if (!reads_it) {
          // Every middle key is taken with pi = 1 (lambda = 0): the fp32 bound of detail::rounding_bound.
          const detail::bound b = detail::rounding_bound(clean.Q.data() + h * d, clean.keys().head(h / g),
                                                         clean.values().head(h / g), p.effective_scale(d), 0.0,
                                                         clean.lse[h], caps.log_weight_error, caps.weight_rel_error);
          CHECK(std::isfinite(x));
          CHECK(std::fabs(x - clean.O[h * d + j]) <= b.out);
        } else if (s.key || j == s.elem) {
          CHECK(std::isnan(x));  // a NaN score poisons every element; a NaN value element only its own
        }
      }
    }
  }
}

}  // namespace detail

/// NaN in an attended key or value reaches exactly the heads of its KV group (see the top of this file).
/// Sink, window and sampled positions; the lsh estimator samples from its
/// index, which cannot hold a NaN key, so middle keys are exercised with the
/// uniform baseline (k large enough to take every middle token, each with
/// pi = 1), or, for an executor without it, with estimator::exact, which
/// attends the same set of keys with the same weights.
template <class Exec>
void run_nan_policy_conformance(const Exec& exec, const capabilities& caps = {}) {
  if (caps.uniform) {
    detail::with_fixture_dim(caps, "run_nan_policy_conformance", [&]<std::size_t D>() {
      detail::run_nan_policy_cases<D>(exec, estimator::uniform{1000, 3}, caps);
    });
  } else if (caps.exact) {
    MESSAGE("NOTE (" << caps.name << ", run_nan_policy_conformance): estimator::uniform is not implemented; "
                        "estimator::exact attends the same keys with the same weights and takes its place");
    detail::with_fixture_dim(caps, "run_nan_policy_conformance", [&]<std::size_t D>() {
      detail::run_nan_policy_cases<D>(exec, estimator::exact{}, caps);
    });
  } else {
    MESSAGE("SKIPPED (" << caps.name << ", run_nan_policy_conformance): needs estimator::uniform or exact");
  }
}

/// Check a batch hashing routine against simhash::hash bit for bit (see the top of this file).
template <class HashFn>
void check_hash_codes(HashFn&& hash_fn) {
  for (const auto& [dim, K, L] : {std::tuple<std::size_t, int, int>{64, 10, 20}, {128, 12, 9}, {96, 32, 3}, {5, 1, 7}}) {
    INFO("dim " << dim << " K " << K << " L " << L);
    const hash::simhash<> f(dim, K, L, 0x5eed + dim);
    const std::size_t n = 300, ld = dim + 3;
    std::vector<float> x(n * ld, 0.0f);
    detail::rng r(dim * 31 + static_cast<std::uint64_t>(K));
    for (std::size_t i = 0; i < n; ++i) {
      float* xi = x.data() + i * ld;
      for (std::size_t j = 0; j < dim; ++j) xi[j] = static_cast<float>(r.normal() + (i % 3 == 0 ? 3.0 : 0.0));
      if (i % 2 == 1) {
        // Adversarial: make x nearly orthogonal to one hyperplane, so that the
        // fp32 dot product's sign is decided by rounding noise.
        const std::size_t plane = i % static_cast<std::size_t>(K * L);
        const float* w = f.hyperplanes() + plane * dim;
        std::size_t j0 = 0;
        for (std::size_t j = 1; j < dim; ++j)
          if (std::fabs(w[j]) > std::fabs(w[j0])) j0 = j;
        long double rest = 0.0L;
        for (std::size_t j = 0; j < dim; ++j)
          if (j != j0) rest += static_cast<long double>(xi[j]) * w[j];
        xi[j0] = static_cast<float>(-rest / w[j0]);
      }
      if (i == 4) std::fill(xi, xi + dim, 0.0f);  // the zero vector: every bit 0
      // Extreme magnitudes: a float |x| underflows below ~1e-19 and a float GEMM
      // overflows near 1e38, while the exact sign is unaffected by scaling.
      static constexpr float scales[] = {1.0f, 1e-24f, 1e-30f, 1e-41f, 1e30f, 1e37f};
      const float sc = scales[(i / 2) % 6];
      bool finite = true;
      for (std::size_t j = 0; j < dim; ++j) finite = finite && std::isfinite(xi[j] * sc);
      if (finite)
        for (std::size_t j = 0; j < dim; ++j) xi[j] *= sc;
    }
    std::vector<std::uint32_t> want(n * static_cast<std::size_t>(L)), got(want.size(), 0xdeadbeefu);
    for (std::size_t i = 0; i < n; ++i) f.hash(x.data() + i * ld, want.data() + i * static_cast<std::size_t>(L));
    hash_fn(f, static_cast<const float*>(x.data()), n, ld, got.data());
    std::size_t diff = 0;
    for (std::size_t i = 0; i < want.size(); ++i) diff += want[i] != got[i];
    CHECK(diff == 0);
  }
}

}  // namespace lshattn::conformance
