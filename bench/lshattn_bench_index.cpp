// Building and growing one KV head's index (anchor workload keys in bf16,
// head_dim 128, K=10, L=150 unless named).
//   index/build/n:N       build() over [0, n): mean, centring, hash_batch, counting sort
//   index/sort/n:N        merge_tail() of a tail that holds half the tokens: re-sorting all n
//                         tokens into fresh CSR tables from stored codes (the counting sort
//                         without any hashing), O(n L + L 2^K)
//   index/append/n:N/batch:B  decode-time growth: 2048 tokens appended, B per call, to an index
//                         over n tokens, with the default merge policy (the merges included)
// items = tokens indexed (build, sort) or appended (append).
// Bytes: keys read (bf16) plus table entries written (4 B per token per table);
// for sort, codes read and entries written.
#include "support.hpp"

namespace {

using namespace lshattn_bench;
constexpr std::size_t dim = 128;

lshattn::lsh_params params(const benchmark::State& state, int first) {
  lshattn::lsh_params p;
  p.K = static_cast<int>(state.range(first));
  p.L = static_cast<int>(state.range(first + 1));
  return p;
}

void index_build(benchmark::State& state) {
  const auto n = static_cast<std::size_t>(state.range(0));
  const layer& w = anchor_layer(n, 1);
  lshattn::lsh_index<> index(dim, 1, params(state, 1));
  for (auto _ : state) {
    index.build(w.key_view(), 0, n);
    benchmark::ClobberMemory();
  }
  const auto it = static_cast<std::int64_t>(state.iterations());
  const auto L = static_cast<std::size_t>(index.family().tables());
  state.SetItemsProcessed(it * static_cast<std::int64_t>(n));
  state.SetBytesProcessed(it * static_cast<std::int64_t>(n * dim * sizeof(bf16) + n * L * 4));
  state.counters["index_B_per_token"] = static_cast<double>(index.memory_bytes()) / static_cast<double>(n);
}

void index_sort(benchmark::State& state) {
  const auto n = static_cast<std::size_t>(state.range(0));
  const layer& w = anchor_layer(n, 1);
  lshattn::lsh_index<> prepared(dim, 1, params(state, 1));
  prepared.set_merge_policy(n, 1.0);  // keep the appended half as an unmerged tail
  prepared.build(w.key_view(), 0, n / 2);
  prepared.append(w.key_view(), n);
  lshattn::lsh_index<> index;
  for (auto _ : state) {
    state.PauseTiming();
    index = prepared;
    state.ResumeTiming();
    index.merge_tail();
    benchmark::ClobberMemory();
  }
  const auto it = static_cast<std::int64_t>(state.iterations());
  const auto L = static_cast<std::size_t>(index.family().tables());
  state.SetItemsProcessed(it * static_cast<std::int64_t>(n));
  state.SetBytesProcessed(it * static_cast<std::int64_t>(2 * n * L * 4));
}

void index_append(benchmark::State& state) {
  const auto n = static_cast<std::size_t>(state.range(0)), batch = static_cast<std::size_t>(state.range(1));
  // One iteration appends `room` tokens to a fresh copy of an index over n
  // tokens, so every iteration includes the same merges (one per
  // max(256, n/64) tokens under the default policy): the amortised cost.
  constexpr std::size_t room = 2048;
  const layer& w = anchor_layer(n + room, 1);
  lshattn::lsh_index<> prepared(dim, 1, params(state, 2));
  prepared.build(w.key_view(), 0, n);
  lshattn::lsh_index<> index;
  std::size_t merges = 0;
  for (auto _ : state) {
    state.PauseTiming();
    index = prepared;
    state.ResumeTiming();
    for (std::size_t end = n; end < n + room;) {
      end = std::min(end + batch, n + room);
      const std::size_t tail = index.tail_size();
      index.append(w.key_view(), end);
      merges += index.tail_size() < tail ? 1 : 0;
    }
    benchmark::ClobberMemory();
  }
  const auto it = static_cast<std::int64_t>(state.iterations());
  const auto L = static_cast<std::size_t>(index.family().tables());
  state.SetItemsProcessed(it * static_cast<std::int64_t>(room));
  state.SetBytesProcessed(it * static_cast<std::int64_t>(room * (dim * sizeof(bf16) + L * 4)));
  state.counters["merges"] = static_cast<double>(merges) / static_cast<double>(it);
}

const bool registered = [] {
  add("index/build", index_build, {{4096, 10, 150}, {16384, 10, 150}, {32768, 10, 150}}, {"n", "K", "L"})
      ->Unit(benchmark::kMillisecond);
  add("index/sort", index_sort, {{4096, 10, 150}, {16384, 10, 150}, {32768, 10, 150}}, {"n", "K", "L"})
      ->Unit(benchmark::kMillisecond);
  add("index/append", index_append, {{32768, 1, 10, 150}, {32768, 64, 10, 150}}, {"n", "batch", "K", "L"})
      ->Unit(benchmark::kMillisecond);
  return true;
}();

}  // namespace

BENCHMARK_MAIN();
