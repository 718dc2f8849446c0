// lshattn_coverage: per-head coverage of the nominal 95% error bars
// (decode_request::std_error) on the llm_like workload, for uniform, oracle
// sampling and LSH. Each trial draws a fresh sample (estimator seed, or
// hyperplane seed for LSH); coverage counts every output element of every
// trial, so it is a descriptive rate (elements of one trial are correlated),
// reported with the RMS of the estimated standard errors against the RMS of
// the actual errors. docs/quality.md quotes its output.
//
//   lshattn_coverage [tokens=4096] [trials=300] [K=7] [L=100]

#include <cmath>
#include <cstdio>
#include <exception>
#include <stdexcept>
#include <string>
#include <vector>

#include <lshattn/lshattn.hpp>

#include "support/args.hpp"

namespace {

constexpr const char* usage =
    "usage: lshattn_coverage [tokens=4096] [trials=300] [K=7] [L=100]\n"
    "Per-head coverage of the nominal 95% error bars on the llm_like workload (CSV on stdout).";

/// A positive integer argument, or an error naming it.
long positive(const std::string& name, const std::string& text) {
  std::size_t used = 0;
  long v = 0;
  try {
    v = std::stol(text, &used);
  } catch (const std::exception&) {
    used = 0;
  }
  if (used != text.size() || v < 1) throw std::runtime_error(name + " must be a positive integer, not '" + text + "'");
  return v;
}

}  // namespace

int main(int argc, char** argv) try {
  using namespace lshattn;
  std::vector<std::string> pos;
  if (!lshattn_examples::parse_args(argc, argv, usage, [&](const std::string& a, const auto&) {
        if (a.size() > 1 && a[0] == '-') return false;  // no options besides --help
        pos.push_back(a);
        return true;
      }))
    return 0;
  if (pos.size() > 4) throw std::runtime_error("at most 4 arguments (try --help)");
  const std::size_t n = pos.size() > 0 ? static_cast<std::size_t>(positive("tokens", pos[0])) : 4096;
  const int T = pos.size() > 1 ? static_cast<int>(positive("trials", pos[1])) : 300;
  const int K = pos.size() > 2 ? static_cast<int>(positive("K", pos[2])) : 7;
  const int L = pos.size() > 3 ? static_cast<int>(positive("L", pos[3])) : 100;
  const std::size_t D = 32, HQ = 8, HK = 2;
  workload::llm_like_params wp;
  wp.tokens = n;
  wp.q_heads = HQ;
  wp.kv_heads = HK;
  wp.dim = D;
  const auto w = workload::llm_like(wp);
  cache_view<const float> kc(w.keys.data(), HK, n, D), vc(w.values.data(), HK, n, D);
  std::vector<float> O(HQ * D), E(HQ * D), SE(HQ * D), ess(HQ);
  decode_request<float, float> r{matrix_view<const float>(w.queries.data(), HQ, D), kc, vc, nullptr,
                                 matrix_view<float>(E.data(), HQ, D)};
  const decode_params p;
  decode(reference, estimator::exact{}, p, r);
  r.output = matrix_view<float>(O.data(), HQ, D);
  r.std_error = matrix_view<float>(SE.data(), HQ, D);
  r.ess = ess;
  std::printf("estimator,head,coverage,rms_se,rms_error,mean_ess\n");
  const char* names[] = {"uniform(400)", "oracle(100)", "lsh"};
  for (int est = 0; est < 3; ++est) {
    std::vector<double> cov(HQ), se2(HQ), err2(HQ), essm(HQ);
    for (int t = 0; t < T; ++t) {
      lsh_index<> idx(D, HK, lsh_params{K, L, 2, static_cast<std::uint64_t>(t) + 1});
      if (est == 0) {
        decode(reference, estimator::uniform{400, static_cast<std::uint64_t>(t)}, p, r);
      } else if (est == 1) {
        decode(reference, estimator::oracle_sampling{100, static_cast<std::uint64_t>(t)}, p, r);
      } else {
        idx.build(kc, p.sink, n - p.window);
        r.index = &idx;
        decode(reference, estimator::lsh{}, p, r);
        r.index = nullptr;
      }
      for (std::size_t h = 0; h < HQ; ++h) {
        essm[h] += ess[h] / T;
        for (std::size_t j = 0; j < D; ++j) {
          const double e = O[h * D + j] - E[h * D + j];
          cov[h] += std::abs(e) <= 1.96 * SE[h * D + j] ? 1.0 / (T * D) : 0.0;
          se2[h] += static_cast<double>(SE[h * D + j]) * SE[h * D + j] / (T * D);
          err2[h] += e * e / (T * D);
        }
      }
    }
    for (std::size_t h = 0; h < HQ; ++h)
      std::printf("%s,%zu,%.3f,%.4f,%.4f,%.1f\n", names[est], h, cov[h], std::sqrt(se2[h]), std::sqrt(err2[h]), essm[h]);
  }
  return 0;
} catch (const std::exception& e) {
  std::fprintf(stderr, "lshattn_coverage: %s\n", e.what());
  return 1;
}
