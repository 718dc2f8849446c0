#include "lshattn/executor/cpu/kernels.hpp"

#include <doctest/doctest.h>

#include <cmath>
#include <limits>
#include <lshattn/executor/cpu.hpp>
#include <vector>

#include "conformance.hpp"

// Each instruction set's kernels that this machine can run, against float64
// arithmetic, on fresh random inputs with NaN-poisoned outputs. The bound is
// the conformance suite's fp32 rounding bound (detail::rounding_bound: a
// 4-sigma random-walk model of fp32 accumulation, derived there).

namespace {
using namespace lshattn;
using executor::cpu_detail::attend_job;
using executor::cpu_detail::correction;
using executor::cpu_detail::kernel_table;
using executor::cpu_detail::padded;

std::vector<const kernel_table*> available_tables() {
  std::vector<const kernel_table*> t;
  for (cpu_isa i : {cpu_isa::sse2, cpu_isa::avx2, cpu_isa::avx512})
    if (cpu_isa_available(i)) t.push_back(&executor::cpu_detail::kernels_for(i));
  return t;
}

template <class TK, class TV>
void check_attend(const kernel_table& k, std::size_t d, bool with_log_pi, std::uint64_t seed) {
  INFO(k.name << " keys " << to_string(dtype_of<TK>) << " values " << to_string(dtype_of<TV>) << " d " << d
               << (with_log_pi ? " log_pi" : " dense"));
  const std::size_t n = 203, G = 3, stride = d + 5, dp = padded(d);
  conformance::detail::rng r(seed);
  std::vector<TK> K(n * stride);
  std::vector<TV> V(n * stride);
  std::vector<float> q(G * dp, 0.0f), log_pi(G * n, 0.0f);
  for (std::size_t t = 0; t < n; ++t)
    for (std::size_t j = 0; j < d; ++j) {
      K[t * stride + j] = from_float<TK>(static_cast<float>(r.normal() + 1.5));
      V[t * stride + j] = from_float<TV>(static_cast<float>(r.normal()));
    }
  for (std::size_t h = 0; h < G; ++h)
    for (std::size_t j = 0; j < d; ++j) q[h * dp + j] = static_cast<float>(r.normal());
  if (with_log_pi)
    for (std::size_t h = 0; h < G; ++h)
      for (std::size_t t = 0; t < n; ++t)
        log_pi[h * n + t] = r.uniform() < 0.3 ? -std::numeric_limits<float>::infinity()
                                              : static_cast<float>(std::log(0.05 + 0.9 * r.uniform()));
  // Rows in a scrambled order through an id list, as a sample set gives them.
  std::vector<std::uint32_t> ids(n);
  for (std::size_t i = 0; i < n; ++i) ids[i] = static_cast<std::uint32_t>((i * 37) % n);
  std::vector<float> lp(G * n);
  for (std::size_t h = 0; h < G; ++h)
    for (std::size_t i = 0; i < n; ++i) lp[h * n + i] = log_pi[h * n + ids[i]];
  std::vector<float> acc(G * dp, std::nanf("")), mx(G), sum(G);
  std::fill(acc.begin(), acc.end(), 0.0f);
  std::fill(mx.begin(), mx.end(), -std::numeric_limits<float>::infinity());
  std::fill(sum.begin(), sum.end(), 0.0f);
  const double scale = 1.0 / std::sqrt(static_cast<double>(d));
  attend_job j;
  j.keys = K.data();
  j.values = V.data();
  j.key_stride = j.value_stride = stride;
  j.dim = d;
  j.ids = ids.data();
  j.count = n;
  j.q = q.data();
  j.group = G;
  j.scale = static_cast<float>(scale);
  j.mode = with_log_pi ? correction::log_pi : correction::none;
  j.log_pi = lp.data();
  j.log_pi_stride = n;
  j.acc = acc.data();
  j.mx = mx.data();
  j.sum = sum.data();
  // Two calls over halves of the rows: the state carries over.
  attend_job first = j, second = j;
  first.count = n / 2;
  second.ids = ids.data() + n / 2;
  second.log_pi = lp.data() + n / 2;
  second.count = n - n / 2;
  k.attend[static_cast<int>(dtype_of<TK>)][static_cast<int>(dtype_of<TV>)](first);
  k.attend[static_cast<int>(dtype_of<TK>)][static_cast<int>(dtype_of<TV>)](second);
  for (std::size_t h = 0; h < G; ++h) {
    std::vector<double> o(d, 0.0), s(n);
    double mxd = -INFINITY, lam = 0.0;
    for (std::size_t t = 0; t < n; ++t) {
      double dot = 0.0;
      for (std::size_t jj = 0; jj < d; ++jj) dot += static_cast<double>(q[h * dp + jj]) * to_float(K[t * stride + jj]);
      s[t] = dot * scale - log_pi[h * n + t];
      if (std::isfinite(log_pi[h * n + t])) {
        mxd = std::max(mxd, s[t]);
        lam = std::max(lam, std::fabs(static_cast<double>(log_pi[h * n + t])));
      }
    }
    double z = 0.0;
    for (std::size_t t = 0; t < n; ++t) {
      if (!std::isfinite(log_pi[h * n + t])) continue;
      const double w = std::exp(s[t] - mxd);
      z += w;
      for (std::size_t jj = 0; jj < d; ++jj) o[jj] += w * to_float(V[t * stride + jj]);
    }
    const double lse = mxd + std::log(z);
    const auto b = conformance::detail::rounding_bound(q.data() + h * dp, matrix_view<const TK>(K.data(), n, d, stride),
                                                       matrix_view<const TV>(V.data(), n, d, stride), scale, lam, lse);
    CHECK(std::fabs(mx[h] + std::log(static_cast<double>(sum[h])) - lse) <= b.lse);
    std::size_t bad = 0;
    for (std::size_t jj = 0; jj < d; ++jj) bad += !(std::fabs(acc[h * dp + jj] / sum[h] - o[jj] / z) <= b.out);
    for (std::size_t jj = d; jj < dp; ++jj) bad += acc[h * dp + jj] != 0.0f;  // padding stays zero
    CHECK(bad == 0);
  }
}
}  // namespace

TEST_CASE("kernels: attention of every available ISA, every dtype pair, head_dim 17..256") {
  std::uint64_t seed = 1;
  for (const kernel_table* k : available_tables())
    for (std::size_t d : {17u, 64u, 96u, 128u, 256u})
      for (bool lp : {false, true}) {
        check_attend<float, float>(*k, d, lp, ++seed);
        check_attend<bf16, bf16>(*k, d, lp, ++seed);
        check_attend<fp16, fp16>(*k, d, lp, ++seed);
        check_attend<bf16, fp16>(*k, d, lp, ++seed);
        check_attend<fp16, float>(*k, d, lp, ++seed);
      }
}

TEST_CASE("kernels: GEMM hashing of every available ISA gives simhash::hash's codes bit for bit") {
  for (const kernel_table* k : available_tables()) {
    INFO(k->name);
    conformance::check_hash_codes([k](const hash::simhash<>& f, const float* x, std::size_t n, std::size_t ld,
                                      std::uint32_t* codes) {
      const executor::cpu_detail::hash_plan plan(f);
      std::vector<float> X(n * plan.dpad), norms(n), zero(plan.dpad, 0.0f);
      std::vector<std::uint64_t> bits(n * plan.words()), unsure(n * plan.words());
      k->centre[0](x, ld, n, zero.data(), f.dim(), X.data(), plan.dpad, norms.data());
      const std::size_t L = static_cast<std::size_t>(f.tables());
      plan.encode(*k, X.data(), n, plan.dpad, norms.data(), bits.data(), unsure.data(),
                  [&](std::size_t i, int l, std::uint32_t c) { codes[i * L + static_cast<std::size_t>(l)] = c; });
    });
  }
}

TEST_CASE("kernels: roofline probes sum what they read") {
  std::vector<float> data(4099);
  for (std::size_t i = 0; i < data.size(); ++i) data[i] = static_cast<float>(i % 7);  // small integers: exact sums
  std::vector<std::uint32_t> ids{3, 0, 5, 5, 1};
  const std::size_t row = 64;
  for (const kernel_table* k : available_tables()) {
    INFO(k->name);
    double want = 0.0;
    for (float x : data) want += x;
    CHECK(k->stream_sum(data.data(), data.size()) == want);
    double g = 0.0;
    for (std::uint32_t id : ids)
      for (std::size_t c = 0; c < row; ++c) g += data[id * row + c];
    CHECK(k->gather_sum(data.data(), ids.data(), ids.size(), row) == g);
  }
}
