#include "lshattn/executor/reference.hpp"

#include <doctest/doctest.h>

#include <lshattn/lshattn.hpp>
#include <vector>

TEST_CASE("reference decode: m=1 with every key colliding equals exact") {
  using namespace lshattn;
  const std::size_t H = 2, N = 600, D = 16, G = 2;
  std::vector<float> K(H * N * D), V(H * N * D), Q(H * G * D), O(H * G * D), lse(H * G);
  random::philox_engine rng(7);
  for (auto* v : {&K, &V, &Q})
    for (auto& x : *v) x = static_cast<float>(rng.uniform() * 2 - 1);
  cache_view<const float> kc(K.data(), H, N, D), vc(V.data(), H, N, D);
  lsh_index<> idx(D, H, lsh_params{1, 64, 1, 3});
  idx.build(kc, 4, N - 64);
  decode_request<float, float> r{matrix_view<const float>(Q.data(), H * G, D), kc, vc, &idx,
                                 matrix_view<float>(O.data(), H * G, D), lse};
  decode(reference, estimator::exact{}, decode_params{}, r);
  const auto exact = O;
  decode(reference, estimator::lsh{}, decode_params{}, r);
  // K=1, L=64, m=1: u >= 1 - 2^-64 for every key, i.e. 1 in float64.
  for (std::size_t i = 0; i < O.size(); ++i) CHECK(O[i] == doctest::Approx(exact[i]).epsilon(1e-6));
}

TEST_CASE("reference decode: an m above a later request's L fails before any output is written") {
  using namespace lshattn;
  const std::size_t H = 1, N = 200, D = 8;
  std::vector<float> K(H * N * D), V(H * N * D), Q(D), O1(D, -1.0f), O2(D, -1.0f);
  random::philox_engine rng(11);
  for (auto* v : {&K, &V, &Q})
    for (auto& x : *v) x = static_cast<float>(rng.uniform() * 2 - 1);
  cache_view<const float> kc(K.data(), H, N, D), vc(V.data(), H, N, D);
  lsh_index<> wide(D, H, lsh_params{4, 8, 2, 5}), narrow(D, H, lsh_params{4, 1, 1, 5});
  wide.build(kc, 4, N - 64);
  narrow.build(kc, 4, N - 64);
  using request = decode_request<float, float>;
  const request batch[2] = {
      {matrix_view<const float>(Q.data(), 1, D), kc, vc, &wide, matrix_view<float>(O1.data(), 1, D)},
      {matrix_view<const float>(Q.data(), 1, D), kc, vc, &narrow, matrix_view<float>(O2.data(), 1, D)}};
  try {
    decode(reference, estimator::lsh{2}, decode_params{}, std::span<const request>(batch, 2));
    FAIL("expected lshattn::error");
  } catch (const lshattn::error& e) {
    CHECK(e.code() == errc::invalid_argument);
    CHECK(e.argument() == "m");
  }
  for (float x : O1) CHECK(x == -1.0f);
  for (float x : O2) CHECK(x == -1.0f);
}
