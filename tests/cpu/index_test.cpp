#include "lshattn/executor/cpu/index.hpp"

#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <lshattn/executor/cpu.hpp>
#include <vector>

#include "conformance.hpp"

// cpu_index against lsh_index (the reference index): the same keys give the
// same retrieval results, id for id and count for count, across 64K-token
// blocks, growth and tail merges; and the lsh estimator's fast path on a
// cpu_index matches the reference executor on an lsh_index.

namespace {
using namespace lshattn;

template <class T>
std::vector<T> offset_keys(std::size_t heads, std::size_t n, std::size_t d, std::uint64_t seed) {
  conformance::detail::rng r(seed);
  std::vector<T> K(heads * n * d);
  std::vector<double> off(d);
  for (auto& x : off) x = 2.0 * r.normal();
  for (std::size_t i = 0; i < K.size(); ++i) K[i] = from_float<T>(static_cast<float>(off[i % d] + r.normal()));
  return K;
}

template <class A, class B>
void same_retrieval(const A& a, const B& b, std::size_t heads, std::size_t d, int m, std::uint64_t seed) {
  conformance::detail::rng r(seed);
  retrieval_workspace wa, wb;
  std::vector<float> q(d);
  for (std::size_t h = 0; h < heads; ++h)
    for (int rep = 0; rep < 3; ++rep) {
      for (auto& x : q) x = static_cast<float>(r.normal());
      a.query(h, q.data(), m, wa);
      b.query(h, q.data(), m, wb);
      CHECK(wa.ids == wb.ids);
      CHECK(wa.counts == wb.counts);
    }
}
}  // namespace

TEST_CASE("cpu_index retrieves what lsh_index retrieves (bf16, fp16, float, several blocks)") {
  const std::size_t d = 16, H = 2;
  for (int which = 0; which < 3; ++which) {
    const std::size_t n = which == 0 ? 140000 : 3000;  // 140000 tokens: three 65535-token blocks
    const lsh_params lp{6, 12, 2, 77};
    INFO("case " << which);
    auto run = [&](auto tag) {
      using T = decltype(tag);
      const auto K = offset_keys<T>(H, n, d, 5 + which);
      const cache_view<const T> kc(K.data(), H, n, d);
      lsh_index<> ref(d, H, lp);
      cpu_index mine(d, H, lp);
      ref.build(kc, 4, n - 64);
      mine.build(cpu(3), kc, 4, n - 64);
      CHECK(mine.begin() == 4);
      CHECK(mine.end() == n - 64);
      for (std::size_t h = 0; h < H; ++h)
        for (std::size_t j = 0; j < d; ++j) CHECK(mine.mean(h)[j] == ref.mean(h)[j]);
      same_retrieval(mine, ref, H, d, 2, 11);
      same_retrieval(mine, ref, H, d, 1, 12);
    };
    if (which == 0) run(bf16{});
    else if (which == 1) run(fp16{});
    else run(float{});
  }
}

namespace {
// retrieve_group (the executor's path: per-head bucket walks with prefetched
// buckets and branch-free hit lists, merged into one union per block with
// membership bits) against lsh_index's query for each head of the group
// separately, over n tokens: full blocks, a partial one, and a tail of 836.
void gqa_retrieval_case(const lsh_params& lp, std::size_t n, std::size_t blocks, std::uint64_t seed) {
  const std::size_t d = 16, H = 2, G = 3, L = static_cast<std::size_t>(lp.L);
  const auto K = offset_keys<bf16>(H, n, d, seed);
  const cache_view<const bf16> kc(K.data(), H, n, d);
  lsh_index<> ref(d, H, lp);
  cpu_index mine(d, H, lp);
  mine.set_merge_policy(1u << 20, 1.0);  // keep the appended tokens in the tail
  ref.build(kc, 4, n - 900);
  mine.build(cpu(3), kc, 4, n - 900);
  ref.append(kc, n - 64);
  mine.append(kc, n - 64, cpu(2));
  REQUIRE(mine.tail_size() == 836);
  REQUIRE(mine.retrieval_blocks() == blocks);
  conformance::detail::rng r(seed + 2);
  executor::cpu_detail::cpu_scratch scratch;
  retrieval_workspace wr;
  for (int m : {1, 2, 3})
    for (std::size_t h = 0; h < H; ++h) {
      std::vector<float> q(G * d);
      for (auto& x : q) x = static_cast<float>(r.normal());
      std::vector<std::uint32_t> codes(G * L);
      for (std::size_t g = 0; g < G; ++g) mine.family().hash(q.data() + g * d, codes.data() + g * L);
      std::vector<std::vector<std::uint32_t>> got(G);
      for (std::size_t b = 0; b < mine.retrieval_blocks(); ++b) {
        std::vector<std::uint32_t> ids;
        std::vector<std::uint64_t> member;
        mine.retrieve_group(h, b, codes.data(), G, m, scratch, ids, member);
        REQUIRE(ids.size() == member.size());
        const auto [first, len] = mine.block_range(b);
        std::size_t bad = 0;
        for (std::size_t i = 0; i < ids.size(); ++i) {
          bad += ids[i] < first || ids[i] >= first + len || member[i] == 0 || (member[i] >> G) != 0;
          for (std::size_t g = 0; g < G; ++g)
            if (member[i] >> g & 1) got[g].push_back(ids[i]);
        }
        CHECK(bad == 0);
        // Each head's walk lists every token once (a wrapped counter would list it again).
        for (std::size_t g = 0; g < G; ++g) {
          std::vector<std::uint16_t> hits;
          mine.walk_block(h, b, codes.data() + g * L, m, scratch, hits);
          std::sort(hits.begin(), hits.end());
          CHECK(std::adjacent_find(hits.begin(), hits.end()) == hits.end());
        }
      }
      for (std::size_t g = 0; g < G; ++g) {
        ref.query(h, q.data() + g * d, m, wr);
        std::sort(got[g].begin(), got[g].end());
        INFO("m " << m << " head " << h << " group member " << g);
        CHECK(got[g] == wr.ids);  // ascending and each once: a repeat would show as a mismatch
      }
    }
}
}  // namespace

TEST_CASE("cpu_index GQA retrieval gives every query head lsh_index's ids, across blocks and the tail") {
  gqa_retrieval_case(lsh_params{6, 12, 2, 91}, 140000, 4, 41);
}

TEST_CASE("cpu_index GQA retrieval with more than 255 tables (16-bit counters)") {
  // L = 300: counts above 255 would wrap 8-bit counters, so these walks use
  // 16-bit ones. With K = 1 a token collides in each table with probability
  // 1 - angle / pi, so the tokens within ~0.15 pi of a query count past 255,
  // and a wrapped counter would list them a second time at 256 + m.
  gqa_retrieval_case(lsh_params{1, 300, 2, 92}, 70000, 3, 51);
}

TEST_CASE("cpu_index rebuilt in its own storage retrieves what a fresh lsh_index retrieves") {
  // The second and third builds fit in the first one's storage and are
  // written in place (shorter range, other keys); the fourth does not fit.
  const std::size_t d = 16, H = 2;
  const lsh_params lp{6, 12, 2, 78};
  cpu_index mine(d, H, lp);
  std::size_t seed = 60;
  for (std::size_t n : {3000u, 2600u, 2900u, 9000u}) {
    INFO("n " << n);
    const auto K = offset_keys<float>(H, n, d, ++seed);
    const cache_view<const float> kc(K.data(), H, n, d);
    lsh_index<> ref(d, H, lp);
    ref.build(kc, 4, n - 64);
    mine.build(cpu(3), kc, 4, n - 64);
    CHECK(mine.begin() == 4);
    CHECK(mine.end() == n - 64);
    CHECK(mine.memory_bytes() == H * ((d + 15) / 16 * 16) * sizeof(float) + H * (12 * (n - 68) + 12 * 64) * 2);
    same_retrieval(mine, ref, H, d, 2, seed + 100);
  }
}

TEST_CASE("cpu_index growth: append, tail scans and merges match lsh_index") {
  const std::size_t d = 12, H = 2, n = 9000;
  const lsh_params lp{5, 10, 2, 3};
  const auto K = offset_keys<float>(H, n, d, 9);
  const cache_view<const float> kc(K.data(), H, n, d);
  lsh_index<> ref(d, H, lp);
  cpu_index mine(d, H, lp);
  ref.build(kc, 4, 2000);
  mine.build(cpu(2), kc, 4, 2000);
  ref.set_merge_policy(300, 0.0);
  mine.set_merge_policy(300, 0.0);
  std::size_t merges = 0;
  for (std::size_t end = 2000; end < n;) {
    end = std::min(n, end + 97);
    const std::size_t before = mine.tail_size();
    mine.append(kc, end, cpu(2));
    ref.append(kc, end);
    merges += mine.tail_size() < before;
    CHECK(mine.end() == end);
    same_retrieval(mine, ref, H, d, 2, end);
  }
  CHECK(merges > 10);
  mine.merge_tail();
  CHECK(mine.tail_size() == 0);
  same_retrieval(mine, ref, H, d, 2, 1);
}

TEST_CASE("cpu_index memory: 2 B per token per table plus 16-bit directories") {
  const std::size_t d = 8, H = 1, n = 2 * cpu_index::block_tokens + 100;
  std::vector<float> K(n * d, 1.0f);
  for (std::size_t i = 0; i < K.size(); ++i) K[i] = static_cast<float>((i * 2654435761u) % 1000) / 500.0f - 1.0f;
  // L = 30 keeps the build short under the sanitizers; the layout is per table.
  cpu_index idx(d, H, lsh_params{10, 30, 2, 1});
  idx.build(cpu(2), cache_view<const float>(K.data(), H, n, d), 0, n);
  const std::size_t ids = 2 * 30 * n, dirs = 2 * 1024 * 30 * 3, means = 16 * 4;
  CHECK(idx.memory_bytes() == ids + dirs + means);
  // Per token at L = 150 over full blocks: 300 B of ids + 2^K * 2 * L / 65535 B of directory.
  const double per_token = static_cast<double>(2 * 150 * cpu_index::block_tokens + 2 * 1024 * 150) /
                           static_cast<double>(cpu_index::block_tokens);
  CHECK(per_token == doctest::Approx(304.688).epsilon(1e-5));
}

TEST_CASE("cpu_index rejects bad input and stays unchanged") {
  CHECK_THROWS_AS(cpu_index(8, 1, lsh_params{17, 4, 2, 1}), error);
  std::vector<float> K(2 * 50 * 8, 0.5f);
  cpu_index idx(8, 2, lsh_params{4, 4, 2, 1});
  idx.build(cpu(1), cache_view<const float>(K.data(), 2, 50, 8), 0, 40);
  const std::size_t bytes = idx.memory_bytes();
  K[(1 * 50 + 45) * 8 + 3] = std::nanf("");
  try {
    idx.append(cache_view<const float>(K.data(), 2, 50, 8), 50);
    FAIL_CHECK("no throw");
  } catch (const error& e) {
    CHECK(e.code() == errc::non_finite);
  }
  CHECK(idx.end() == 40);
  CHECK(idx.memory_bytes() == bytes);
  CHECK_THROWS_AS(idx.build(cache_view<const float>(K.data(), 1, 50, 8), 0, 10), error);
  CHECK(idx.end() == 40);
}

namespace {
// The lsh fast path on a cpu_index against the reference executor on an
// lsh_index over the same data. The sampled sets must agree exactly (the
// stats counters pin them). The outputs differ by the conformance suite's
// fp32 bound plus one more fp32 effect: the fast path computes the centred
// cosine, hence ln u, in fp32. Its dot products are off by at most gamma_d
// |q||x| (Higham 3.5), so the cosine by at most 2 gamma_d + 3 eps, and ln u
// by the largest slope |d ln u / d cos| over the sampled cosines times that,
// plus the table's certified 2^-21; a log-weight error e moves the output by
// at most 2 e Vmax.
template <class T>
void fast_path_case(std::size_t n, std::size_t d, std::size_t hk, std::size_t g, const lsh_params& lp,
                    std::size_t threads, std::uint64_t seed) {
  INFO(to_string(dtype_of<T>) << " n " << n << " d " << d << " group " << g << " threads " << threads);
  const std::size_t hq = hk * g;
  const auto K = offset_keys<T>(hk, n, d, seed), V = offset_keys<T>(hk, n, d, seed + 1);
  conformance::detail::rng r(seed + 2);
  std::vector<T> Q(hq * d);
  for (std::size_t h = 0; h < hq; ++h) {
    const std::size_t target = static_cast<std::size_t>(r.uniform() * static_cast<double>(n));
    for (std::size_t j = 0; j < d; ++j)
      Q[h * d + j] = from_float<T>(static_cast<float>(r.normal() + 0.7 * to_float(K[((h / g) * n + target) * d + j])));
  }
  const cache_view<const T> kc(K.data(), hk, n, d), vc(V.data(), hk, n, d);
  const decode_params dp{4, 64, 0.0f, lse_base::natural};
  lsh_index<> ref_idx(d, hk, lp);
  cpu_index idx(d, hk, lp);
  ref_idx.build(kc, 4, n - 64);
  idx.build(cpu(threads), kc, 4, n - 64);
  std::vector<float> O(hq * d, std::nanf("")), lse(hq, std::nanf("")), Oref(hq * d), lseref(hq);
  decode_stats st, stref;
  decode_request<T, T, T, cpu_index> req{matrix_view<const T>(Q.data(), hq, d), kc, vc, &idx,
                                         matrix_view<float>(O.data(), hq, d), lse, &st};
  decode_request<T, T, T> ref{matrix_view<const T>(Q.data(), hq, d), kc, vc, &ref_idx,
                              matrix_view<float>(Oref.data(), hq, d), lseref, &stref};
  decode(cpu(threads), estimator::lsh{}, dp, req);
  decode(reference, estimator::lsh{}, dp, ref);
  CHECK(st.sampled_keys == stref.sampled_keys);
  CHECK(st.union_keys == stref.union_keys);
  CHECK(st.dense_keys == stref.dense_keys);
  CHECK(st.sampled_range == stref.sampled_range);
  CHECK(st.sampled_keys > 0);
  const double scale = dp.effective_scale(d), eps = 0x1p-24;
  const double gamma = static_cast<double>(d) * eps / (1.0 - static_cast<double>(d) * eps);
  std::size_t bad = 0;
  retrieval_workspace ws;
  for (std::size_t h = 0; h < hq; ++h) {
    const std::size_t kh = h / g;
    std::vector<float> q(d);
    for (std::size_t j = 0; j < d; ++j) q[j] = to_float(Q[h * d + j]);
    ref_idx.query(kh, q.data(), lp.m, ws);
    double lambda = 0.0, slope = 0.0, qn = 0.0;
    for (float x : q) qn += static_cast<double>(x) * x;
    const auto lnu = [&](double c) {
      return std::log(std::max(collision::inclusion_probability_at(c, lp.K, lp.L, lp.m), 1e-300));
    };
    for (std::uint32_t id : ws.ids) {
      double dot = 0.0, kn = 0.0;
      for (std::size_t j = 0; j < d; ++j) {
        const double x = static_cast<double>(to_float(K[(kh * n + id) * d + j]) - ref_idx.mean(kh)[j]);
        dot += q[j] * x;
        kn += x * x;
      }
      const double c = collision::cosine(dot, std::sqrt(qn), std::sqrt(kn));
      lambda = std::max(lambda, std::fabs(lnu(c)));
      for (double dc : {-1e-3, 1e-3})
        if (std::fabs(c + dc) < 1.0) slope = std::max(slope, std::fabs(lnu(c + dc) - lnu(c)) / 1e-3 * 1.5);
    }
    const auto b = conformance::detail::rounding_bound(q.data(), kc.head(kh), vc.head(kh), scale, lambda, lseref[h]);
    double vmax = 0.0;
    for (std::size_t i = 0; i < n * d; ++i) vmax = std::max(vmax, std::fabs(static_cast<double>(to_float(V[kh * n * d + i]))));
    const double e_lnu = slope * (2.0 * gamma + 3.0 * eps) + 0x1p-21;
    const double tol = b.out + 2.0 * e_lnu * vmax;
    for (std::size_t j = 0; j < d; ++j) bad += !(std::fabs(O[h * d + j] - Oref[h * d + j]) <= tol);
    bad += !(std::fabs(lse[h] - lseref[h]) <= b.lse + e_lnu);
  }
  CHECK(bad == 0);
}
}  // namespace

TEST_CASE("lsh fast path on cpu_index matches the reference executor") {
  fast_path_case<float>(3000, 64, 2, 4, lsh_params{6, 24, 2, 5}, 3, 21);
  fast_path_case<bf16>(5000, 128, 2, 4, lsh_params{7, 30, 2, 6}, 2, 22);
  fast_path_case<fp16>(2500, 96, 1, 3, lsh_params{6, 20, 1, 7}, 1, 23);
  fast_path_case<bf16>(70000, 16, 1, 2, lsh_params{8, 20, 2, 8}, 3, 24);  // two blocks
  fast_path_case<bf16>(3000, 32, 2, 4, lsh_params{4, 300, 3, 9}, 3, 25);  // L > 255: 16-bit counters
}

TEST_CASE("cpu decode results do not depend on the thread count") {
  const std::size_t d = 32, hk = 2, g = 4, n = 12000, hq = hk * g;
  const auto K = offset_keys<bf16>(hk, n, d, 31), V = offset_keys<bf16>(hk, n, d, 32);
  const auto Q = offset_keys<float>(1, hq, d, 33);
  const cache_view<const bf16> kc(K.data(), hk, n, d), vc(V.data(), hk, n, d);
  cpu_index idx(d, hk, lsh_params{6, 20, 2, 9});
  idx.build(cpu(2), kc, 4, n - 64);
  std::vector<std::vector<float>> outs;
  for (std::size_t t : {1u, 2u, 5u}) {
    std::vector<float> O(hq * d, std::nanf(""));
    decode_request<float, bf16, bf16, cpu_index> r{matrix_view<const float>(Q.data(), hq, d), kc, vc, &idx,
                                                    matrix_view<float>(O.data(), hq, d)};
    decode(cpu(t), estimator::lsh{}, decode_params{}, r);
    outs.push_back(O);
    std::fill(O.begin(), O.end(), std::nanf(""));
    decode(cpu(t), estimator::exact{}, decode_params{}, r);
    outs.push_back(O);
  }
  for (std::size_t i = 2; i < outs.size(); ++i) CHECK(outs[i] == outs[i % 2]);
}
