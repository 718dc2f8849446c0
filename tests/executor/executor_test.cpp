// The reference executor against an independent float64 dense reference
// written here: GQA, the sink/window split with an arbitrary sampling design,
// the LSE base, the scale, batches and the stats counters.
#include "lshattn/executor/reference.hpp"

#include <doctest/doctest.h>

#include <cmath>
#include <limits>
#include <vector>

#include "lshattn/decode.hpp"
#include "lshattn/estimator/exact.hpp"
#include "lshattn/estimator/lsh.hpp"
#include "lshattn/random/normal.hpp"

using namespace lshattn;

namespace {

// A test design: for query head g of the group, key i of the sampled range is
// taken with the given probability pi (0 = not taken), the same for every KV
// head. Deterministic, so the test knows the exact HT estimate.
struct fixed_design {
  static constexpr bool uses_index = false;
  std::vector<std::vector<double>> pi;  // [group][position - begin]
  void validate() const noexcept {}
  template <class T, class I>
  void sample(const estimator::sample_context<T, I>& ctx, estimator::sample_set& out) const {
    out.reset(ctx.queries.rows);
    for (std::size_t i = ctx.begin; i < ctx.end; ++i) {
      bool any = false;
      for (std::size_t g = 0; g < ctx.queries.rows; ++g) any = any || pi[g][i - ctx.begin] > 0.0;
      if (any) out.ids.push_back(static_cast<std::uint32_t>(i));
    }
    out.allocate_weights();
    for (std::size_t g = 0; g < ctx.queries.rows; ++g)
      for (std::size_t k = 0; k < out.ids.size(); ++k) {
        const double p = pi[g][out.ids[k] - ctx.begin];
        if (p > 0.0) out.log_pi[g * out.ids.size() + k] = std::log(p);
      }
  }
};
static_assert(estimator::sampler<fixed_design>);

struct layer {
  std::size_t hq, hk, n, d;
  std::vector<float> K, V, Q;
  layer(std::size_t hq_, std::size_t hk_, std::size_t n_, std::size_t d_, std::uint64_t seed)
      : hq(hq_), hk(hk_), n(n_), d(d_), K(hk_ * n_ * d_), V(hk_ * n_ * d_), Q(hq_ * d_) {
    random::fill_normal(K.data(), K.size(), seed, 1);
    random::fill_normal(V.data(), V.size(), seed, 2);
    random::fill_normal(Q.data(), Q.size(), seed, 3);
    for (auto& q : Q) q *= 2.0f;  // peakier softmax
  }
  cache_view<const float> keys() const { return {K.data(), hk, n, d}; }
  cache_view<const float> values() const { return {V.data(), hk, n, d}; }
};

// Independent float64 reference: query head h reads KV head h / (hq / hk);
// keys outside [b, e) get weight w_i, keys inside get w_i / pi_i (skipped where
// pi = 0). Returns o[d] and the natural-log LSE.
void dense_reference(const layer& x, std::size_t h, double scale, std::size_t b, std::size_t e,
                     const std::vector<double>* pi, std::vector<double>& o, double& lse) {
  const std::size_t kv = h / (x.hq / x.hk);
  std::vector<double> logw;
  std::vector<std::size_t> ids;
  for (std::size_t t = 0; t < x.n; ++t) {
    double s = 0;
    for (std::size_t j = 0; j < x.d; ++j) s += static_cast<double>(x.Q[h * x.d + j]) * x.K[(kv * x.n + t) * x.d + j];
    s *= scale;
    if (t >= b && t < e && pi) {
      const double p = (*pi)[t - b];
      if (p <= 0.0) continue;
      s -= std::log(p);
    }
    logw.push_back(s);
    ids.push_back(t);
  }
  double mx = -std::numeric_limits<double>::infinity();
  for (double s : logw) mx = std::max(mx, s);
  double sum = 0;
  o.assign(x.d, 0.0);
  for (std::size_t i = 0; i < ids.size(); ++i) {
    const double w = std::exp(logw[i] - mx);
    sum += w;
    for (std::size_t j = 0; j < x.d; ++j) o[j] += w * x.V[(kv * x.n + ids[i]) * x.d + j];
  }
  for (auto& v : o) v /= sum;
  lse = mx + std::log(sum);
}

// The reference rounds its float64 result to float once: half an ulp,
// 2^-24 relative, plus float64 accumulation error (n terms, far below 1e-12).
void check_close(float got, double want) {
  CHECK(std::fabs(got - want) <= 0x1p-24 * std::fabs(want) + 1e-12);
}

}  // namespace

TEST_CASE("reference: GQA and the sink/window split agree with a float64 dense reference") {
  struct cfg {
    std::size_t hq, hk, n, d, sink, window;
  };
  for (const cfg c : {cfg{4, 1, 100, 16, 4, 16}, cfg{6, 3, 77, 8, 0, 10}, cfg{8, 2, 150, 32, 5, 0}, cfg{2, 2, 20, 8, 4, 64},
                      cfg{4, 4, 50, 12, 30, 30}, cfg{3, 1, 1, 4, 4, 64}}) {
    INFO("hq " << c.hq << " hk " << c.hk << " n " << c.n << " sink " << c.sink << " window " << c.window);
    const layer x(c.hq, c.hk, c.n, c.d, c.n * 7 + c.hq);
    const std::size_t g = c.hq / c.hk;
    const decode_params p{c.sink, c.window};
    const std::size_t b = std::min(c.sink, c.n), e = c.n > c.window ? std::max(b, c.n - c.window) : b;
    // A design with uneven probabilities; some keys excluded for some heads.
    fixed_design design;
    random::philox_engine rng(c.n);
    design.pi.assign(g, std::vector<double>(e - b));
    for (std::size_t k = 0; k < g; ++k)
      for (auto& v : design.pi[k]) v = rng.uniform() < 0.3 ? 0.0 : 0.01 + rng.uniform();
    std::vector<float> out(c.hq * c.d), lse(c.hq);
    decode_stats st;
    const decode_request<float, float> r{matrix_view<const float>(x.Q.data(), c.hq, c.d), x.keys(), x.values(), nullptr,
                                         matrix_view<float>(out.data(), c.hq, c.d), lse, &st};
    for (int which = 0; which < 2; ++which) {
      std::fill(out.begin(), out.end(), std::nanf(""));
      std::fill(lse.begin(), lse.end(), std::nanf(""));
      if (which == 0) decode(reference, estimator::exact{}, p, r);
      else decode(reference, design, p, r);
      for (std::size_t h = 0; h < c.hq; ++h) {
        std::vector<double> o;
        double l = 0;
        dense_reference(x, h, 1.0 / std::sqrt(static_cast<double>(c.d)), b, e, which ? &design.pi[h % g] : nullptr, o, l);
        for (std::size_t j = 0; j < c.d; ++j) check_close(out[h * c.d + j], o[j]);
        check_close(lse[h], l);
      }
    }
  }
}

TEST_CASE("reference: base-2 LSE is the natural LSE / ln 2 and outputs do not depend on the base") {
  const layer x(4, 2, 90, 16, 5);
  std::vector<float> o1(4 * 16), o2(4 * 16), l1(4), l2(4);
  decode_params p{4, 8};
  const auto req = [&](std::vector<float>& o, std::vector<float>& l) {
    return decode_request<float, float>{matrix_view<const float>(x.Q.data(), 4, 16), x.keys(), x.values(), nullptr,
                                        matrix_view<float>(o.data(), 4, 16), l};
  };
  decode(reference, estimator::exact{}, p, req(o1, l1));
  p.base = lse_base::base2;
  decode(reference, estimator::exact{}, p, req(o2, l2));
  CHECK(o1 == o2);
  for (std::size_t h = 0; h < 4; ++h) {
    // Each is the float rounding of the same float64 value in its base: within one float ulp after conversion.
    CHECK(std::fabs(static_cast<double>(l2[h]) * ln2 - l1[h]) <= 0x1p-23 * std::fabs(l1[h]));
    std::vector<double> o;
    double l = 0;
    dense_reference(x, h, 0.25, 4, 82, nullptr, o, l);
    check_close(l2[h], l / std::log(2.0));
  }
  // lse is optional: an empty span gives the same outputs.
  std::vector<float> o3(4 * 16);
  decode(reference, estimator::exact{}, p,
         decode_request<float, float>{matrix_view<const float>(x.Q.data(), 4, 16), x.keys(), x.values(), nullptr,
                                      matrix_view<float>(o3.data(), 4, 16)});
  CHECK(o3 == o1);
}

TEST_CASE("reference: an explicit scale replaces 1/sqrt(d)") {
  const layer x(2, 1, 40, 8, 6);
  std::vector<float> out(16), lse(2);
  decode(reference, estimator::exact{}, decode_params{4, 8, 0.7f},
         decode_request<float, float>{matrix_view<const float>(x.Q.data(), 2, 8), x.keys(), x.values(), nullptr,
                                      matrix_view<float>(out.data(), 2, 8), lse});
  for (std::size_t h = 0; h < 2; ++h) {
    std::vector<double> o;
    double l = 0;
    dense_reference(x, h, static_cast<double>(0.7f), 0, 0, nullptr, o, l);
    for (std::size_t j = 0; j < 8; ++j) check_close(out[h * 8 + j], o[j]);
    check_close(lse[h], l);
  }
}

TEST_CASE("reference: lsh over an index that covers part of a grown cache, the rest dense") {
  // Index over [4, 150); the cache has grown to 200: [150, 200) joins the dense
  // part. K = 1, L = 1024, m = 1 takes every indexed key (see the estimator
  // tests), so the result is full attention.
  const layer x(4, 2, 200, 16, 8);
  lsh_index<> idx(16, 2, lsh_params{1, 1024, 1, 3});
  idx.build(x.keys(), 4, 150);
  std::vector<float> out(4 * 16), lse(4);
  decode_stats st;
  decode(reference, estimator::lsh{}, decode_params{4, 16},
         decode_request<float, float>{matrix_view<const float>(x.Q.data(), 4, 16), x.keys(), x.values(), &idx,
                                      matrix_view<float>(out.data(), 4, 16), lse, &st});
  CHECK(st.dense_keys == 4 * (4 + 50));
  CHECK(st.sampled_range == 4 * 146);
  CHECK(st.sampled_keys == 4 * 146);
  CHECK(st.union_keys == 2 * 146);
  for (std::size_t h = 0; h < 4; ++h) {
    std::vector<double> o;
    double l = 0;
    dense_reference(x, h, 0.25, 0, 0, nullptr, o, l);
    // u = 1 - 2^-1024-ish rounds to 1: only the final float rounding (plus one ulp of slack for 1/u).
    for (std::size_t j = 0; j < 16; ++j) CHECK(std::fabs(out[h * 16 + j] - o[j]) <= 0x1p-23 * std::fabs(o[j]) + 1e-12);
    CHECK(std::fabs(lse[h] - l) <= 0x1p-23 * std::fabs(l));
  }
}

TEST_CASE("reference: stats counters add up and are never reset, batches equal single requests") {
  const layer a(4, 2, 120, 8, 9), b(4, 2, 61, 8, 10);
  const decode_params p{4, 16};
  std::vector<float> oa(32), ob(32), la(4), lb(4), sa(32), sb(32);
  decode_stats st;
  std::vector<decode_request<float, float>> batch{
      {matrix_view<const float>(a.Q.data(), 4, 8), a.keys(), a.values(), nullptr, matrix_view<float>(oa.data(), 4, 8), la, &st},
      {matrix_view<const float>(b.Q.data(), 4, 8), b.keys(), b.values(), nullptr, matrix_view<float>(ob.data(), 4, 8), lb, &st}};
  decode(reference, estimator::exact{}, p, std::span<const decode_request<float, float>>(batch));
  // exact: per query head, sink + window dense and the middle sampled with pi = 1.
  const std::size_t mid = (120 - 20) + (61 - 20);
  CHECK(st.dense_keys == 4 * 20 * 2);
  CHECK(st.sampled_keys == 4 * mid);
  CHECK(st.sampled_range == 4 * mid);
  CHECK(st.union_keys == 2 * mid);
  decode(reference, estimator::exact{}, p, std::span<const decode_request<float, float>>(batch));
  CHECK(st.dense_keys == 2 * 4 * 20 * 2);
  CHECK(st.union_keys == 2 * 2 * mid);
  decode(reference, estimator::exact{}, p,
         decode_request<float, float>{matrix_view<const float>(a.Q.data(), 4, 8), a.keys(), a.values(), nullptr,
                                      matrix_view<float>(sa.data(), 4, 8)});
  decode(reference, estimator::exact{}, p,
         decode_request<float, float>{matrix_view<const float>(b.Q.data(), 4, 8), b.keys(), b.values(), nullptr,
                                      matrix_view<float>(sb.data(), 4, 8)});
  CHECK(sa == oa);
  CHECK(sb == ob);
}

TEST_CASE("reference: bf16 and fp16 caches are widened exactly before float64 arithmetic") {
  const layer x(2, 1, 64, 8, 11);
  std::vector<bf16> kb(x.K.size()), vb(x.V.size());
  std::vector<fp16> qh(x.Q.size());
  layer widened = x;
  for (std::size_t i = 0; i < kb.size(); ++i) {
    kb[i] = bf16(x.K[i]), vb[i] = bf16(x.V[i]);
    widened.K[i] = static_cast<float>(kb[i]), widened.V[i] = static_cast<float>(vb[i]);
  }
  for (std::size_t i = 0; i < qh.size(); ++i) qh[i] = fp16(x.Q[i]), widened.Q[i] = static_cast<float>(qh[i]);
  std::vector<float> out(16), lse(2);
  decode(reference, estimator::exact{}, decode_params{2, 4},
         decode_request<fp16, bf16>{matrix_view<const fp16>(qh.data(), 2, 8), cache_view<const bf16>(kb.data(), 1, 64, 8),
                                    cache_view<const bf16>(vb.data(), 1, 64, 8), nullptr,
                                    matrix_view<float>(out.data(), 2, 8), lse});
  for (std::size_t h = 0; h < 2; ++h) {
    std::vector<double> o;
    double l = 0;
    dense_reference(widened, h, 1.0 / std::sqrt(8.0), 0, 0, nullptr, o, l);
    for (std::size_t j = 0; j < 8; ++j) check_close(out[h * 8 + j], o[j]);
    check_close(lse[h], l);
  }
}
