// The decode step on the reference executor (scalar C++, float64
// accumulation), anchor workload, bf16 K/V, head_dim 128, GQA 4:1, sink 4,
// window 64, K=10, L=150, m=2.
//   sample/lsh/n:N                  estimator::lsh::sample() for one KV head group: retrieval
//                                   for its 4 query heads, the union, and u per sampled key
//   decode/reference/lsh/n:N/kv:H   a whole step: sample, dense part, sampled attention, merge
//   decode/reference/exact/n:N/kv:H the same step attending every key (the dense baseline)
// kv:1 is one GQA group (4 query heads); kv:8 is a Llama-3.1-8B layer (32 query heads).
// items = query heads decoded (sample: KV head groups).
// Bytes, what the step must touch: K and V rows (bf16) of the dense part and
// of each KV head's sample (the union over its query heads, read once), plus
// the index entries its queries scan (4 B each); the sampler alone reads the
// sampled K rows (for u) and the index entries. Counters: keys sampled per
// query head, their share of the cache, and distinct keys per KV head.
#include <cmath>

#include "support.hpp"

namespace {

using namespace lshattn_bench;
constexpr int K = 10, L = 150, M = 2;

lshattn::decode_params step_params() { return {}; }  // sink 4, window 64, natural-log LSE

struct scan_cost {
  std::size_t entries = 0;  // index entries scanned, all query heads
};

scan_cost scan(const layer& w, const lshattn::lsh_index<>& index) {
  scan_cost c;
  const std::size_t g = w.q_heads / w.kv_heads;
  for (std::size_t h = 0; h < w.q_heads; ++h) c.entries += entries_scanned(index, h / g, w.queries.data() + h * w.dim);
  return c;
}

void sample_lsh(benchmark::State& state) {
  const auto n = static_cast<std::size_t>(state.range(0));
  const layer& w = anchor_layer(n, 1);
  const auto& index = anchor_index(n, 1, K, L, M);
  const auto p = step_params();
  const lshattn::estimator::lsh est{};
  lshattn::retrieval_workspace ws;
  lshattn::estimator::sample_set set;
  const lshattn::estimator::sample_context<bf16> ctx{
      w.key_view().head(0), index.begin(), index.end(), w.query_view(), p.effective_scale(w.dim), &index, 0, 0, &ws};
  est.sample(ctx, set);
  std::size_t sampled = 0;
  for (std::size_t h = 0; h < w.q_heads; ++h)
    for (std::size_t j = 0; j < set.ids.size(); ++j) sampled += std::isfinite(set.log_pi_of(h, j)) ? 1 : 0;
  for (auto _ : state) {
    est.sample(ctx, set);
    benchmark::DoNotOptimize(set.log_pi.data());
    benchmark::ClobberMemory();
  }
  const auto it = static_cast<std::int64_t>(state.iterations());
  const std::size_t bytes = set.ids.size() * w.dim * sizeof(bf16) + scan(w, index).entries * 4;
  state.SetItemsProcessed(it);
  state.SetBytesProcessed(it * static_cast<std::int64_t>(bytes));
  state.counters["keys_sampled"] = static_cast<double>(sampled) / static_cast<double>(w.q_heads);
  state.counters["sampled_pct"] = 100.0 * static_cast<double>(sampled) / static_cast<double>(w.q_heads * n);
  state.counters["union_keys"] = static_cast<double>(set.ids.size());
}

template <class Est>
void decode_step(benchmark::State& state) {
  const auto n = static_cast<std::size_t>(state.range(0)), kv = static_cast<std::size_t>(state.range(1));
  const layer& w = anchor_layer(n, kv);
  const auto& index = anchor_index(n, kv, K, L, M);
  const auto p = step_params();
  std::vector<float> out(w.q_heads * w.dim, std::nanf("")), lse(w.q_heads, std::nanf(""));
  lshattn::decode_stats stats;
  lshattn::decode_request<float, bf16> req{w.query_view(), w.key_view(), w.value_view(), &index,
                                           lshattn::matrix_view<float>(out.data(), w.q_heads, w.dim), lse, &stats};
  lshattn::decode(lshattn::reference, Est{}, p, req);  // one untimed step fills the counters
  const lshattn::decode_stats once = stats;
  req.stats = nullptr;
  for (auto _ : state) {
    lshattn::decode(lshattn::reference, Est{}, p, req);
    benchmark::DoNotOptimize(out.data());
    benchmark::ClobberMemory();
  }
  const auto it = static_cast<std::int64_t>(state.iterations());
  const std::size_t row = 2 * w.dim * sizeof(bf16);  // one K row and one V row
  const std::size_t dense_rows = once.dense_keys / (w.q_heads / kv);  // read once per KV head
  std::size_t bytes = (dense_rows + once.union_keys) * row;
  if constexpr (Est::uses_index) bytes += scan(w, index).entries * 4;
  state.SetItemsProcessed(it * static_cast<std::int64_t>(w.q_heads));
  state.SetBytesProcessed(it * static_cast<std::int64_t>(bytes));
  state.counters["keys_sampled"] = static_cast<double>(once.sampled_keys) / static_cast<double>(w.q_heads);
  state.counters["sampled_pct"] = 100.0 * static_cast<double>(once.sampled_keys) / static_cast<double>(w.q_heads * n);
  state.counters["union_keys"] = static_cast<double>(once.union_keys) / static_cast<double>(kv);
}

const bool registered = [] {
  add("sample/lsh", sample_lsh, {{4096}, {16384}, {32768}}, {"n"})->Unit(benchmark::kMicrosecond);
  const std::vector<std::vector<std::int64_t>> sizes = {{4096, 1}, {16384, 1}, {32768, 1}, {32768, 8}};
  add("decode/reference/lsh", decode_step<lshattn::estimator::lsh>, sizes, {"n", "kv"})
      ->Unit(benchmark::kMillisecond);
  add("decode/reference/exact", decode_step<lshattn::estimator::exact>, sizes, {"n", "kv"})
      ->Unit(benchmark::kMillisecond);
  return true;
}();

}  // namespace

BENCHMARK_MAIN();
