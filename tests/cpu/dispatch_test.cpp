#include "lshattn/executor/cpu/isa.hpp"

#include <doctest/doctest.h>

#include <cstring>
#include <lshattn/executor/cpu.hpp>
#include <vector>

using lshattn::cpu_isa;

namespace {
constexpr cpu_isa all_isas[] = {cpu_isa::sse2, cpu_isa::avx2, cpu_isa::avx512};
}

TEST_CASE("dispatch: the best ISA is the widest available one, and is reported") {
  CHECK(lshattn::cpu_isa_available(cpu_isa::automatic));
  CHECK(lshattn::cpu_isa_available(cpu_isa::sse2));  // every x86-64
  const cpu_isa best = lshattn::cpu_best_isa();
  CHECK(best != cpu_isa::automatic);
  CHECK(lshattn::cpu_isa_available(best));
  CHECK(std::strcmp(lshattn::cpu_isa_name(), lshattn::to_string(best)) == 0);
  if (std::getenv("LSHATTN_CPU_ISA") == nullptr)
    for (cpu_isa i : all_isas)
      if (lshattn::cpu_isa_available(i)) CHECK(i <= best);
  // An AVX-512 machine has AVX2 too: availability is monotone.
  if (lshattn::cpu_isa_available(cpu_isa::avx512)) CHECK(lshattn::cpu_isa_available(cpu_isa::avx2));
}

TEST_CASE("dispatch: each table is the one asked for, of the right width") {
  const std::size_t width[] = {4, 8, 16};
  for (std::size_t i = 0; i < 3; ++i) {
    const cpu_isa isa = all_isas[i];
    INFO(lshattn::to_string(isa));
    if (!lshattn::cpu_isa_available(isa)) {
      // Asking for kernels this processor cannot run is an error, never an illegal instruction.
      try {
        (void)lshattn::executor::cpu_detail::kernels_for(isa);
        FAIL_CHECK("kernels_for did not throw");
      } catch (const lshattn::error& e) {
        CHECK(e.code() == lshattn::errc::unsupported);
        CHECK(e.argument() == "isa");
      }
      continue;
    }
    const auto& k = lshattn::executor::cpu_detail::kernels_for(isa);
    CHECK(k.isa == isa);
    CHECK(std::strcmp(k.name, lshattn::to_string(isa)) == 0);
    CHECK(k.width == width[i]);
    for (auto& row : k.attend)
      for (auto f : row) CHECK((f != nullptr));
    CHECK((k.gemm_sign != nullptr));
  }
  CHECK(&lshattn::executor::cpu_detail::kernels_for(cpu_isa::automatic) ==
        &lshattn::executor::cpu_detail::kernels_for(lshattn::cpu_best_isa()));
}

TEST_CASE("dispatch: a decode forced onto an unavailable ISA throws before writing anything") {
  cpu_isa missing = cpu_isa::automatic;
  for (cpu_isa i : all_isas)
    if (!lshattn::cpu_isa_available(i)) missing = i;
  if (missing == cpu_isa::automatic) return;  // this machine runs every ISA: nothing to force
  using namespace lshattn;
  const std::size_t d = 8, n = 20;
  std::vector<float> K(n * d, 1.0f), V(n * d, 1.0f), Q(2 * d, 0.5f), O(2 * d, std::nanf("")), lse(2, std::nanf(""));
  decode_request<float, float> r{matrix_view<const float>(Q.data(), 2, d), cache_view<const float>(K.data(), 1, n, d),
                                 cache_view<const float>(V.data(), 1, n, d), nullptr,
                                 matrix_view<float>(O.data(), 2, d), lse};
  bool threw = false;
  try {
    decode(cpu(2, missing), estimator::exact{}, decode_params{}, r);
  } catch (const error& e) {
    threw = true;
    CHECK(e.code() == errc::unsupported);
  }
  CHECK(threw);
  for (float x : O) CHECK(std::isnan(x));
}

TEST_CASE("policy: threads and ISA are run-time values") {
  constexpr auto p = lshattn::cpu(5, cpu_isa::sse2);
  static_assert(p.threads == 5 && p.isa == cpu_isa::sse2);
  CHECK(lshattn::cpu().thread_count() >= 1);
  CHECK(p.with_isa(cpu_isa::avx2).isa == cpu_isa::avx2);
  // The pool runs every task exactly once whatever the thread count.
  for (std::size_t threads : {1u, 2u, 7u}) {
    std::vector<int> hits(100, 0);
    std::vector<std::size_t> worker(100, 0);
    lshattn::cpu(threads).parallel_for(hits.size(), [&](std::size_t t, std::size_t w) {
      worker[t] = w;
      ++hits[t];
    });
    for (std::size_t t = 0; t < hits.size(); ++t) {
      CHECK(hits[t] == 1);
      CHECK(worker[t] < threads);
    }
  }
}
