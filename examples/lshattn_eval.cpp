// lshattn_eval: the quality evaluation. For each data set it sweeps LSH
// parameters (an explicit K, L, m grid, plus the tuner's choice for each
// budget fraction) and, at the number of keys each LSH setting sampled, runs
// oracle top-k, uniform sampling and oracle sampling. It reports keys touched
// and the relative output error |o_hat - o| / |o| (median and 95th percentile
// over queries and seeds), writes CSV, the attention entropy per query, and
// gnuplot charts (SVG).
//
//   lshattn_eval [--data DIR] [--out DIR] [--sets glove:131072,synthetic:16384]
//                [--queries Q] [--seeds S] [--threads T]
//                [--grid 8:20:2,10:150:2,...] [--budgets 0.01,0.02,0.05] [--no-charts] [--append]
//                [--target-error E] [--tune-only]
//
// --tune-only prints the tuner's choice for each budget (and for --target-error,
// verified by simulation on the sample) for each set, and stops.
//
// Data sets:
//   glove:N      keys = values = the N most frequent GloVe word vectors (fp16,
//                100-d, real and anisotropic); query i = the mean of two random
//                words' vectors with temperature tau_i spaced geometrically
//                from 0.5 to 4 (scores q.k / tau_i), so that the attention
//                entropy spans sparse to nearly flat heads (docs/quality.md).
//                All keys are in the sampled range (no sink/window: not a sequence).
//   synthetic:N  workload::llm_like with N tokens, Q query heads (one query
//                each, sharpness spaced geometrically) over 4 KV heads,
//                head_dim 128; sink 4 and window 64 attended exactly.

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <functional>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include <lshattn/lshattn.hpp>
#include <lshattn/tuner/tuner.hpp>

#include "quality/npy.hpp"
#include "support/args.hpp"

namespace {

using namespace lshattn;
using clock_type = std::chrono::steady_clock;

struct options {
  std::string data = "../shared/data", out = "docs/quality", sets = "glove:131072,synthetic:16384";
  std::string grid = "6:10:2,8:20:2,8:50:2,10:50:2,10:150:2,11:300:2,8:20:1";
  std::string budgets = "0.005,0.01,0.02,0.05,0.1";
  std::size_t queries = 64;
  int seeds = 2;
  unsigned threads = std::max(1u, std::thread::hardware_concurrency());
  bool charts = true;
  bool append = false;  ///< add to results.csv / entropy.csv instead of starting them afresh
  bool tune_only = false;    ///< print the tuner's choices for each set and stop
  double target_error = 0.0; ///< > 0: also tune for this median relative error (verified by simulation)
  std::string per_query = "tuned@0.02";  ///< the setting whose per-query errors go to per_query.csv
};

struct query {
  std::size_t kv_head = 0;
  std::vector<float> q;
  float scale = 0.0f;  // 0: 1/sqrt(d)
};

struct dataset {
  std::string name;
  std::size_t kv_heads = 1, n = 0, d = 0;
  std::vector<float> keys, values;  // [kv_heads, n, d]
  std::vector<query> queries;
  decode_params params{0, 0};
  // Filled by evaluate: exact outputs and entropies per query.
  std::vector<std::vector<float>> exact;
  std::vector<double> entropy;
  cache_view<const float> kc() const { return {keys.data(), kv_heads, n, d}; }
  cache_view<const float> vc() const { return {values.data(), kv_heads, n, d}; }
};

double elapsed(clock_type::time_point t0) {
  return std::chrono::duration<double>(clock_type::now() - t0).count();
}

void parallel_for(std::size_t count, unsigned threads, const std::function<void(std::size_t)>& body) {
  std::atomic<std::size_t> next{0};
  std::vector<std::thread> pool;
  for (unsigned t = 0; t < std::min<std::size_t>(threads, count); ++t)
    pool.emplace_back([&] {
      for (std::size_t i; (i = next++) < count;) body(i);
    });
  for (auto& th : pool) th.join();
}

std::vector<std::string> split(const std::string& s, char sep) {
  std::vector<std::string> out;
  std::stringstream ss(s);
  for (std::string item; std::getline(ss, item, sep);)
    if (!item.empty()) out.push_back(item);
  return out;
}

dataset make_glove(const options& o, std::size_t n) {
  const auto m = lshattn_examples::read_npy(o.data + "/glove-100d-first131072.f16.npy", n);
  dataset ds;
  ds.name = "glove" + std::to_string(m.rows);
  ds.n = m.rows;
  ds.d = m.cols;
  ds.keys = m.data;
  ds.values = m.data;
  random::philox_engine rng(20261202, 1);
  for (std::size_t i = 0; i < o.queries; ++i) {
    const std::size_t a = rng.below(ds.n), b = rng.below(ds.n);
    query q;
    q.q.resize(ds.d);
    for (std::size_t j = 0; j < ds.d; ++j) q.q[j] = 0.5f * (m.row(a)[j] + m.row(b)[j]);
    const double frac = o.queries > 1 ? static_cast<double>(i) / static_cast<double>(o.queries - 1) : 0.0;
    q.scale = static_cast<float>(1.0 / (0.5 * std::pow(8.0, frac)));  // tau from 0.5 to 4
    ds.queries.push_back(std::move(q));
  }
  return ds;
}

dataset make_synthetic(const options& o, std::size_t n) {
  workload::llm_like_params p;
  p.tokens = n;
  p.kv_heads = 4;
  p.q_heads = std::max<std::size_t>(4, (o.queries + 3) / 4 * 4);  // one query per head, sharpness spaced per head
  p.dim = 128;
  const auto w = workload::llm_like(p);
  dataset ds;
  ds.name = "synthetic" + std::to_string(n);
  ds.kv_heads = p.kv_heads;
  ds.n = n;
  ds.d = p.dim;
  ds.keys = w.keys;
  ds.values = w.values;
  ds.params = decode_params{};  // sink 4, window 64
  const std::size_t g = p.q_heads / p.kv_heads;
  for (std::size_t h = 0; h < p.q_heads; ++h) {
    query q;
    q.kv_head = h / g;
    q.q.assign(w.queries.begin() + static_cast<std::ptrdiff_t>(h * p.dim),
               w.queries.begin() + static_cast<std::ptrdiff_t>((h + 1) * p.dim));
    ds.queries.push_back(std::move(q));
  }
  return ds;
}

// One decode of query i of ds with estimator est into out (d floats, poisoned first).
// idx: one index per KV head (or null), each built over a one-head view.
template <class Est>
std::size_t decode_one(const dataset& ds, std::size_t i, const Est& est, const std::vector<lsh_index<>>* idx,
                       std::vector<float>& out) {
  const query& q = ds.queries[i];
  const auto kc = ds.kc(), vc = ds.vc();
  // A one-KV-head view of this query's head (the index, if any, covers that head as head 0).
  const cache_view<const float> k1(kc.data + q.kv_head * kc.head_stride, 1, ds.n, ds.d, kc.head_stride, kc.token_stride);
  const cache_view<const float> v1(vc.data + q.kv_head * vc.head_stride, 1, ds.n, ds.d, vc.head_stride, vc.token_stride);
  out.assign(ds.d, std::nanf(""));
  decode_params p = ds.params;
  p.scale = q.scale;
  decode_stats st;
  decode_request<float, float> r{matrix_view<const float>(q.q.data(), 1, ds.d), k1, v1,
                                 idx ? &(*idx)[q.kv_head] : nullptr, matrix_view<float>(out.data(), 1, ds.d)};
  r.stats = &st;
  decode(reference, est, p, r);
  return st.sampled_keys;
}

// Relative error of one estimate and its sampled keys.
template <class Est>
std::pair<double, std::size_t> run_one(const dataset& ds, std::size_t i, const Est& est,
                                       const std::vector<lsh_index<>>* idx = nullptr) {
  std::vector<float> out;
  const std::size_t keys = decode_one(ds, i, est, idx, out);
  double e2 = 0.0, o2 = 0.0;
  for (std::size_t j = 0; j < ds.d; ++j) {
    const double e = static_cast<double>(out[j]) - ds.exact[i][j];
    e2 += e * e;
    o2 += static_cast<double>(ds.exact[i][j]) * ds.exact[i][j];
  }
  return {std::sqrt(e2 / std::max(o2, 1e-300)), keys};
}

// Exact outputs and the attention entropy (nats, over all n keys) of every query.
void compute_exact(dataset& ds, const options& o) {
  ds.exact.assign(ds.queries.size(), {});
  ds.entropy.assign(ds.queries.size(), 0.0);
  parallel_for(ds.queries.size(), o.threads, [&](std::size_t i) {
    const query& q = ds.queries[i];
    const double scale = q.scale > 0.0f ? q.scale : 1.0 / std::sqrt(static_cast<double>(ds.d));
    std::vector<double> s(ds.n);
    double mx = -1e300;
    for (std::size_t t = 0; t < ds.n; ++t) {
      s[t] = estimator::score(q.q.data(), ds.keys.data() + (q.kv_head * ds.n + t) * ds.d, ds.d, scale);
      mx = std::max(mx, s[t]);
    }
    double z = 0.0, sz = 0.0;
    for (double x : s) {
      z += std::exp(x - mx);
      sz += std::exp(x - mx) * (x - mx);
    }
    ds.entropy[i] = std::log(z) - sz / z;  // H = ln Z - E_p[s] with scores shifted by the max
    decode_one(ds, i, estimator::exact{}, nullptr, ds.exact[i]);
  });
}

struct row {
  std::string set, estimator, config;
  int K = 0, L = 0, m = 0;
  double k = 0.0, keys_mean = 0.0, fraction = 0.0, err_median = 0.0, err_p95 = 0.0, err_mean = 0.0;
  std::size_t units = 0;
};

double quantile(std::vector<double> v, double q) {
  std::sort(v.begin(), v.end());
  const double pos = q * static_cast<double>(v.size() - 1);
  const auto lo = static_cast<std::size_t>(std::floor(pos));
  const auto hi = std::min(v.size() - 1, lo + 1);
  return v[lo] + (v[hi] - v[lo]) * (pos - static_cast<double>(lo));
}

row summarise(const dataset& ds, const std::string& est, const std::string& config, const lsh_params& lp, double k,
              const std::vector<double>& errs, const std::vector<double>& keys) {
  row r;
  r.set = ds.name;
  r.estimator = est;
  r.config = config;
  r.K = lp.K;
  r.L = lp.L;
  r.m = lp.m;
  r.k = k;
  double ks = 0.0, es = 0.0;
  for (double x : keys) ks += x;
  for (double x : errs) es += x;
  r.keys_mean = ks / static_cast<double>(keys.size());
  const auto [b, e] = std::pair{ds.params.sink, ds.n > ds.params.window ? ds.n - ds.params.window : 0};
  r.fraction = r.keys_mean / static_cast<double>(e - b);
  r.err_median = quantile(errs, 0.5);
  r.err_p95 = quantile(errs, 0.95);
  r.err_mean = es / static_cast<double>(errs.size());
  r.units = errs.size();
  return r;
}

}  // namespace

namespace {

std::vector<lsh_index<>> build_indexes(const dataset& ds, const lsh_params& lp, unsigned threads) {
  std::vector<lsh_index<>> out;
  const auto kc = ds.kc();
  const std::size_t b = ds.params.sink, e = ds.n > ds.params.window ? ds.n - ds.params.window : 0;
  for (std::size_t h = 0; h < ds.kv_heads; ++h) out.emplace_back(ds.d, 1, lp);
  parallel_for(ds.kv_heads, threads, [&](std::size_t h) {  // one index per KV head, built concurrently
    out[h].build(cache_view<const float>(kc.data + h * kc.head_stride, 1, ds.n, ds.d, kc.head_stride, kc.token_stride),
                 b, std::max(b, e));
  });
  return out;
}

struct config {
  std::string name;
  lsh_params lp;
};

std::vector<config> make_configs(const dataset& ds, const options& o) {
  std::vector<config> cs;
  for (const auto& g : split(o.grid, ',')) {
    const auto f = split(g, ':');
    if (f.size() != 3) throw std::runtime_error("--grid entries are K:L:m, got " + g);
    cs.push_back({"grid", lsh_params{std::stoi(f[0]), std::stoi(f[1]), std::stoi(f[2])}});
  }
  // The tuner, given a sample: 4096 keys (and values) of KV head 0 and the queries of that head,
  // at the median query's scale.
  const std::size_t ns = std::min<std::size_t>(4096, ds.n);
  std::vector<float> sk, sv, sq;
  random::philox_engine rng(99, 7);
  for (std::size_t i = 0; i < ns; ++i) {
    const std::size_t t = ds.n == ns ? i : rng.below(ds.n);
    sk.insert(sk.end(), ds.keys.begin() + static_cast<std::ptrdiff_t>(t * ds.d),
              ds.keys.begin() + static_cast<std::ptrdiff_t>((t + 1) * ds.d));
    sv.insert(sv.end(), ds.values.begin() + static_cast<std::ptrdiff_t>(t * ds.d),
              ds.values.begin() + static_cast<std::ptrdiff_t>((t + 1) * ds.d));
  }
  std::vector<float> scales;
  for (const auto& q : ds.queries)
    if (q.kv_head == 0) {
      sq.insert(sq.end(), q.q.begin(), q.q.end());
      scales.push_back(q.scale);
    }
  std::sort(scales.begin(), scales.end());
  const std::size_t range = ds.n - ds.params.sink - std::min(ds.n - ds.params.sink, ds.params.window);
  for (const auto& b : split(o.budgets, ',')) {
    tuner::tune_request r;
    r.n = range;
    r.head_dim = ds.d;
    r.kv_heads = ds.kv_heads;
    r.target_fraction = std::stod(b);
    r.K_max = 16;
    r.queries = matrix_view<const float>(sq.data(), sq.size() / ds.d, ds.d);
    r.keys = matrix_view<const float>(sk.data(), ns, ds.d);
    r.values = matrix_view<const float>(sv.data(), ns, ds.d);
    r.scale = scales[scales.size() / 2];
    const auto res = tuner::tune(r);
    std::fprintf(stderr, "[%s] tuner, budget %s: K=%d L=%d m=%d, expected fraction %.4f, predicted median error %.4f, "
                 "index %.1f MB\n", ds.name.c_str(), b.c_str(), res.params.K, res.params.L, res.params.m,
                 res.expected_fraction, res.predicted_error, static_cast<double>(res.index_bytes) / 1e6);
    cs.push_back({"tuned@" + b, res.params});
  }
  if (o.target_error > 0.0) {
    tuner::tune_request r;
    r.n = range;
    r.head_dim = ds.d;
    r.kv_heads = ds.kv_heads;
    r.target_error = o.target_error;
    r.K_max = 16;
    r.verify_seeds = 2;
    r.queries = matrix_view<const float>(sq.data(), sq.size() / ds.d, ds.d);
    r.keys = matrix_view<const float>(sk.data(), ns, ds.d);
    r.values = matrix_view<const float>(sv.data(), ns, ds.d);
    r.scale = scales[scales.size() / 2];
    const auto res = tuner::tune(r);
    std::fprintf(stderr, "[%s] tuner, median error %.3g: K=%d L=%d m=%d (met: %s), expected fraction %.4f, predicted "
                 "error %.4f, measured on the sample %.4f, index %.1f MB\n", ds.name.c_str(), o.target_error,
                 res.params.K, res.params.L, res.params.m, res.met ? "yes" : "no", res.expected_fraction,
                 res.predicted_error, res.measured_error, static_cast<double>(res.index_bytes) / 1e6);
    cs.push_back({"tuned-error@" + std::to_string(o.target_error).substr(0, 5), res.params});
  }
  return cs;
}

void evaluate(dataset& ds, const options& o, std::vector<row>& rows, std::FILE* entropy_csv, std::FILE* pq_csv) {
  const auto t0 = clock_type::now();
  std::fprintf(stderr, "[%s] %zu keys x %zu KV heads, head_dim %zu, %zu queries: exact attention...\n",
               ds.name.c_str(), ds.n, ds.kv_heads, ds.d, ds.queries.size());
  compute_exact(ds, o);
  for (std::size_t i = 0; i < ds.queries.size(); ++i)
    std::fprintf(entropy_csv, "%s,%zu,%.6f,%.6f,%.5f\n", ds.name.c_str(), i, ds.entropy[i],
                 ds.entropy[i] / std::log(static_cast<double>(ds.n)),
                 ds.queries[i].scale > 0 ? 1.0 / ds.queries[i].scale : std::sqrt(static_cast<double>(ds.d)));
  const auto configs = make_configs(ds, o);
  const std::size_t Q = ds.queries.size();
  for (std::size_t c = 0; c < configs.size(); ++c) {
    const auto& cf = configs[c];
    std::vector<double> errs, keys;
    for (int s = 0; s < o.seeds; ++s) {
      lsh_params lp = cf.lp;
      lp.seed = 1000 + static_cast<std::uint64_t>(s);
      std::fprintf(stderr, "[%s %.0fs] config %zu/%zu (%s K=%d L=%d m=%d) seed %d/%d: building index...\n",
                   ds.name.c_str(), elapsed(t0), c + 1, configs.size(), cf.name.c_str(), lp.K, lp.L, lp.m, s + 1,
                   o.seeds);
      const auto idx = build_indexes(ds, lp, o.threads);
      std::vector<double> e(Q), k(Q);
      parallel_for(Q, o.threads, [&](std::size_t i) {
        const auto [err, nk] = run_one(ds, i, estimator::lsh{}, &idx);
        e[i] = err;
        k[i] = static_cast<double>(nk);
      });
      errs.insert(errs.end(), e.begin(), e.end());
      keys.insert(keys.end(), k.begin(), k.end());
    }
    rows.push_back(summarise(ds, "lsh", cf.name, cf.lp, 0.0, errs, keys));
    // Per query (mean over seeds; errs is [seed][query]) for the chosen setting.
    auto per_query = [&](const char* est, const std::vector<double>& v) {
      if (cf.name != o.per_query) return;
      const std::size_t runs = v.size() / Q;
      for (std::size_t i = 0; i < Q; ++i) {
        double m = 0.0;
        for (std::size_t r = 0; r < runs; ++r) m += v[r * Q + i] / static_cast<double>(runs);
        std::fprintf(pq_csv, "%s,%s,%s,%zu,%.5f,%.6f\n", ds.name.c_str(), est, cf.name.c_str(), i, ds.entropy[i], m);
      }
    };
    per_query("lsh", errs);
    const auto kk = static_cast<std::size_t>(std::max(1.0, std::round(rows.back().keys_mean)));
    std::fprintf(stderr, "[%s %.0fs]   lsh: %.0f keys (%.4f), median error %.4f, p95 %.4f; baselines at k = %zu...\n",
                 ds.name.c_str(), elapsed(t0), rows.back().keys_mean, rows.back().fraction, rows.back().err_median,
                 rows.back().err_p95, kk);
    for (const char* est : {"topk", "uniform", "oracle"}) {
      const int seeds = std::string(est) == "topk" ? 1 : o.seeds;
      std::vector<double> be, bk;
      for (int s = 0; s < seeds; ++s) {
        std::vector<double> e(Q), k(Q);
        const auto seed = 5000 + static_cast<std::uint64_t>(s) * 7919 + c;
        parallel_for(Q, o.threads, [&](std::size_t i) {
          std::pair<double, std::size_t> r;
          if (std::string(est) == "topk") r = run_one(ds, i, estimator::topk{kk});
          else if (std::string(est) == "uniform") r = run_one(ds, i, estimator::uniform{kk, seed + i});
          else r = run_one(ds, i, estimator::oracle_sampling{kk, seed + i});
          e[i] = r.first;
          k[i] = static_cast<double>(r.second);
        });
        be.insert(be.end(), e.begin(), e.end());
        bk.insert(bk.end(), k.begin(), k.end());
      }
      rows.push_back(summarise(ds, est, cf.name, cf.lp, static_cast<double>(kk), be, bk));
      per_query(est, be);
    }
  }
  std::fprintf(stderr, "[%s] done in %.0f s\n", ds.name.c_str(), elapsed(t0));
}

void write_charts(const options& o, const std::vector<std::string>& sets) {
  const std::string gp = o.out + "/charts.gp";
  std::FILE* f = std::fopen(gp.c_str(), "w");
  if (!f) throw std::runtime_error("cannot write " + gp);
  std::fprintf(f, "# Written by lshattn_eval. Run in this folder: gnuplot charts.gp\n"
                  "set datafile separator ','\nset terminal svg size 640,420 font 'sans,11' background rgb 'white'\n"
                  "set termoption noenhanced\nset key top right\nset grid\nset logscale xy\nset format '%g'\n");
  const char* est[] = {"lsh", "topk", "uniform", "oracle"};
  const char* label[] = {"LSH (MagicPIG)", "oracle top-k", "uniform", "oracle sampling"};
  const char* style[] = {"pt 7 lc rgb '#d62728'", "pt 5 lc rgb '#1f77b4'", "pt 9 lc rgb '#7f7f7f'",
                         "pt 13 lc rgb '#2ca02c'"};
  for (const auto& s : sets) {
    for (const char* stat : {"median", "p95"}) {
      const int col = std::string(stat) == "median" ? 12 : 13;
      std::fprintf(f, "set output '%s_error_%s.svg'\nset title '%s: relative output error (%s) vs keys sampled'\n"
                      "set xlabel 'fraction of the sampled range read'\nset ylabel '|o_hat - o| / |o|'\nplot ",
                   s.c_str(), stat, s.c_str(), stat);
      for (int e = 0; e < 4; ++e)
        std::fprintf(f, "%s\"< awk -F, '$1==\\\"%s\\\" && $2==\\\"%s\\\"' results.csv\" using 10:%d with points %s "
                        "ps 0.9 title '%s'",
                     e ? ", " : "", s.c_str(), est[e], col, style[e], label[e]);
      std::fprintf(f, "\n");
    }
    std::fprintf(f, "unset logscale\nset output '%s_entropy.svg'\nset title '%s: attention entropy per query (nats; "
                    "ln n = %%.1f)'\nset xlabel 'entropy (nats)'\nset ylabel 'queries'\nset style fill solid 0.6\n"
                    "bw = 0.5\nbin(x) = bw * floor(x / bw) + bw / 2\n"
                    "plot \"< awk -F, '$1==\\\"%s\\\"' entropy.csv\" using (bin($3)):(1.0) smooth frequency "
                    "with boxes lc rgb '#1f77b4' notitle\nset logscale xy\n",
                 s.c_str(), s.c_str(), s.c_str());
    std::fprintf(f, "set output '%s_error_by_entropy.svg'\nset title '%s: error per query vs its attention entropy (%s)'\n"
                    "set xlabel 'attention entropy (nats)'\nset ylabel '|o_hat - o| / |o| (mean over seeds)'\n"
                    "unset logscale x\nset logscale y\nset key bottom right\nplot ",
                 s.c_str(), s.c_str(), o.per_query.c_str());
    for (int e = 0; e < 4; ++e)
      std::fprintf(f, "%s\"< awk -F, '$1==\\\"%s\\\" && $2==\\\"%s\\\"' per_query.csv\" using 5:6 with points %s ps 0.8 "
                      "title '%s'",
                   e ? ", " : "", s.c_str(), est[e], style[e], label[e]);
    std::fprintf(f, "\nset key top right\nset logscale xy\n");
  }
  std::fclose(f);
  // The entropy title holds a printf-style %.1f for ln n: fill it per set.
  std::ifstream in(gp);
  std::stringstream ss;
  ss << in.rdbuf();
  std::string text = ss.str();
  for (const auto& s : sets) {
    const std::size_t n = std::stoul(s.substr(s.find_first_of("0123456789")));
    char buf[32];
    std::snprintf(buf, sizeof buf, "%.1f", std::log(static_cast<double>(n)));
    const auto pos = text.find("%.1f");
    if (pos != std::string::npos) text.replace(pos, 4, buf);
  }
  std::ofstream(gp) << text;
  const std::string cmd = "cd '" + o.out + "' && gnuplot charts.gp";
  if (std::system(cmd.c_str()) != 0) std::fprintf(stderr, "gnuplot failed or is missing: the CSVs are written; charts.gp can be run later\n");
}

}  // namespace

int main(int argc, char** argv) {
  try {
    options o;
    const char* usage =
        "usage: lshattn_eval [--data DIR] [--out DIR] [--sets glove:N,synthetic:N] [--queries Q] [--seeds S]\n"
        "                    [--threads T] [--grid K:L:m,...] [--budgets f1,f2,...] [--no-charts] [--append]\n"
        "                    [--target-error E] [--tune-only]";
    const bool run = lshattn_examples::parse_args(argc, argv, usage, [&](const std::string& a, const auto& next) {
      if (a == "--data") o.data = next();
      else if (a == "--out") o.out = next();
      else if (a == "--sets") o.sets = next();
      else if (a == "--queries") o.queries = std::stoul(next());
      else if (a == "--seeds") o.seeds = std::stoi(next());
      else if (a == "--threads") o.threads = static_cast<unsigned>(std::stoul(next()));
      else if (a == "--grid") o.grid = next();
      else if (a == "--budgets") o.budgets = next();
      else if (a == "--no-charts") o.charts = false;
      else if (a == "--append") o.append = true;
      else if (a == "--tune-only") o.tune_only = true;
      else if (a == "--per-query") o.per_query = next();
      else if (a == "--target-error") o.target_error = std::stod(next());
      else return false;
      return true;
    });
    if (!run) return 0;
    if (o.tune_only) {
      for (const auto& spec : split(o.sets, ',')) {
        const auto f = split(spec, ':');
        const std::size_t n = f.size() > 1 ? std::stoul(f[1]) : 16384;
        const dataset ds = f[0] == "glove" ? make_glove(o, n) : make_synthetic(o, n);
        make_configs(ds, o);  // prints the tuner's choices
      }
      return 0;
    }
    std::filesystem::create_directories(o.out);
    const std::string results = o.out + "/results.csv", entropies = o.out + "/entropy.csv";
    const bool fresh = !o.append || !std::filesystem::exists(results);
    std::FILE* rf = std::fopen(results.c_str(), fresh ? "w" : "a");
    std::FILE* ef = std::fopen(entropies.c_str(), fresh ? "w" : "a");
    std::FILE* pf = std::fopen((o.out + "/per_query.csv").c_str(), fresh ? "w" : "a");
    if (!rf || !ef || !pf) throw std::runtime_error("cannot write into " + o.out);
    if (fresh) {
      std::fprintf(rf, "set,estimator,config,K,L,m,k,units,keys_mean,fraction,err_mean,err_median,err_p95\n");
      std::fprintf(ef, "set,query,entropy_nats,entropy_over_ln_n,temperature\n");
    }
    std::fseek(pf, 0, SEEK_END);
    if (std::ftell(pf) == 0) std::fprintf(pf, "set,estimator,config,query,entropy_nats,error\n");
    std::vector<std::string> names;
    for (const auto& spec : split(o.sets, ',')) {
      const auto f = split(spec, ':');
      const std::size_t n = f.size() > 1 ? std::stoul(f[1]) : 16384;
      dataset ds = f[0] == "glove" ? make_glove(o, n) : f[0] == "synthetic" ? make_synthetic(o, n)
                                                                          : throw std::runtime_error("unknown set " + f[0]);
      std::vector<row> rows;
      evaluate(ds, o, rows, ef, pf);
      for (const auto& r : rows)
        std::fprintf(rf, "%s,%s,%s,%d,%d,%d,%.0f,%zu,%.2f,%.6f,%.6f,%.6f,%.6f\n", r.set.c_str(), r.estimator.c_str(),
                     r.config.c_str(), r.K, r.L, r.m, r.k, r.units, r.keys_mean, r.fraction, r.err_mean, r.err_median,
                     r.err_p95);
      std::fflush(rf);
      std::fflush(ef);
      std::fflush(pf);
      names.push_back(ds.name);
    }
    std::fclose(rf);
    std::fclose(ef);
    std::fclose(pf);
    if (o.charts) {
      // Chart every set in results.csv, including those of earlier --append runs.
      std::ifstream in(results);
      std::string line;
      std::getline(in, line);
      names.clear();
      while (std::getline(in, line)) {
        const std::string set = line.substr(0, line.find(','));
        if (std::find(names.begin(), names.end(), set) == names.end()) names.push_back(set);
      }
      write_charts(o, names);
    }
    std::fprintf(stderr, "wrote %s, %s\n", results.c_str(), entropies.c_str());
    return 0;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "lshattn_eval: %s\n", e.what());
    return 1;
  }
}
