// SimHash codes: one vector at a time (hash(): K*L exact-sign dot products,
// the path of a decode-time query) and in batches (hash_batch(): one fp32
// GEMM with certified bits, the path of index build and append).
//   hash/simhash/one/d:128/K:10/L:150        items = vectors hashed
//   hash/simhash/batch/n:4096/d:128/K:10/L:150
// Bytes: the vectors read, the hyperplanes read (once per vector for hash(),
// once per batch for hash_batch()) and the codes written.
#include "support.hpp"

namespace {

using namespace lshattn_bench;

std::vector<float> random_vectors(std::size_t n, std::size_t d, std::uint64_t stream) {
  std::vector<float> x(n * d);
  lshattn::random::fill_normal(x.data(), x.size(), 99, stream);
  return x;
}

void hash_one(benchmark::State& state) {
  const auto d = static_cast<std::size_t>(state.range(0));
  const int K = static_cast<int>(state.range(1)), L = static_cast<int>(state.range(2));
  const lshattn::hash::simhash<> family(d, K, L, 1);
  constexpr std::size_t pool = 64;  // cycle through a few vectors so the branch predictor cannot learn one
  const auto x = random_vectors(pool, d, 1);
  std::vector<std::uint32_t> codes(static_cast<std::size_t>(L));
  std::size_t i = 0;
  for (auto _ : state) {
    family.hash(x.data() + (i++ % pool) * d, codes.data());
    benchmark::DoNotOptimize(codes.data());
    benchmark::ClobberMemory();
  }
  const auto it = static_cast<std::int64_t>(state.iterations());
  state.SetItemsProcessed(it);
  state.SetBytesProcessed(it * static_cast<std::int64_t>(d * 4 + family.memory_bytes() + codes.size() * 4));
}

void hash_batch(benchmark::State& state) {
  const auto n = static_cast<std::size_t>(state.range(0)), d = static_cast<std::size_t>(state.range(1));
  const int K = static_cast<int>(state.range(2)), L = static_cast<int>(state.range(3));
  const lshattn::hash::simhash<> family(d, K, L, 1);
  const auto x = random_vectors(n, d, 2);
  std::vector<std::uint32_t> codes(n * static_cast<std::size_t>(L));
  family.hash_batch(x.data(), n, d, codes.data());  // first call caches the hyperplane norms
  for (auto _ : state) {
    family.hash_batch(x.data(), n, d, codes.data());
    benchmark::DoNotOptimize(codes.data());
    benchmark::ClobberMemory();
  }
  const auto it = static_cast<std::int64_t>(state.iterations());
  state.SetItemsProcessed(it * static_cast<std::int64_t>(n));
  state.SetBytesProcessed(it * static_cast<std::int64_t>(n * d * 4 + family.memory_bytes() + codes.size() * 4));
}

const bool registered = [] {
  add("hash/simhash/one", hash_one, {{128, 10, 150}, {128, 11, 300}}, {"d", "K", "L"});
  add("hash/simhash/batch", hash_batch, {{4096, 128, 10, 150}, {4096, 128, 11, 300}}, {"n", "d", "K", "L"})
      ->Unit(benchmark::kMillisecond);
  return true;
}();

}  // namespace

BENCHMARK_MAIN();
