#pragma once
// The executor conformance suite: one body of checks that every executor
// (reference, CPU-SIMD, CUDA) must pass against lshattn::reference.
//
// Interface (call these from a doctest TEST_CASE):
//
//   lshattn::conformance::run_conformance(exec, tol_scale);
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
// buffers to and from the device.

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
template <class TK, class TV>
bound rounding_bound(const float* q, const matrix_view<const TK>& keys, const matrix_view<const TV>& values,
                     double scale, double lambda, double lse) {
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
  const double delta = c * eps * (std::sqrt(d) * A + A + lambda + 8.0);
  return {(2.0 * delta + c * std::sqrt(n) * eps + 4.0 * eps) * vmax,
          delta + c * std::sqrt(n) * eps + eps * std::fabs(lse)};
}
template <class TQ, class TK, class TV>
bound rounding_bound(const request_data<TQ, TK, TV>& rd, std::size_t h, double scale, double lambda, double lse) {
  const std::size_t kh = h / (rd.hq / rd.hk);
  const auto q = query_row(rd, h);
  return rounding_bound(q.data(), rd.keys.view.head(kh), rd.values.view.head(kh), scale, lambda, lse);
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
void compare_one(const Exec& exec, const Est& est, const shape& s, double tol_scale, batch_data<TQ, TK, TV>& mine,
                 batch_data<TQ, TK, TV>& ref) {
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
    const double scale = s.params.effective_scale(s.d);
    const double lse_unit = s.params.base == lse_base::base2 ? 1.0 / ln2 : 1.0;
    std::size_t unwritten = 0, padding_touched = 0, bad_out = 0, bad_lse = 0;
    double worst_out = 0.0, worst_lse = 0.0;
    for (std::size_t h = 0; h < a.hq; ++h) {
      const double lse_nat = lse_to_natural(r.lse[h], s.params.base);
      const bound b = rounding_bound(r, h, scale, ec.max_abs_log_pi, lse_nat);
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
void run_dtype(const Exec& exec, const shape& s, double tol_scale, std::uint64_t seed) {
  auto mine = make_batch<TQ, TK, TV>(s, seed), ref = make_batch<TQ, TK, TV>(s, seed);
  compare_one(exec, estimator::exact{}, s, tol_scale, mine, ref);
  compare_one(exec, estimator::lsh{}, s, tol_scale, mine, ref);
  compare_one(exec, estimator::lsh{1}, s, tol_scale, mine, ref);
  compare_one(exec, estimator::topk{24}, s, tol_scale, mine, ref);
  compare_one(exec, estimator::uniform{40, 7}, s, tol_scale, mine, ref);
  compare_one(exec, estimator::oracle_sampling{40, 11}, s, tol_scale, mine, ref);
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
void run_conformance(const Exec& exec, double tol_scale = 1.0) {
  std::uint64_t seed = 1000;
  for (const auto& s : detail::shapes()) {
    detail::run_dtype<Exec, float, float, float>(exec, s, tol_scale, seed += 10);
    detail::run_dtype<Exec, bf16, bf16, bf16>(exec, s, tol_scale, seed += 10);
    detail::run_dtype<Exec, fp16, fp16, fp16>(exec, s, tol_scale, seed += 10);
  }
  detail::run_dtype<Exec, float, bf16, fp16>(exec, detail::shapes()[1], tol_scale, seed += 10);
}

namespace detail {

// A small valid request (float, hq = 4, hk = 2, n = 40, d = 16, index over
// [4, 32)) that each error case mutates in one place.
struct error_fixture {
  static constexpr std::size_t hq = 4, hk = 2, n = 40, d = 16;
  std::vector<float> K, V, Q, O, lse, big;
  lsh_index<> index{d, hk, lsh_params{4, 8, 2, 5}};
  decode_stats stats;
  error_fixture() : K(hk * n * d), V(hk * n * d), Q(hq * d), O(hq * d, poison), lse(hq, poison), big(hq * 1100) {
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

template <class Exec, class Est, class Mutate>
void expect_error(const Exec& exec, const Est& est, decode_params p, errc code, const std::string& argument,
                  const char* what, Mutate&& mutate) {
  INFO("bad input: " << what);
  error_fixture f, good;
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

/// Every bad-input case of decode (see the top of this file).
template <class Exec>
void run_error_conformance(const Exec& exec) {
  using detail::error_fixture;
  using R = decode_request<float, float>;
  const decode_params p{4, 8, 0.0f, lse_base::natural};
  const estimator::lsh lsh{};
  const estimator::exact ex{};
  detail::expect_error(exec, ex, p, errc::shape_mismatch, "queries.rows", "no query heads",
                       [](error_fixture&, R& r, decode_params&) { r.queries.rows = 0; });
  detail::expect_error(exec, ex, p, errc::invalid_argument, "queries.cols", "head_dim 0",
                       [](error_fixture&, R& r, decode_params&) { r.queries.cols = 0; });
  detail::expect_error(exec, ex, p, errc::invalid_argument, "queries.cols", "head_dim above max_head_dim",
                       [](error_fixture& f, R& r, decode_params&) {
                         r.queries = matrix_view<const float>(f.big.data(), f.hq, max_head_dim + 1);
                       });
  detail::expect_error(exec, ex, p, errc::invalid_argument, "queries", "null query data",
                       [](error_fixture&, R& r, decode_params&) { r.queries.data = nullptr; });
  detail::expect_error(exec, ex, p, errc::shape_mismatch, "keys.heads", "kv heads do not divide query heads",
                       [](error_fixture&, R& r, decode_params&) {
                         r.keys.heads = 3;
                         r.keys.tokens = 20;
                       });
  detail::expect_error(exec, ex, p, errc::shape_mismatch, "values.heads", "values heads differ",
                       [](error_fixture&, R& r, decode_params&) { r.values.heads = 1; });
  detail::expect_error(exec, ex, p, errc::shape_mismatch, "keys.dim", "keys head_dim mismatch",
                       [](error_fixture&, R& r, decode_params&) { r.keys.dim = 8; });
  detail::expect_error(exec, ex, p, errc::shape_mismatch, "values.dim", "values head_dim mismatch",
                       [](error_fixture&, R& r, decode_params&) { r.values.dim = 8; });
  detail::expect_error(exec, ex, p, errc::invalid_state, "keys.tokens", "empty cache",
                       [](error_fixture&, R& r, decode_params&) {
                         r.keys.tokens = 0;
                         r.values.tokens = 0;
                       });
  detail::expect_error(exec, ex, p, errc::shape_mismatch, "values.tokens", "values shorter than keys",
                       [](error_fixture&, R& r, decode_params&) { r.values.tokens = 39; });
  detail::expect_error(exec, ex, p, errc::shape_mismatch, "output", "output rows",
                       [](error_fixture&, R& r, decode_params&) { r.output.rows = 3; });
  detail::expect_error(exec, ex, p, errc::invalid_argument, "output", "output row stride below cols",
                       [](error_fixture&, R& r, decode_params&) { r.output.row_stride = 8; });
  detail::expect_error(exec, ex, p, errc::invalid_argument, "keys", "key token stride below dim",
                       [](error_fixture&, R& r, decode_params&) { r.keys.token_stride = 8; });
  detail::expect_error(exec, ex, p, errc::shape_mismatch, "lse", "lse span size",
                       [](error_fixture& f, R& r, decode_params&) { r.lse = std::span<float>(f.lse.data(), 3); });
  detail::expect_error(exec, ex, p, errc::non_finite, "queries", "NaN query",
                       [](error_fixture& f, R&, decode_params&) { f.Q[3 * f.d + 7] = std::nanf(""); });
  detail::expect_error(exec, lsh, p, errc::non_finite, "queries", "infinite query",
                       [](error_fixture& f, R&, decode_params&) {
                         f.Q[5] = -std::numeric_limits<float>::infinity();
                       });
  detail::expect_error(exec, ex, p, errc::invalid_argument, "scale", "NaN scale",
                       [](error_fixture&, R&, decode_params& q) { q.scale = std::nanf(""); });
  detail::expect_error(exec, ex, p, errc::invalid_argument, "scale", "negative scale",
                       [](error_fixture&, R&, decode_params& q) { q.scale = -0.5f; });
  detail::expect_error(exec, ex, p, errc::invalid_argument, "scale", "infinite scale",
                       [](error_fixture&, R&, decode_params& q) { q.scale = std::numeric_limits<float>::infinity(); });
  detail::expect_error(exec, lsh, p, errc::invalid_argument, "index", "null index",
                       [](error_fixture&, R& r, decode_params&) { r.index = nullptr; });
  static const lsh_index<> unbuilt(error_fixture::d, error_fixture::hk, lsh_params{4, 8, 2, 5});
  detail::expect_error(exec, lsh, p, errc::invalid_state, "index", "unbuilt index",
                       [](error_fixture&, R& r, decode_params&) { r.index = &unbuilt; });
  static const lsh_index<> wrong_heads = [] {
    error_fixture f;
    lsh_index<> i(error_fixture::d, 1, lsh_params{4, 8, 2, 5});
    i.build(cache_view<const float>(f.K.data(), 1, error_fixture::n, error_fixture::d), 4, 32);
    return i;
  }();
  detail::expect_error(exec, lsh, p, errc::shape_mismatch, "index", "index kv_heads mismatch",
                       [](error_fixture&, R& r, decode_params&) { r.index = &wrong_heads; });
  static const lsh_index<> wrong_dim = [] {
    error_fixture f;
    lsh_index<> i(8, error_fixture::hk, lsh_params{4, 8, 2, 5});
    i.build(cache_view<const float>(f.K.data(), error_fixture::hk, error_fixture::n, 8), 4, 32);
    return i;
  }();
  detail::expect_error(exec, lsh, p, errc::shape_mismatch, "index", "index head_dim mismatch",
                       [](error_fixture&, R& r, decode_params&) { r.index = &wrong_dim; });
  detail::expect_error(exec, lsh, p, errc::shape_mismatch, "index", "index covers more tokens than the cache",
                       [](error_fixture&, R& r, decode_params&) {
                         r.keys = r.keys.prefix(20);
                         r.values = r.values.prefix(20);
                       });
  detail::expect_error(exec, estimator::lsh{-1}, p, errc::invalid_argument, "lsh.m", "negative lsh.m",
                       [](error_fixture&, R&, decode_params&) {});
}

/// NaN in an attended key or value reaches exactly the heads of its KV group (see the top of this file).
template <class Exec>
void run_nan_policy_conformance(const Exec& exec) {
  using detail::error_fixture;
  const decode_params p{4, 8, 0.0f, lse_base::natural};
  const std::size_t g = error_fixture::hq / error_fixture::hk, d = error_fixture::d;
  struct spot {
    bool key;
    std::size_t head, token, elem;
  };
  // Sink, window and sampled positions; the lsh estimator samples from its
  // index, which cannot hold a NaN key, so middle keys are exercised with the
  // uniform baseline (k large enough to take every middle token).
  for (const spot s : {spot{true, 0, 1, 3}, spot{true, 1, 39, 0}, spot{false, 1, 0, 5}, spot{false, 0, 36, 15},
                       spot{true, 1, 20, 2}, spot{false, 0, 10, 9}}) {
    INFO("NaN in " << std::string(s.key ? "key" : "value") << " of kv head " << s.head << " at token " << s.token);
    error_fixture clean, dirty;
    auto& buf = s.key ? dirty.K : dirty.V;
    buf[(s.head * error_fixture::n + s.token) * d + s.elem] = std::nanf("");
    const estimator::uniform est{1000, 3};
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
                                                         clean.lse[h]);
          CHECK(std::isfinite(x));
          CHECK(std::fabs(x - clean.O[h * d + j]) <= b.out);
        } else if (s.key || j == s.elem) {
          CHECK(std::isnan(x));  // a NaN score poisons every element; a NaN value element only its own
        }
      }
    }
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
