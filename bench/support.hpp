#pragma once
// Shared set-up for the lshattn_bench_* programs: seeded workloads in the
// layout engines use (bf16 K/V, float queries), generated once per shape and
// kept for the whole program, and the byte counts each benchmark reports.
//
// Naming: every benchmark is registered as <area>/<what>/<variant> with named
// arguments (n:32768/K:10/L:150...), so --benchmark_filter can select by area
// ('^decode/'), estimator ('/lsh/'), or size ('n:32768').

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <tuple>
#include <vector>

#include <benchmark/benchmark.h>

#include <lshattn/lshattn.hpp>

namespace lshattn_bench {

using lshattn::bf16;

/// One layer of the method.md anchor workload (the one the reference system
/// was timed on): keys, values [kv_heads, tokens, dim] in bf16, queries in float.
struct layer {
  std::size_t tokens = 0, dim = 0, q_heads = 0, kv_heads = 0;
  std::vector<bf16> keys, values;
  std::vector<float> queries;

  [[nodiscard]] lshattn::cache_view<const bf16> key_view() const {
    return {keys.data(), kv_heads, tokens, dim};
  }
  [[nodiscard]] lshattn::cache_view<const bf16> value_view() const {
    return {values.data(), kv_heads, tokens, dim};
  }
  [[nodiscard]] lshattn::matrix_view<const float> query_view() const { return {queries.data(), q_heads, dim}; }
};

inline std::vector<bf16> to_bf16(const std::vector<float>& x) {
  std::vector<bf16> y(x.size());
  for (std::size_t i = 0; i < x.size(); ++i) y[i] = bf16(x[i]);
  return y;
}

/// The anchor workload of this shape (GQA 4:1), generated on first use.
inline const layer& anchor_layer(std::size_t tokens, std::size_t kv_heads, std::size_t dim = 128) {
  static std::map<std::tuple<std::size_t, std::size_t, std::size_t>, std::unique_ptr<layer>> cache;
  auto& slot = cache[{tokens, kv_heads, dim}];
  if (!slot) {
    const auto w = lshattn::workload::anchor({tokens, 4 * kv_heads, kv_heads, dim, 2026});
    slot = std::make_unique<layer>(layer{tokens, dim, w.q_heads, kv_heads, to_bf16(w.keys), to_bf16(w.values),
                                         w.queries});
  }
  return *slot;
}

/// An index over [sink, tokens - window) of an anchor layer, built on first use.
inline const lshattn::lsh_index<>& anchor_index(std::size_t tokens, std::size_t kv_heads, int K, int L, int m,
                                                std::size_t sink = 4, std::size_t window = 64) {
  static std::map<std::tuple<std::size_t, std::size_t, int, int, int>, std::unique_ptr<lshattn::lsh_index<>>> cache;
  auto& slot = cache[{tokens, kv_heads, K, L, m}];
  if (!slot) {
    const layer& w = anchor_layer(tokens, kv_heads);
    lshattn::lsh_params p;
    p.K = K, p.L = L, p.m = m;
    slot = std::make_unique<lshattn::lsh_index<>>(w.dim, kv_heads, p);
    slot->build(w.key_view(), sink, tokens - window);
  }
  return *slot;
}

/// Index entries (token ids) a query of head `head` reads: the sizes of the L
/// buckets it falls in plus the unmerged tail, which it scans whole.
inline std::size_t entries_scanned(const lshattn::lsh_index<>& index, std::size_t head, const float* q) {
  const int L = index.family().tables();
  std::vector<std::uint32_t> codes(static_cast<std::size_t>(L));
  index.family().hash(q, codes.data());
  std::size_t total = index.tail_size() * static_cast<std::size_t>(L);
  for (int l = 0; l < L; ++l) total += index.bucket(head, l, codes[static_cast<std::size_t>(l)]).size();
  return total;
}

/// Registers fn under `name` with the given argument rows and names.
template <class Fn>
benchmark::internal::Benchmark* add(const char* name, Fn fn, const std::vector<std::vector<std::int64_t>>& rows,
                                    const std::vector<std::string>& names) {
  auto* b = benchmark::RegisterBenchmark(name, fn);
  for (const auto& r : rows) b->Args(r);
  b->ArgNames(names);
  return b;
}

}  // namespace lshattn_bench
