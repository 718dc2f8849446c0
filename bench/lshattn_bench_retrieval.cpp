// Retrieval from one KV head's index over the anchor workload (n tokens,
// head_dim 128), cycling through the 4 query heads of its GQA group.
//   retrieval/query/n:N/K:K/L:L/m:M    lsh_index::query(): hash the query (hash(),
//                                      exact signs) and collect keys met in >= m tables
//   retrieval/collect/n:N/K:K/L:L/m:M  lsh_index::collect() from precomputed codes: the
//                                      table walk and collision counting alone
// items = queries. Bytes: index entries read (4 B token ids of the L buckets
// the query falls in); query() also reads the K*L*128 float hyperplanes,
// counted there. Counters: keys returned and entries scanned per query.
#include "support.hpp"

namespace {

using namespace lshattn_bench;

template <bool Hash>
void retrieval(benchmark::State& state) {
  const auto n = static_cast<std::size_t>(state.range(0));
  const int K = static_cast<int>(state.range(1)), L = static_cast<int>(state.range(2)),
            m = static_cast<int>(state.range(3));
  const layer& w = anchor_layer(n, 1);
  const auto& index = anchor_index(n, 1, K, L, m);
  const std::size_t g = w.q_heads;
  std::vector<std::vector<std::uint32_t>> codes(g, std::vector<std::uint32_t>(static_cast<std::size_t>(L)));
  std::size_t scanned = 0, returned = 0;
  lshattn::retrieval_workspace ws;
  for (std::size_t h = 0; h < g; ++h) {
    index.family().hash(w.queries.data() + h * w.dim, codes[h].data());
    scanned += entries_scanned(index, 0, w.queries.data() + h * w.dim);
    index.query(0, w.queries.data() + h * w.dim, m, ws);
    returned += ws.ids.size();
  }
  std::size_t i = 0;
  for (auto _ : state) {
    const std::size_t h = i++ % g;
    if constexpr (Hash)
      index.query(0, w.queries.data() + h * w.dim, m, ws);
    else
      index.collect(0, codes[h].data(), m, ws);
    benchmark::DoNotOptimize(ws.ids.data());
    benchmark::ClobberMemory();
  }
  const auto it = static_cast<std::int64_t>(state.iterations());
  const double per_query = static_cast<double>(scanned) / static_cast<double>(g) * 4.0 +
                           (Hash ? static_cast<double>(index.family().memory_bytes()) : 0.0);
  state.SetItemsProcessed(it);
  state.SetBytesProcessed(static_cast<std::int64_t>(static_cast<double>(it) * per_query));
  state.counters["keys_returned"] = static_cast<double>(returned) / static_cast<double>(g);
  state.counters["returned_pct"] = 100.0 * static_cast<double>(returned) / static_cast<double>(g * index.size());
  state.counters["entries_scanned"] = static_cast<double>(scanned) / static_cast<double>(g);
}

const std::vector<std::vector<std::int64_t>> configs = {
    {4096, 10, 150, 2}, {16384, 10, 150, 2}, {32768, 10, 150, 2},  // the paper's default over n
    {32768, 10, 150, 1}, {32768, 10, 150, 3},                       // threshold m
    {32768, 10, 170, 2}, {32768, 11, 300, 2}, {32768, 8, 75, 2},    // other K, L
};

const bool registered = [] {
  add("retrieval/query", retrieval<true>, configs, {"n", "K", "L", "m"})->Unit(benchmark::kMicrosecond);
  add("retrieval/collect", retrieval<false>, configs, {"n", "K", "L", "m"})->Unit(benchmark::kMicrosecond);
  return true;
}();

}  // namespace

BENCHMARK_MAIN();
