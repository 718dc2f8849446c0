// lshattn demo: one decode step of one Llama-3.1-8B-shaped layer over a
// seeded synthetic workload, with every estimator the library ships, against
// exact attention. Everything runs on the reference executor (scalar, float64
// accumulation), so the times show what each estimator asks of an executor,
// not what a tuned one achieves.
//
//   lshattn_demo                       # 32K tokens, d=128, 32 query / 8 KV heads, K10 L150 m2
//   lshattn_demo --tokens 8192 --L 300 --K 11
//   lshattn_demo --workload anchor     # the method.md anchor workload
//
// Columns:
//   keys/head  average number of sampled keys per query head (decode_stats)
//   touched    (sampled + dense keys) / all keys, per query head. top-k and
//              oracle sampling are oracles: to choose their keys they score
//              every key, which this column does not count.
//   rel L2     ||o - o_exact|| / ||o_exact|| over all query heads
//   worst head the largest per-head relative L2 error
//   |dLSE|     largest |lse - lse_exact| (natural log), the error a merge with
//              other partial states inherits
//   ms/step    wall time of the whole decode step (median of --repeat runs)

#include <algorithm>
#include <charconv>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <string>
#include <string_view>
#include <vector>

#include <lshattn/lshattn.hpp>

namespace {

struct options {
  std::size_t tokens = 32768, dim = 128, q_heads = 32, kv_heads = 8;
  int K = 10, L = 150, m = 2;
  std::uint64_t seed = 2024;
  bool seed_given = false;
  std::size_t sink = 4, window = 64;
  std::string workload = "llm";
  int repeat = 3;
};

void usage(std::FILE* to) {
  std::fprintf(to,
               "usage: lshattn_demo [options]\n"
               "One decode step of one attention layer with bf16 K/V, every estimator against exact\n"
               "attention, on the reference executor.\n"
               "  --tokens N       cached tokens (default 32768)\n"
               "  --dim D          head_dim (default 128)\n"
               "  --q-heads H      query heads (default 32)\n"
               "  --kv-heads H     KV heads; must divide --q-heads (default 8, GQA 4:1)\n"
               "  --K K            SimHash bits per table, 1..32 (default 10)\n"
               "  --L L            tables (default 150)\n"
               "  --m M            a key is sampled when it collides in >= M tables (default 2)\n"
               "  --seed S         seeds the workload; the hyperplanes and the random baselines\n"
               "                   use seeds derived from it (default 2024 llm, 2026 anchor)\n"
               "  --sink N         first tokens attended exactly (default 4)\n"
               "  --window N       last tokens attended exactly (default 64)\n"
               "  --workload W     llm (clusters, sinks, recency, sparse to flat heads) or\n"
               "                   anchor (method.md's timing workload) (default llm)\n"
               "  --repeat R       timed runs per estimator, median reported (default 3)\n"
               "  --help           print this and exit\n");
}

[[noreturn]] void bad(const std::string& msg) {
  std::fprintf(stderr, "lshattn_demo: %s\n(try --help)\n", msg.c_str());
  std::exit(2);
}

template <class T>
T parse_number(std::string_view name, std::string_view text, T lo, T hi) {
  T v{};
  const auto [p, ec] = std::from_chars(text.data(), text.data() + text.size(), v);
  if (ec != std::errc() || p != text.data() + text.size())
    bad(std::string(name) + ": '" + std::string(text) + "' is not a valid number");
  if (v < lo || v > hi)
    bad(std::string(name) + " = " + std::string(text) + " is out of range [" + std::to_string(lo) + ", " +
        std::to_string(hi) + "]");
  return v;
}

options parse(int argc, char** argv) {
  options o;
  for (int i = 1; i < argc; ++i) {
    std::string_view a = argv[i];
    if (a == "--help" || a == "-h") {
      usage(stdout);
      std::exit(0);
    }
    std::string_view val;
    if (const auto eq = a.find('='); a.starts_with("--") && eq != std::string_view::npos) {
      val = a.substr(eq + 1);
      a = a.substr(0, eq);
    } else if (i + 1 < argc) {
      val = argv[++i];
    } else {
      bad(std::string(a) + " needs a value");
    }
    constexpr std::size_t big = std::size_t{1} << 31;
    if (a == "--tokens") o.tokens = parse_number<std::size_t>(a, val, 1, big);
    else if (a == "--dim") o.dim = parse_number<std::size_t>(a, val, 1, lshattn::max_head_dim);
    else if (a == "--q-heads") o.q_heads = parse_number<std::size_t>(a, val, 1, 4096);
    else if (a == "--kv-heads") o.kv_heads = parse_number<std::size_t>(a, val, 1, 4096);
    else if (a == "--K") o.K = parse_number<int>(a, val, 1, 32);
    else if (a == "--L") o.L = parse_number<int>(a, val, 1, lshattn::max_tables);
    else if (a == "--m") o.m = parse_number<int>(a, val, 1, lshattn::max_tables);
    else if (a == "--seed") o.seed = parse_number<std::uint64_t>(a, val, 0, ~std::uint64_t{0}), o.seed_given = true;
    else if (a == "--sink") o.sink = parse_number<std::size_t>(a, val, 0, big);
    else if (a == "--window") o.window = parse_number<std::size_t>(a, val, 0, big);
    else if (a == "--repeat") o.repeat = parse_number<int>(a, val, 1, 1000);
    else if (a == "--workload") {
      if (val != "llm" && val != "anchor") bad("--workload must be llm or anchor, not '" + std::string(val) + "'");
      o.workload = val;
    } else {
      bad("unknown option '" + std::string(argv[i - 1]) + "'");
    }
  }
  if (o.q_heads % o.kv_heads != 0)
    bad("--q-heads = " + std::to_string(o.q_heads) + " must be a multiple of --kv-heads = " +
        std::to_string(o.kv_heads));
  if (o.m > o.L) bad("--m = " + std::to_string(o.m) + " must not exceed --L = " + std::to_string(o.L));
  if (o.sink + o.window >= o.tokens)
    bad("--sink + --window = " + std::to_string(o.sink + o.window) + " leaves no tokens to sample out of --tokens = " +
        std::to_string(o.tokens));
  if (!o.seed_given && o.workload == "anchor") o.seed = 2026;
  return o;
}

double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

// SplitMix64 finaliser: derive independent-looking seeds from the one --seed.
std::uint64_t derive(std::uint64_t s, std::uint64_t salt) {
  std::uint64_t z = s + salt * 0x9e3779b97f4a7c15ull;
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

struct result {
  std::vector<float> out, lse;
  lshattn::decode_stats stats;
  double ms = 0.0;
};

struct row {
  std::string name;
  result r;
};

}  // namespace

int main(int argc, char** argv) {
  const options o = parse(argc, argv);
  try {
    using clock = std::chrono::steady_clock;
    const std::size_t n = o.tokens, d = o.dim, hq = o.q_heads, hk = o.kv_heads;

    auto t0 = clock::now();
    lshattn::workload::layer_data w;
    if (o.workload == "llm") {
      lshattn::workload::llm_like_params wp;
      wp.tokens = n, wp.dim = d, wp.q_heads = hq, wp.kv_heads = hk, wp.seed = o.seed;
      w = lshattn::workload::llm_like(wp);
    } else {
      w = lshattn::workload::anchor({n, hq, hk, d, o.seed});
    }
    // Engines hold K and V in bf16; queries stay float.
    std::vector<lshattn::bf16> K(w.keys.size()), V(w.values.size());
    std::transform(w.keys.begin(), w.keys.end(), K.begin(), [](float x) { return lshattn::bf16(x); });
    std::transform(w.values.begin(), w.values.end(), V.begin(), [](float x) { return lshattn::bf16(x); });
    const double gen_s = seconds_since(t0);

    const lshattn::cache_view<const lshattn::bf16> keys(K.data(), hk, n, d), values(V.data(), hk, n, d);
    const lshattn::matrix_view<const float> queries(w.queries.data(), hq, d);
    lshattn::decode_params params;
    params.sink = o.sink;
    params.window = o.window;

    // Prefill: the index covers the middle of the cache, [sink, tokens - window).
    lshattn::lsh_params lp;
    lp.K = o.K, lp.L = o.L, lp.m = o.m, lp.seed = derive(o.seed, 1);
    t0 = clock::now();
    lshattn::lsh_index<> index(d, hk, lp);
    index.build(keys, o.sink, n - o.window);
    const double build_s = seconds_since(t0);

    const auto run = [&](const auto& est) {
      result r;
      r.out.assign(hq * d, std::nanf(""));
      r.lse.assign(hq, std::nanf(""));
      std::vector<double> ms;
      for (int rep = 0; rep < o.repeat; ++rep) {
        lshattn::decode_stats st;
        lshattn::decode_request<float, lshattn::bf16> req{
            queries, keys, values, &index, lshattn::matrix_view<float>(r.out.data(), hq, d), r.lse, &st};
        const auto t = clock::now();
        lshattn::decode(lshattn::reference, est, params, req);
        ms.push_back(1e3 * seconds_since(t));
        r.stats = st;  // identical every run: the designs are seeded
      }
      std::nth_element(ms.begin(), ms.begin() + static_cast<std::ptrdiff_t>(ms.size() / 2), ms.end());
      r.ms = ms[ms.size() / 2];
      return r;
    };

    std::vector<row> rows;
    rows.push_back({"exact", run(lshattn::estimator::exact{})});
    char name[64];
    std::snprintf(name, sizeof name, "LSH K%d L%d m%d", o.K, o.L, o.m);
    rows.push_back({name, run(lshattn::estimator::lsh{})});
    // The baselines get the LSH estimator's average budget per query head.
    const std::size_t k = static_cast<std::size_t>(
        std::llround(static_cast<double>(rows[1].r.stats.sampled_keys) / static_cast<double>(hq)));
    std::snprintf(name, sizeof name, "top-k (k=%zu)", k);
    rows.push_back({name, run(lshattn::estimator::topk{k})});
    std::snprintf(name, sizeof name, "uniform (k=%zu)", k);
    rows.push_back({name, run(lshattn::estimator::uniform{k, derive(o.seed, 2)})});
    std::snprintf(name, sizeof name, "oracle sampling (k=%zu)", k);
    rows.push_back({name, run(lshattn::estimator::oracle_sampling{k, derive(o.seed, 3)})});

    std::printf("lshattn demo: one decode step, reference executor (float64 accumulation)\n");
    std::printf("workload %s: %zu tokens, head_dim %zu, %zu query heads / %zu KV heads (GQA %zu:1), bf16 K/V, seed %llu\n",
                o.workload.c_str(), n, d, hq, hk, hq / hk, static_cast<unsigned long long>(o.seed));
    std::printf("dense part: %zu sink + %zu window tokens; sampled range %zu tokens\n", o.sink, o.window,
                n - o.sink - o.window);
    std::printf("workload generation %.2f s; index build (K%d L%d, %zu KV heads) %.2f s, %.1f MiB (%.0f B/token/KV head)\n\n",
                gen_s, o.K, o.L, hk, build_s, static_cast<double>(index.memory_bytes()) / (1 << 20),
                static_cast<double>(index.memory_bytes()) / static_cast<double>(hk * index.size()));

    const auto& ex = rows[0].r;
    std::printf("| %-26s | %9s | %8s | %9s | %10s | %8s | %9s |\n", "estimator", "keys/head", "touched", "rel L2",
                "worst head", "|dLSE|", "ms/step");
    std::printf("|%s|%s|%s|%s|%s|%s|%s|\n", std::string(28, '-').c_str(), std::string(11, '-').c_str(),
                std::string(10, '-').c_str(), std::string(11, '-').c_str(), std::string(12, '-').c_str(),
                std::string(10, '-').c_str(), std::string(11, '-').c_str());
    for (const auto& [nm, r] : rows) {
      double num = 0.0, den = 0.0, worst = 0.0, dlse = 0.0;
      for (std::size_t h = 0; h < hq; ++h) {
        double hn = 0.0, hd = 0.0;
        for (std::size_t j = 0; j < d; ++j) {
          const double e = static_cast<double>(r.out[h * d + j]) - ex.out[h * d + j];
          hn += e * e;
          hd += static_cast<double>(ex.out[h * d + j]) * ex.out[h * d + j];
        }
        num += hn, den += hd;
        worst = std::max(worst, std::sqrt(hn / hd));
        dlse = std::max(dlse, std::fabs(static_cast<double>(r.lse[h]) - ex.lse[h]));
      }
      const double per_head = static_cast<double>(r.stats.sampled_keys) / static_cast<double>(hq);
      const double touched = static_cast<double>(r.stats.sampled_keys + r.stats.dense_keys) /
                             (static_cast<double>(hq) * static_cast<double>(n));
      std::printf("| %-26s | %9.1f | %7.2f%% | %9.2e | %10.2e | %8.2e | %9.1f |\n", nm.c_str(), per_head,
                  100.0 * touched, std::sqrt(num / den), worst, dlse, r.ms);
    }
    double o2 = 0.0, v2 = 0.0;
    for (float x : ex.out) o2 += static_cast<double>(x) * x;
    for (float x : w.values) v2 += static_cast<double>(x) * x;
    std::printf("\nexact output RMS %.3g against value RMS %.3g: the flatter the attention, the smaller the\n"
                "exact output and the larger every relative error.\n",
                std::sqrt(o2 / static_cast<double>(ex.out.size())), std::sqrt(v2 / static_cast<double>(w.values.size())));
    std::printf("touched = (sampled + dense keys) / keys per query head; top-k and oracle sampling score every\n"
                "key to choose theirs (not counted). Uniform and oracle sampling are one seeded draw.\n");
    return 0;
  } catch (const lshattn::error& e) {
    std::fprintf(stderr, "lshattn_demo: %s\n", e.what());
    return 2;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "lshattn_demo: error: %s\n", e.what());
    return 1;
  }
}
