// GPU benchmarks of the CUDA executor (Google Benchmark, manual time from CUDA
// events): one Llama-3.1-8B-shaped layer (32 query heads, 8 KV heads,
// head_dim 128, bf16), K=10 L=150 m=2, contexts 32K..256K, batch 1/8/32.
// Side by side in one run: a device-to-device copy (bandwidth ceiling), our
// exact flash-decoding (estimator::exact), the LSH decode step
// (estimator::lsh), and index build (hashing + counting sort) for 128K x 8
// heads, with the table build (the sort alone) timed separately.
// Workload: method.md's anchor (keys N(0, I) + 2 x a shared N(0, I) offset,
// values N(0, I), each query N(0, I) + half its norm along one random key of its
// KV head), drawn on the GPU from the same Philox4x32 streams as
// workload::anchor but with the device's log/sincospi (same distribution, not
// the same bits). A pool of 32 distinct sequences per context is rotated
// through, so repeated steps do not find their data in the 60 MB L2.
// Each decode benchmark replays CUDA graphs of the step (one per rotation
// slot): 5 untimed warm-up steps, then timed iterations; the counter
// median_us is the median of the per-iteration event times.
#include "lshattn/cuda.cuh"

#include <benchmark/benchmark.h>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <iostream>
#include <cstdio>
#include <map>
#include <memory>
#include <string>
#include <vector>

using namespace lshattn;

namespace {

constexpr std::size_t HQ = 32, HK = 8, D = 128;
// Sequences rotated through (LSHATTN_BENCH_POOL, default 32): fewer sequences
// shrink the address range a step touches (L2 and TLB reach), for diagnosis.
const std::size_t POOL = [] {
  const char* v = std::getenv("LSHATTN_BENCH_POOL");
  const std::size_t n = v ? std::strtoull(v, nullptr, 10) : 32;
  return n ? n : 32;
}();
const lsh_params LP{10, 150, 2, 0x4c534841'7474656eull};

__global__ void gen_bf16(bf16* out, std::size_t count, std::uint64_t seed, std::uint64_t stream, const float* offset) {
  const std::size_t pair = blockIdx.x * static_cast<std::size_t>(blockDim.x) + threadIdx.x;
  if (2 * pair >= count) return;
  const auto b = random::philox4x32({static_cast<std::uint32_t>(pair), static_cast<std::uint32_t>(pair >> 32),
                                     static_cast<std::uint32_t>(stream), static_cast<std::uint32_t>(stream >> 32)},
                                    random::key_of(seed));
  const double u1 = random::uniform53(b[0], b[1]) + 0x1p-53, u2 = random::uniform53(b[2], b[3]);
  const double r = sqrt(-2.0 * log(u1));
  double sn, cs;
  sincospi(2.0 * u2, &sn, &cs);
  for (int k = 0; k < 2; ++k) {
    const std::size_t i = 2 * pair + k;
    if (i >= count) break;
    const double z = k ? r * sn : r * cs;
    out[i] = bf16(static_cast<float>(z + (offset ? offset[i % D] : 0.0f)));
  }
}

struct sequence {
  cuda_detail::device_buffer<bf16> k, v, q;
  cuda_detail::device_buffer<float> out, lse;
  std::unique_ptr<cuda_lsh_index> index;
};

struct pool {
  std::size_t n = 0;
  std::vector<sequence> seqs;
  std::unique_ptr<cuda_workspace> ws;  // sized for batch 32, LSH (covers exact too)
};

void make_pool(pool& p, std::size_t n) {
  p.n = n;
  p.seqs.resize(POOL);
  cuda_detail::device_buffer<float> off(D);
  for (std::size_t s = 0; s < POOL; ++s) {
    auto& sq = p.seqs[s];
    const std::uint64_t seed = 2026 + s;
    random::philox_engine pick(seed, 0x41300000u);
    std::vector<float> offset(D);
    random::fill_normal(offset.data(), D, seed, 0x41000000u);
    for (auto& x : offset) x *= 2.0f;
    LSHATTN_CUDA_CHECK(cudaMemcpy(off.data(), offset.data(), D * 4, cudaMemcpyHostToDevice));
    sq.k.reset(HK * n * D);
    sq.v.reset(HK * n * D);
    sq.q.reset(HQ * D);
    sq.out.reset(HQ * D);
    sq.lse.reset(HQ);
    const std::size_t cnt = HK * n * D;
    const unsigned blocks = static_cast<unsigned>((cnt / 2 + 255) / 256);
    gen_bf16<<<blocks, 256>>>(sq.k.data(), cnt, seed, 0x41100000u, off.data());
    gen_bf16<<<blocks, 256>>>(sq.v.data(), cnt, seed, 0x41200000u, nullptr);
    LSHATTN_CUDA_LAUNCHED("gen_bf16");
    // Queries on the host: N(0, I) plus half the norm along one random key of the group.
    std::vector<bf16> q(HQ * D), key(D);
    std::vector<float> z(D);
    for (std::size_t h = 0; h < HQ; ++h) {
      const std::size_t kvh = h / (HQ / HK), t = pick.below(n);
      LSHATTN_CUDA_CHECK(cudaMemcpy(key.data(), sq.k.data() + (kvh * n + t) * D, D * 2, cudaMemcpyDeviceToHost));
      random::fill_normal(z.data(), D, seed, 0x41400000u + h);
      double qn = 0, kn = 0;
      for (std::size_t j = 0; j < D; ++j) {
        qn += double(z[j]) * z[j];
        kn += double(float(key[j])) * float(key[j]);
      }
      const double a = 0.5 * std::sqrt(qn / kn);
      for (std::size_t j = 0; j < D; ++j) q[h * D + j] = bf16(static_cast<float>(z[j] + a * float(key[j])));
    }
    LSHATTN_CUDA_CHECK(cudaMemcpy(sq.q.data(), q.data(), HQ * D * 2, cudaMemcpyHostToDevice));
    sq.index = std::make_unique<cuda_lsh_index>(D, HK, LP, n);
    sq.index->build(cache_view<const bf16>(sq.k.data(), HK, n, D), 4, n - 64);
  }
  p.ws = std::make_unique<cuda_workspace>(cuda.workspace_bytes_for(32, HQ, HK, D, n, LP.L, true));
  LSHATTN_CUDA_CHECK(cudaDeviceSynchronize());
}

template <class I>
std::vector<decode_request<bf16, bf16, bf16, I>> batch_of(pool& p, std::size_t first, std::size_t b) {
  std::vector<decode_request<bf16, bf16, bf16, I>> r;
  for (std::size_t i = 0; i < b; ++i) {
    auto& s = p.seqs[(first + i) % POOL];
    const I* idx = nullptr;
    if constexpr (std::is_same_v<I, cuda_lsh_index>) idx = s.index.get();
    r.push_back({matrix_view<const bf16>(s.q.data(), HQ, D), cache_view<const bf16>(s.k.data(), HK, p.n, D),
                 cache_view<const bf16>(s.v.data(), HK, p.n, D), idx, matrix_view<float>(s.out.data(), HQ, D),
                 std::span<float>(s.lse.data(), HQ), nullptr});
  }
  return r;
}

std::map<std::string, double> medians;  // name -> median ms
std::map<std::string, double> sampled_per_head;

// Times step(i) for i = 0, 1, ... on `stream` with CUDA events: 5 untimed
// warm-up steps, then one event pair per Google Benchmark iteration.
template <class F>
void run_timed(benchmark::State& st, const std::string& name, cudaStream_t stream, F&& step, double bytes) {
  cudaEvent_t a, b;
  LSHATTN_CUDA_CHECK(cudaEventCreate(&a));
  LSHATTN_CUDA_CHECK(cudaEventCreate(&b));
  for (int w = 0; w < 5; ++w) step(w);
  LSHATTN_CUDA_CHECK(cudaStreamSynchronize(stream));
  std::vector<double> ts;
  int it = 5;
  for (auto _ : st) {
    LSHATTN_CUDA_CHECK(cudaEventRecord(a, stream));
    step(it++);
    LSHATTN_CUDA_CHECK(cudaEventRecord(b, stream));
    LSHATTN_CUDA_CHECK(cudaEventSynchronize(b));
    float ms = 0;
    LSHATTN_CUDA_CHECK(cudaEventElapsedTime(&ms, a, b));
    ts.push_back(ms);
    st.SetIterationTime(ms * 1e-3);
  }
  cudaEventDestroy(a);
  cudaEventDestroy(b);
  std::sort(ts.begin(), ts.end());
  const double med = ts[ts.size() / 2];
  medians[name] = med;
  st.counters["median_us"] = med * 1e3;
  if (bytes > 0) st.counters["GBps_median"] = bytes / (med * 1e-3) / 1e9;
}

// One CUDA graph per rotation slot (POOL / b of them): the decode step as an
// engine would replay it, without per-kernel launch gaps.
template <class Est, class I>
std::vector<cudaGraphExec_t> capture(pool& p, std::size_t b, cudaStream_t stream, bool tensor_cores = true) {
  std::vector<cudaGraphExec_t> g;
  for (std::size_t slot = 0; slot < std::max<std::size_t>(1, POOL / b); ++slot) {
    auto r = batch_of<I>(p, slot * b, b);
    cudaGraph_t graph;
    cudaGraphExec_t exec;
    LSHATTN_CUDA_CHECK(cudaStreamBeginCapture(stream, cudaStreamCaptureModeGlobal));
    decode(cuda.on(stream).with(*p.ws).with_tensor_cores(tensor_cores), Est{}, decode_params{},
           std::span<const decode_request<bf16, bf16, bf16, I>>(r));
    LSHATTN_CUDA_CHECK(cudaStreamEndCapture(stream, &graph));
    LSHATTN_CUDA_CHECK(cudaGraphInstantiate(&exec, graph, 0));
    cudaGraphDestroy(graph);
    g.push_back(exec);
  }
  return g;
}

void release(std::vector<cudaGraphExec_t>& g) {
  for (auto e : g) cudaGraphExecDestroy(e);
  g.clear();
}

cudaStream_t bench_stream = nullptr;

void register_for(pool& p) {
  const std::size_t n = p.n;
  for (std::size_t b : {1, 8, 32}) {
    const std::string tag = std::to_string(n / 1024) + "K/b" + std::to_string(b);
    const double kv_bytes = double(b) * HK * n * D * 2 * 2;
    benchmark::RegisterBenchmark(("dense_exact/" + tag).c_str(), [&p, b, tag, kv_bytes](benchmark::State& st) {
      auto g = capture<estimator::exact, lsh_index<>>(p, b, bench_stream);
      run_timed(st, "dense/" + tag, bench_stream,
                [&](int it) { LSHATTN_CUDA_CHECK(cudaGraphLaunch(g[it % g.size()], bench_stream)); }, kv_bytes);
      release(g);
    })->UseManualTime()->Iterations(b == 32 && n >= 131072 ? 20 : 40)->Unit(benchmark::kMicrosecond);
    benchmark::RegisterBenchmark(("lsh_step/" + tag).c_str(), [&p, b, tag](benchmark::State& st) {
      auto g = capture<estimator::lsh, cuda_lsh_index>(p, b, bench_stream);
      run_timed(st, "lsh/" + tag, bench_stream,
                [&](int it) { LSHATTN_CUDA_CHECK(cudaGraphLaunch(g[it % g.size()], bench_stream)); }, 0);
      release(g);
      // Keys touched, from the executor's own counters (one extra, synchronised step).
      auto r = batch_of<cuda_lsh_index>(p, 0, b);
      std::vector<decode_stats> s(b);
      for (std::size_t i = 0; i < b; ++i) r[i].stats = &s[i];
      decode(cuda.on(bench_stream).with(*p.ws), estimator::lsh{}, decode_params{},
             std::span<const decode_request<bf16, bf16, bf16, cuda_lsh_index>>(r));
      double sampled = 0, uni = 0;
      for (auto& x : s) {
        sampled += double(x.sampled_keys);
        uni += double(x.union_keys);
      }
      st.counters["sampled_per_head"] = sampled / (b * HQ);
      st.counters["union_per_kvhead"] = uni / (b * HK);
      const double dense_med = medians["dense/" + tag];
      if (dense_med > 0) st.counters["speedup_vs_dense"] = dense_med / medians["lsh/" + tag];
      sampled_per_head["lsh/" + tag] = sampled / (b * HQ);
    })->UseManualTime()->Iterations(40)->Unit(benchmark::kMicrosecond);
    // The same two steps with the attention on the SIMT kernel (tensor cores off).
    benchmark::RegisterBenchmark(("dense_exact_simt/" + tag).c_str(), [&p, b, tag, kv_bytes](benchmark::State& st) {
      auto g = capture<estimator::exact, lsh_index<>>(p, b, bench_stream, false);
      run_timed(st, "dense_simt/" + tag, bench_stream,
                [&](int it) { LSHATTN_CUDA_CHECK(cudaGraphLaunch(g[it % g.size()], bench_stream)); }, kv_bytes);
      release(g);
    })->UseManualTime()->Iterations(b == 32 && n >= 131072 ? 20 : 40)->Unit(benchmark::kMicrosecond);
    benchmark::RegisterBenchmark(("lsh_step_simt/" + tag).c_str(), [&p, b, tag](benchmark::State& st) {
      auto g = capture<estimator::lsh, cuda_lsh_index>(p, b, bench_stream, false);
      run_timed(st, "lsh_simt/" + tag, bench_stream,
                [&](int it) { LSHATTN_CUDA_CHECK(cudaGraphLaunch(g[it % g.size()], bench_stream)); }, 0);
      release(g);
    })->UseManualTime()->Iterations(40)->Unit(benchmark::kMicrosecond);
  }
  if (n == 131072) {
    benchmark::RegisterBenchmark("index_build/128K_x_8heads_K10_L150", [&p](benchmark::State& st) {
      auto& s = p.seqs[0];
      run_timed(st, "build/128K", bench_stream, [&](int) {
        s.index->build(cache_view<const bf16>(s.k.data(), HK, p.n, D), 4, p.n - 64, bench_stream);
      }, 0);
    })->UseManualTime()->Iterations(10)->Unit(benchmark::kMicrosecond);
    // The table build alone (the three sort kernels over the codes the build stored).
    benchmark::RegisterBenchmark("index_tables/128K_x_8heads_K10_L150", [&p](benchmark::State& st) {
      auto& s = p.seqs[0];
      run_timed(st, "tables/128K", bench_stream, [&](int) { s.index->rebuild_tables(bench_stream); }, 0);
    })->UseManualTime()->Iterations(20)->Unit(benchmark::kMicrosecond);
    // The build's hashing alone (same tokens, the index's mean), on both paths;
    // the tensor-core one also reports its uncertain pairs.
    for (const auto path : {cuda_detail::hash_path::tensor_cores, cuda_detail::hash_path::simt}) {
      const bool tc = path == cuda_detail::hash_path::tensor_cores;
      const std::string name = tc ? "hash/128K" : "hash_simt/128K";
      benchmark::RegisterBenchmark(("index_hash" + std::string(tc ? "" : "_simt") + "/128K_x_8heads_K10_L150").c_str(),
                                   [&p, path, name, tc](benchmark::State& st) {
        auto& s = p.seqs[0];
        const auto& f = s.index->device_family();
        const std::size_t L = static_cast<std::size_t>(LP.L), t0 = 4, t1 = p.n - 64, n = t1 - t0;
        cuda_detail::device_buffer<std::uint16_t> codes(HK * L * n);
        run_timed(st, name, bench_stream, [&](int) {
          f.hash<bf16, std::uint16_t>(s.k.data(), HK, p.n * D, D, s.index->view().mean, t0, t1, codes.data(), L * n, n, 1,
                                      0, bench_stream, path);
        }, 0);
        if (tc) st.counters["uncertain_pairs"] = static_cast<double>(f.last_uncertain());
        st.counters["TFLOPS_3terms"] = tc ? 3.0 * 2.0 * double(HK) * n * 1600 * 128 / (medians[name] * 1e-3) / 1e12 : 0.0;
      })->UseManualTime()->Iterations(10)->Unit(benchmark::kMicrosecond);
    }
  }
}

}  // namespace

int main(int argc, char** argv) {
  int count = 0;
  if (cudaGetDeviceCount(&count) != cudaSuccess || count == 0) {
    std::printf("SKIPPED: no CUDA device\n");
    return 77;
  }
  benchmark::Initialize(&argc, argv);
  std::setvbuf(stdout, nullptr, _IOLBF, 0);
  // Google Benchmark's default display reporter is freed after the first
  // RunSpecifiedBenchmarks() call (one call per program is its contract);
  // this program runs once per context, so it brings its own reporter.
  benchmark::ConsoleReporter reporter;
  cudaDeviceProp prop{};
  LSHATTN_CUDA_CHECK(cudaGetDeviceProperties(&prop, 0));
  LSHATTN_CUDA_CHECK(cudaStreamCreateWithFlags(&bench_stream, cudaStreamNonBlocking));
  std::printf("device: %s, %d SMs, L2 %d MB\n", prop.name, prop.multiProcessorCount, prop.l2CacheSize >> 20);
  {  // Bandwidth ceiling: a 4 GiB device-to-device copy (bytes read + written).
    const std::size_t bytes = std::size_t{2} << 30;
    cuda_detail::device_buffer<unsigned char> a(bytes), b(bytes);
    LSHATTN_CUDA_CHECK(cudaMemset(a.data(), 1, bytes));
    benchmark::RegisterBenchmark("d2d_copy/2GiB", [&](benchmark::State& st) {
      run_timed(st, "copy", bench_stream, [&](int) { LSHATTN_CUDA_CHECK(cudaMemcpyAsync(b.data(), a.data(), bytes, cudaMemcpyDeviceToDevice, bench_stream)); },
                2.0 * bytes);
    })->UseManualTime()->Iterations(20)->Unit(benchmark::kMicrosecond);
    benchmark::RunSpecifiedBenchmarks(&reporter);
    benchmark::ClearRegisteredBenchmarks();
    std::fflush(stdout);
  }
  std::vector<std::size_t> contexts = {131072, 32768, 65536, 262144};  // the target shape first
  if (argc > 1) contexts = {std::stoul(argv[1])};
  for (std::size_t n : contexts) {
    pool p;
    const auto t0 = std::chrono::steady_clock::now();
    make_pool(p, n);
    std::printf("pool of %zu sequences at %zu tokens ready in %.1f s\n", POOL, n,
                std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
    register_for(p);
    benchmark::RunSpecifiedBenchmarks(&reporter);
    benchmark::ClearRegisteredBenchmarks();
    std::cout.flush();
  }
  std::printf("\nsummary (median ms; copy %.3f ms for 4 GiB moved = %.0f GB/s)\n", medians["copy"],
              4.0 * (1u << 30) / (medians["copy"] * 1e-3) / 1e9);
  std::printf("%-10s %10s %10s %8s %10s %10s %12s %12s\n", "config", "dense_ms", "lsh_ms", "ratio", "dense_GBps",
              "sampled/hd", "dense_simt", "lsh_simt");
  for (std::size_t n : contexts)
    for (std::size_t b : {1, 8, 32}) {
      const std::string tag = std::to_string(n / 1024) + "K/b" + std::to_string(b);
      const double dn = medians["dense/" + tag], ls = medians["lsh/" + tag];
      std::printf("%-10s %10.4f %10.4f %8.2f %10.0f %10.0f %12.4f %12.4f\n", tag.c_str(), dn, ls, dn / ls,
                  double(b) * HK * n * D * 4 / (dn * 1e-3) / 1e9, sampled_per_head["lsh/" + tag],
                  medians["dense_simt/" + tag], medians["lsh_simt/" + tag]);
    }
  if (medians.count("build/128K")) std::printf("index build 128K x 8 heads: %.3f ms\n", medians["build/128K"]);
  if (medians.count("tables/128K"))
    std::printf("  of which the table build (sort): %.3f ms\n", medians["tables/128K"]);
  if (medians.count("hash/128K"))
    std::printf("  of which hashing: %.3f ms on tensor cores, %.3f ms on the fp32 kernel\n", medians["hash/128K"],
                medians["hash_simt/128K"]);
  return 0;
}
