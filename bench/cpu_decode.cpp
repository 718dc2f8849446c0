// The CPU executor's benchmark: one Llama-3.1-8B-shaped layer (32 query
// heads, 8 KV heads, head_dim 128, bf16 K/V/queries, K=10 L=150 m=2) on the
// method.md anchor workload (lshattn::workload::anchor), contexts 16K..128K,
// batch 1 and 8. In one run, side by side:
//   decode/lsh     a whole decode step, lsh estimator on a cpu_index
//   decode/dense   the exact dense baseline: the same executor and kernels
//                  (SIMD, threads) with estimator::exact on the same data
//   retrieval      query hashing + GQA retrieval alone
//   attention      the sampled gather-attention alone (precomputed unions)
//   hash / eigen_gemm / tables   index build: the hashing GEMM, Eigen's fp32
//                  GEMM on the same shape, table building from the codes
//   roofline/stream, roofline/gather   a streaming read and a random 256-byte
//                  row gather with all threads: the machine's bandwidths
// Counters: bytes (touched per iteration), GB/s, keys_sampled (per query
// head), union_rows (rows read per KV head), thp_MB (memory the kernel backs
// with transparent huge pages, see thp_mb()). bench/cpu_report.py turns the
// JSON into the Markdown table of docs/performance.md.
// LSHATTN_BENCH_THREADS sets the thread count (default: all hardware
// threads), LSHATTN_BENCH_MAX_CONTEXT caps the contexts (default 131072),
// LSHATTN_BENCH_BUILD_CONTEXT sets the index-build benchmarks' context
// (default: the largest context run), LSHATTN_BENCH_POOL the number of batches
// the decode benchmarks rotate through (default 1; see pool()).
// The KV caches and the roofline buffer are allocated 2 MiB aligned and
// advised into transparent huge pages (madvise), as a serving system's KV
// cache would be: a sampled step reads a few rows per 4 KiB page, so with
// small pages nearly every row is a TLB miss and the gather measures page
// walks (a 2x difference on a VM with THP in madvise mode). LSHATTN_BENCH_HUGEPAGES=0
// gives plain allocations (both the caches and the roofline buffer, so the
// roofline percentages compare like with like).

#include <benchmark/benchmark.h>

#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <lshattn/executor/cpu.hpp>
#include <lshattn/workload/synthetic.hpp>
#include <memory>
#include <random>
#include <thread>
#include <vector>

namespace lshattn_bench {
void eigen_gemm_avx2(const float* X, std::size_t n, std::size_t ldx, const float* W, std::size_t P, std::size_t d,
                     float* C);
void eigen_gemm_avx512(const float* X, std::size_t n, std::size_t ldx, const float* W, std::size_t P, std::size_t d,
                       float* C);
}  // namespace lshattn_bench

namespace {
using namespace lshattn;
constexpr std::size_t HQ = 32, HK = 8, D = 128, G = HQ / HK;
const lsh_params LP{10, 150, 2, 0x4c534841'7474656eull};
const decode_params DP{4, 64, 0.0f, lse_base::natural};

std::size_t env_size(const char* name, std::size_t fallback) {
  const char* v = std::getenv(name);
  return v ? static_cast<std::size_t>(std::strtoull(v, nullptr, 10)) : fallback;
}
bool huge_pages() {
  static const bool on = env_size("LSHATTN_BENCH_HUGEPAGES", 1) != 0;
  return on;
}
/// Plain allocation, or 2 MiB aligned and madvise(MADV_HUGEPAGE)d (see the top).
template <class T>
struct bench_allocator {
  using value_type = T;
  bench_allocator() = default;
  template <class U>
  bench_allocator(const bench_allocator<U>&) noexcept {}
  T* allocate(std::size_t n) {
    if (!huge_pages()) return std::allocator<T>().allocate(n);
    return executor::cpu_detail::table_allocator<T>().allocate(n);
  }
  void deallocate(T* p, std::size_t n) noexcept {
    if (!huge_pages()) std::allocator<T>().deallocate(p, n);
    else executor::cpu_detail::table_allocator<T>().deallocate(p, n);
  }
  template <class U>
  bool operator==(const bench_allocator<U>&) const noexcept { return true; }
};
template <class T>
using bench_vector = std::vector<T, bench_allocator<T>>;

std::size_t threads() {
  static const std::size_t t = env_size("LSHATTN_BENCH_THREADS", std::thread::hardware_concurrency());
  return t;
}
executor::cpu_policy exec() { return cpu(threads()); }

/// Batches the decode benchmarks rotate through (LSHATTN_BENCH_POOL, default
/// 1). With 1 every step re-reads one batch, whose sampled rows then sit in the
/// last-level cache from the second step on; an engine decoding many layers
/// reads them from memory. Rotating enough batches (their bytes several times
/// the cache) measures that case; it costs P times the memory and set-up time.
std::size_t pool() {
  static const std::size_t p = std::max<std::size_t>(1, env_size("LSHATTN_BENCH_POOL", 1));
  return p;
}

/// pool() x B sequences of the anchor workload at n tokens, bf16, with their indexes.
struct config {
  std::size_t n = 0, B = 0;
  std::vector<bench_vector<bf16>> K, V;
  std::vector<std::vector<bf16>> Q;
  std::vector<cpu_index> idx;
  std::vector<float> out;
  std::vector<decode_request<bf16, bf16, bf16, cpu_index>> reqs;
};
std::unique_ptr<config> current;

config& get(std::size_t n, std::size_t B) {
  if (current && current->n == n && current->B == B) return *current;
  current.reset();
  auto c = std::make_unique<config>();
  c->n = n;
  c->B = B;
  const std::size_t S = B * pool();
  c->K.resize(S);
  c->V.resize(S);
  c->Q.resize(S);
  // Sequences generated in parallel, at most threads() at a time (memory).
  cpu(std::min(threads(), S)).parallel_for(S, [&](std::size_t s, std::size_t) {
      const auto w = workload::anchor({n, HQ, HK, D, 2026 + s});
      c->K[s].resize(w.keys.size());
      c->V[s].resize(w.values.size());
      c->Q[s].resize(w.queries.size());
      for (std::size_t i = 0; i < w.keys.size(); ++i) c->K[s][i] = bf16(w.keys[i]);
      for (std::size_t i = 0; i < w.values.size(); ++i) c->V[s][i] = bf16(w.values[i]);
      for (std::size_t i = 0; i < w.queries.size(); ++i) c->Q[s][i] = bf16(w.queries[i]);
  });
  c->out.assign(B * HQ * D, 0.0f);
  c->idx.reserve(S);  // requests point into it
  for (std::size_t s = 0; s < S; ++s) {
    c->idx.emplace_back(D, HK, LP);
    c->idx.back().build(exec(), cache_view<const bf16>(c->K[s].data(), HK, n, D), DP.sink, n - DP.window);
  }
  for (std::size_t s = 0; s < S; ++s)
    c->reqs.push_back({matrix_view<const bf16>(c->Q[s].data(), HQ, D), cache_view<const bf16>(c->K[s].data(), HK, n, D),
                       cache_view<const bf16>(c->V[s].data(), HK, n, D), &c->idx[s],
                       matrix_view<float>(c->out.data() + (s % B) * HQ * D, HQ, D)});
  current = std::move(c);
  return *current;
}

/// The process's anonymous memory backed by transparent huge pages, in MB
/// (AnonHugePages of /proc/self/smaps_rollup; -1 where unavailable): whether
/// the huge-page advice given to the KV caches and index tables took effect
/// on this machine (a kernel or hypervisor may ignore it; 0 means every
/// sampled row and bucket is also a 4 KiB page walk).
double thp_mb() {
  std::FILE* f = std::fopen("/proc/self/smaps_rollup", "r");
  if (!f) return -1.0;
  char line[256];
  double kb = -1.0;
  while (std::fgets(line, sizeof line, f))
    if (std::sscanf(line, "AnonHugePages: %lf kB", &kb) == 1) break;
  std::fclose(f);
  return kb < 0.0 ? -1.0 : kb / 1024.0;
}

void report(benchmark::State& st, double bytes, const decode_stats& s, std::size_t B) {
  st.counters["thp_MB"] = thp_mb();
  st.counters["bytes"] = bytes;
  st.counters["GB/s"] = benchmark::Counter(bytes * 1e-9, benchmark::Counter::kIsIterationInvariantRate);
  st.counters["keys_sampled"] = static_cast<double>(s.sampled_keys) / static_cast<double>(B * HQ);
  st.counters["union_rows"] = static_cast<double>(s.union_keys) / static_cast<double>(B * HK);
  st.counters["threads"] = static_cast<double>(threads());
}

// Bytes a step reads: K and V rows (2 x 256 B each in bf16) of the union and
// of the dense part, per KV head; for lsh also the index's 16-bit ids of the
// buckets walked (L per query head, about n / 2^K ids each on this workload).
double step_bytes(const decode_stats& s, std::size_t n, std::size_t B, bool lsh) {
  const double row = 2.0 * D * sizeof(bf16);
  const double rows = static_cast<double>(s.union_keys) + static_cast<double>(s.dense_keys) / G;
  double b = rows * row;
  if (lsh) b += static_cast<double>(B * HQ) * LP.L * (static_cast<double>(n) / 1024.0) * 2.0;
  return b;
}

template <class Est>
void BM_decode(benchmark::State& st, std::size_t n, std::size_t B, Est est) {
  config& c = get(n, B);
  using request = decode_request<bf16, bf16, bf16, cpu_index>;
  decode_stats s;
  {
    std::vector<request> r(c.reqs.begin(), c.reqs.begin() + B);  // the first batch's counts stand for all
    for (auto& x : r) x.stats = &s;
    decode(exec(), est, DP, std::span<const request>(r));
  }
  std::size_t it = 0;
  for (auto _ : st) {
    decode(exec(), est, DP, std::span<const request>(c.reqs.data() + (it++ % pool()) * B, B));
    benchmark::DoNotOptimize(c.out.data());
  }
  report(st, step_bytes(s, n, B, std::is_same_v<Est, estimator::lsh>), s, B);
  st.counters["pool"] = static_cast<double>(pool());
}

// The executor's phases A (query hashing) and B (retrieval), alone, split
// as the executor splits them: one walk task per (request, KV head, block,
// query head), the last walk of a block merging the group's hits.
void BM_retrieval(benchmark::State& st, std::size_t n, std::size_t B) {
  config& c = get(n, B);
  const auto& k = exec().kernels();
  const std::size_t blocks = c.idx[0].retrieval_blocks(), dp = executor::cpu_detail::padded(D), L = LP.L;
  std::vector<std::vector<float>> q(B * HK, std::vector<float>(G * dp, 0.0f));
  std::vector<std::vector<std::uint32_t>> codes(B * HK, std::vector<std::uint32_t>(G * L));
  std::vector<std::vector<std::uint32_t>> ids(B * HK * blocks);
  std::vector<std::vector<std::uint64_t>> mem(B * HK * blocks);
  std::vector<std::vector<std::uint16_t>> hits(B * HK * blocks * G);
  const auto pending = std::make_unique<std::atomic<std::size_t>[]>(B * HK * blocks);
  for (std::size_t u = 0; u < B * HK; ++u)
    for (std::size_t h = 0; h < G; ++h)
      for (std::size_t j = 0; j < D; ++j) q[u][h * dp + j] = static_cast<float>(c.Q[u / HK][((u % HK) * G + h) * D + j]);
  std::size_t rows = 0;
  for (auto _ : st) {
    exec().parallel_for(B * HK, [&](std::size_t u, std::size_t) {
      c.idx[u / HK].hash_queries(k, q[u].data(), G, codes[u].data());
    });
    for (std::size_t j = 0; j < B * HK * blocks; ++j) pending[j].store(G, std::memory_order_relaxed);
    exec().parallel_for(B * HK * blocks * G, [&](std::size_t t, std::size_t) {
      const std::size_t j = t / G, g = t % G, u = j / blocks, b = j % blocks;
      const cpu_index& idx = c.idx[u / HK];
      auto& s = executor::cpu_detail::cpu_scratch::local();
      idx.walk_block(u % HK, b, codes[u].data() + g * L, LP.m, s, hits[t]);
      if (pending[j].fetch_sub(1, std::memory_order_acq_rel) == 1) {
        ids[j].clear();
        mem[j].clear();
        idx.merge_hits(b, hits.data() + j * G, G, s, ids[j], mem[j]);
      }
    });
  }
  for (auto& v : ids) rows += v.size();
  st.counters["thp_MB"] = thp_mb();
  st.counters["union_rows"] = static_cast<double>(rows) / static_cast<double>(B * HK);
  const double bytes = static_cast<double>(B * HQ) * LP.L * (static_cast<double>(n) / 1024.0) * 2.0;
  st.counters["bytes"] = bytes;
  st.counters["GB/s"] = benchmark::Counter(bytes * 1e-9, benchmark::Counter::kIsIterationInvariantRate);
}

// The executor's phase C for the sampled part alone: gather-attention over the unions.
void BM_attention(benchmark::State& st, std::size_t n, std::size_t B) {
  using namespace executor::cpu_detail;
  config& c = get(n, B);
  const auto& k = exec().kernels();
  const std::size_t blocks = c.idx[0].retrieval_blocks(), dp = padded(D);
  std::vector<std::vector<float>> q(B * HK, std::vector<float>(G * dp, 0.0f)), qn(B * HK, std::vector<float>(G));
  std::vector<std::uint32_t> codes(G * LP.L);
  struct chunk {
    std::size_t u;
    const std::uint32_t* ids;
    const std::uint64_t* mem;
    std::size_t count;
  };
  std::vector<std::vector<std::uint32_t>> ids(B * HK * blocks);
  std::vector<std::vector<std::uint64_t>> mem(B * HK * blocks);
  std::vector<chunk> chunks;
  std::size_t rows = 0;
  for (std::size_t u = 0; u < B * HK; ++u) {
    for (std::size_t h = 0; h < G; ++h) {
      double n2 = 0.0;
      for (std::size_t j = 0; j < D; ++j) {
        const float x = static_cast<float>(c.Q[u / HK][((u % HK) * G + h) * D + j]);
        q[u][h * dp + j] = x;
        n2 += static_cast<double>(x) * x;
      }
      qn[u][h] = static_cast<float>(std::sqrt(n2));
    }
    c.idx[u / HK].hash_queries(k, q[u].data(), G, codes.data());
    for (std::size_t b = 0; b < blocks; ++b) {
      auto& I = ids[u * blocks + b];
      auto& M = mem[u * blocks + b];
      c.idx[u / HK].retrieve_group(u % HK, b, codes.data(), G, LP.m, cpu_scratch::local(), I, M);
      rows += I.size();
      for (std::size_t i = 0; i < I.size(); i += 1024)
        chunks.push_back({u, I.data() + i, M.data() + i, std::min<std::size_t>(1024, I.size() - i)});
    }
  }
  std::vector<std::vector<float>> state(chunks.size(), std::vector<float>(G * (dp + 2)));
  for (auto _ : st) {
    exec().parallel_for(chunks.size(), [&](std::size_t j, std::size_t) {
      const chunk& ch = chunks[j];
      float* s = state[j].data();
      std::fill(s, s + G * dp, 0.0f);
      for (std::size_t h = 0; h < G; ++h) s[G * dp + h] = -INFINITY, s[G * dp + G + h] = 0.0f;
      attend_job job;
      job.keys = c.K[ch.u / HK].data() + (ch.u % HK) * n * D;
      job.values = c.V[ch.u / HK].data() + (ch.u % HK) * n * D;
      job.key_stride = job.value_stride = D;
      job.dim = D;
      job.ids = ch.ids;
      job.count = ch.count;
      job.q = q[ch.u].data();
      job.group = G;
      job.scale = static_cast<float>(1.0 / std::sqrt(static_cast<double>(D)));
      job.mode = correction::lsh;
      job.member = ch.mem;
      job.centre = c.idx[ch.u / HK].padded_mean(ch.u % HK);
      job.q_norm = qn[ch.u].data();
      job.lnu = &c.idx[ch.u / HK].lnu();
      job.acc = s;
      job.mx = s + G * dp;
      job.sum = s + G * dp + G;
      k.attend[1][1](job);
    });
  }
  const double bytes = static_cast<double>(rows) * 2.0 * D * sizeof(bf16);
  st.counters["thp_MB"] = thp_mb();
  st.counters["union_rows"] = static_cast<double>(rows) / static_cast<double>(B * HK);
  st.counters["bytes"] = bytes;
  st.counters["GB/s"] = benchmark::Counter(bytes * 1e-9, benchmark::Counter::kIsIterationInvariantRate);
}

// Index build at n tokens x 8 KV heads: hashing (GEMM + certified bits), and Eigen's GEMM on the same shape.
void BM_hash(benchmark::State& st, std::size_t n) {
  config& c = get(n, 1);
  const cache_view<const bf16> kc(c.K[0].data(), HK, n, D);
  std::vector<float> means(HK * executor::cpu_detail::padded(D), 0.0f);
  for (std::size_t h = 0; h < HK; ++h)
    for (std::size_t j = 0; j < D; ++j) means[h * executor::cpu_detail::padded(D) + j] = c.idx[0].mean(h)[j];
  cpu_index::code_vector codes;
  for (auto _ : st) c.idx[0].hash_keys(exec(), kc, 0, n, means.data(), codes);
  const double flop = 2.0 * static_cast<double>(n * HK) * D * LP.K * LP.L;
  st.counters["GFLOP/s"] = benchmark::Counter(flop * 1e-9, benchmark::Counter::kIsIterationInvariantRate);
}

void BM_eigen_gemm(benchmark::State& st, std::size_t n) {
  const bool avx512 = cpu_isa_available(cpu_isa::avx512);
  if (!avx512 && !cpu_isa_available(cpu_isa::avx2)) {
    st.SkipWithError("needs AVX2");
    return;
  }
  const std::size_t P = static_cast<std::size_t>(LP.K * LP.L), rows = n * HK, chunk = 512;
  const hash::simhash<> f(D, LP);
  std::vector<float> X(rows * D);
  std::mt19937 g(1);
  std::normal_distribution<float> nd;
  for (auto& x : X) x = nd(g);
  const std::size_t chunks = (rows + chunk - 1) / chunk;
  for (auto _ : st) {
    exec().parallel_for(chunks, [&](std::size_t j, std::size_t) {
      thread_local std::vector<float> C;
      C.resize(chunk * P);
      const std::size_t r0 = j * chunk, nr = std::min(chunk, rows - r0);
      if (avx512) lshattn_bench::eigen_gemm_avx512(X.data() + r0 * D, nr, D, f.hyperplanes(), P, D, C.data());
      else lshattn_bench::eigen_gemm_avx2(X.data() + r0 * D, nr, D, f.hyperplanes(), P, D, C.data());
      benchmark::DoNotOptimize(C.data());
    });
  }
  const double flop = 2.0 * static_cast<double>(rows) * D * static_cast<double>(P);
  st.counters["GFLOP/s"] = benchmark::Counter(flop * 1e-9, benchmark::Counter::kIsIterationInvariantRate);
}

void BM_tables(benchmark::State& st, std::size_t n) {
  config& c = get(n, 1);
  const cache_view<const bf16> kc(c.K[0].data(), HK, n, D);
  const std::size_t b = DP.sink, e = n - DP.window;
  std::vector<float> means(HK * executor::cpu_detail::padded(D), 0.0f);
  for (std::size_t h = 0; h < HK; ++h)
    for (std::size_t j = 0; j < D; ++j) means[h * executor::cpu_detail::padded(D) + j] = c.idx[0].mean(h)[j];
  cpu_index::code_vector codes;
  c.idx[0].hash_keys(exec(), kc, b, e, means.data(), codes);
  cpu_index scratch(D, HK, LP);
  for (auto _ : st) scratch.build_from_codes(exec(), means, codes, b, e);
  st.counters["index_B_per_token_head"] =
      static_cast<double>(scratch.memory_bytes()) / static_cast<double>((e - b) * HK);
}

// Roofline probes: all threads stream 1 GiB, or gather 2^22 random 256-byte rows from it.
bench_vector<float>& big_buffer() {
  static bench_vector<float> buf = [] {
    bench_vector<float> b((std::size_t{1} << 30) / sizeof(float));
    cpu(threads()).parallel_for(64, [&](std::size_t j, std::size_t) {
      const std::size_t per = b.size() / 64;
      for (std::size_t i = j * per; i < (j + 1) * per; ++i) b[i] = static_cast<float>(i & 7);
    });
    return b;
  }();
  return buf;
}

void BM_stream(benchmark::State& st) {
  auto& b = big_buffer();
  const auto& k = exec().kernels();
  const std::size_t parts = 256, per = b.size() / parts;
  std::vector<float> sink(parts);
  for (auto _ : st) {
    exec().parallel_for(parts, [&](std::size_t j, std::size_t) { sink[j] = k.stream_sum(b.data() + j * per, per); });
    benchmark::DoNotOptimize(sink.data());
  }
  const double bytes = static_cast<double>(parts * per * sizeof(float));
  st.counters["bytes"] = bytes;
  st.counters["GB/s"] = benchmark::Counter(bytes * 1e-9, benchmark::Counter::kIsIterationInvariantRate);
}

void BM_gather(benchmark::State& st) {
  auto& b = big_buffer();
  const auto& k = exec().kernels();
  // 2^22 random rows of the 1 GiB buffer (~63% of its rows, ~650 MB distinct):
  // larger than the last-level caches seen so far (300 MB on the device host),
  // so the probe measures DRAM gathers. With 2^18 rows (64 MB, the same ids
  // every iteration) an L3 this large served the rows after the first pass.
  const std::size_t row = 64, nrows = b.size() / row, take = std::size_t{1} << 22, parts = 256;
  std::vector<std::uint32_t> ids(take);
  std::mt19937 g(7);
  for (auto& x : ids) x = static_cast<std::uint32_t>(g() % nrows);
  std::vector<float> sink(parts);
  for (auto _ : st) {
    exec().parallel_for(parts, [&](std::size_t j, std::size_t) {
      sink[j] = k.gather_sum(b.data(), ids.data() + j * (take / parts), take / parts, row);
    });
    benchmark::DoNotOptimize(sink.data());
  }
  const double bytes = static_cast<double>(take * row * sizeof(float));
  st.counters["bytes"] = bytes;
  st.counters["GB/s"] = benchmark::Counter(bytes * 1e-9, benchmark::Counter::kIsIterationInvariantRate);
}

void reg(benchmark::internal::Benchmark* b) {
  b->UseRealTime()->Unit(benchmark::kMillisecond)->MinTime(0.2)->Repetitions(5)->ReportAggregatesOnly(true);
}
}  // namespace

int main(int argc, char** argv) {
  benchmark::Initialize(&argc, argv);
  benchmark::AddCustomContext("isa", cpu_isa_name());
  benchmark::AddCustomContext("threads", std::to_string(threads()));
  benchmark::AddCustomContext("pool", std::to_string(pool()));
  reg(benchmark::RegisterBenchmark("roofline/stream", BM_stream));
  reg(benchmark::RegisterBenchmark("roofline/gather", BM_gather));
  const std::size_t max_n = env_size("LSHATTN_BENCH_MAX_CONTEXT", 131072);
  for (std::size_t B : {std::size_t{1}, std::size_t{8}})
    for (std::size_t n : {16384u, 32768u, 65536u, 131072u}) {
      if (n > max_n) continue;
      const std::string tag = "/n:" + std::to_string(n) + "/batch:" + std::to_string(B);
      reg(benchmark::RegisterBenchmark(("decode/lsh" + tag).c_str(),
                                       [n, B](benchmark::State& s) { BM_decode(s, n, B, estimator::lsh{}); }));
      reg(benchmark::RegisterBenchmark(("decode/dense" + tag).c_str(),
                                       [n, B](benchmark::State& s) { BM_decode(s, n, B, estimator::exact{}); }));
      reg(benchmark::RegisterBenchmark(("retrieval" + tag).c_str(),
                                       [n, B](benchmark::State& s) { BM_retrieval(s, n, B); }));
      reg(benchmark::RegisterBenchmark(("attention" + tag).c_str(),
                                       [n, B](benchmark::State& s) { BM_attention(s, n, B); }));
      if (B == 1 && n == env_size("LSHATTN_BENCH_BUILD_CONTEXT", max_n)) {
        reg(benchmark::RegisterBenchmark(("build/hash/n:" + std::to_string(n)).c_str(),
                                         [n](benchmark::State& s) { BM_hash(s, n); }));
        reg(benchmark::RegisterBenchmark(("build/eigen_gemm/n:" + std::to_string(n)).c_str(),
                                         [n](benchmark::State& s) { BM_eigen_gemm(s, n); }));
        reg(benchmark::RegisterBenchmark(("build/tables/n:" + std::to_string(n)).c_str(),
                                         [n](benchmark::State& s) { BM_tables(s, n); }));
      }
    }
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  current.reset();
}
