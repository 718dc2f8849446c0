#pragma once
// Seeded synthetic decode workloads, for the demo, the benchmarks and people
// who test estimators. All values come from Philox normals
// (random/normal.hpp), so a seed gives the same workload everywhere.
//
// llm_like: what real LLM attention looks like, per KV head h:
//   - a large common offset shared by all keys: o_h ~ offset * N(0, I);
//   - clusters: key t belongs to cluster z_t (one of `clusters`), centre c_z ~ N(0, I);
//       k_t = o_h + c_{z_t} + noise * N(0, I);
//   - attention sinks: the first `sinks` keys are o_h + sink_strength * s_h, with s_h
//     a unit-variance direction that every query of the group also points to a little;
//   - recency: key t also gets recency * exp(-(n - 1 - t) / recency_tokens) * s_h;
//   - values: v_t = m_{z_t} + N(0, I), a per-cluster mean m_z ~ N(0, I), so the
//     output depends on which clusters the head attends to.
//   Query head j of the group aims at a random cluster centre plus a little of s_h,
//   scaled by a per-head sharpness beta_j spaced geometrically from beta_max (sparse,
//   peaky heads) down to beta_min (flat heads): q = beta_j * sqrt(d) * unit(c + 0.3 s_h + e),
//   with e ~ N(0, I/d).
//
// anchor: the workload of ../shared/docs/method.md "Anchors measured" on which
// the reference system was timed: keys N(0, I) + 2 * a shared N(0, I) offset;
// each query N(0, I) plus half its norm along one random key of its KV head;
// values N(0, I).

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <vector>

#include "lshattn/core/error.hpp"
#include "lshattn/random/normal.hpp"
#include "lshattn/random/philox.hpp"

namespace lshattn::workload {

/// One layer's decode inputs in float32: keys and values [kv_heads, tokens, dim],
/// queries [q_heads, dim], contiguous.
struct layer_data {
  std::size_t q_heads = 0, kv_heads = 0, tokens = 0, dim = 0;
  std::vector<float> keys, values, queries;
};

struct llm_like_params {
  std::size_t tokens = 32768, q_heads = 32, kv_heads = 8, dim = 128;
  std::uint64_t seed = 2024;
  std::size_t clusters = 64;
  double offset = 3.0;          ///< scale of the common key offset
  double noise = 1.0;           ///< within-cluster spread
  std::size_t sinks = 4;
  double sink_strength = 4.0;
  double recency = 2.0;
  double recency_tokens = 256.0;
  double beta_max = 1.0;        ///< sharpness of the sparsest head
  double beta_min = 0.15;       ///< sharpness of the flattest head
};

namespace detail {
// A sequential normal stream: element i of (seed, stream).
struct normals {
  std::uint64_t seed, stream, next = 0;
  double spare = 0.0;
  double operator()() {
    const std::uint64_t i = next++;
    if (i & 1) return spare;
    const std::uint64_t pair = i >> 1;
    const auto z = random::normal_pair(random::philox4x32(
        {static_cast<std::uint32_t>(pair), static_cast<std::uint32_t>(pair >> 32), static_cast<std::uint32_t>(stream),
         static_cast<std::uint32_t>(stream >> 32)},
        random::key_of(seed)));
    spare = z.second;
    return z.first;  // element i of (seed, stream), as random::normal_at gives it
  }
};
inline void check_shape(std::size_t tokens, std::size_t qh, std::size_t kvh, std::size_t dim) {
  LSHATTN_REQUIRE(tokens >= 1, invalid_argument, "tokens", "tokens = ", tokens, " must be >= 1");
  LSHATTN_REQUIRE(dim >= 1, invalid_argument, "dim", "dim = ", dim, " must be >= 1");
  LSHATTN_REQUIRE(kvh >= 1 && qh % kvh == 0 && qh >= kvh, invalid_argument, "q_heads", "q_heads = ", qh,
                  " must be a positive multiple of kv_heads = ", kvh);
}
}  // namespace detail

/// The LLM-like workload described at the top of this file.
inline layer_data llm_like(const llm_like_params& p) {
  detail::check_shape(p.tokens, p.q_heads, p.kv_heads, p.dim);
  LSHATTN_REQUIRE(p.clusters >= 1, invalid_argument, "clusters", "clusters = ", p.clusters, " must be >= 1");
  layer_data w{p.q_heads, p.kv_heads, p.tokens, p.dim, {}, {}, {}};
  const std::size_t n = p.tokens, d = p.dim, g = p.q_heads / p.kv_heads;
  w.keys.resize(p.kv_heads * n * d);
  w.values.resize(p.kv_heads * n * d);
  w.queries.resize(p.q_heads * d);
  for (std::size_t h = 0; h < p.kv_heads; ++h) {
    detail::normals z{p.seed, 0x4b560000u + h};
    std::vector<double> offset(d), sink(d), centres(p.clusters * d), vmeans(p.clusters * d);
    for (auto& x : offset) x = p.offset * z();
    for (auto& x : sink) x = z();
    for (auto& x : centres) x = z();
    for (auto& x : vmeans) x = z();
    random::philox_engine pick(p.seed, 0x5a000000u + h);
    float* K = w.keys.data() + h * n * d;
    float* V = w.values.data() + h * n * d;
    for (std::size_t t = 0; t < n; ++t) {
      const std::size_t c = pick.below(p.clusters);
      const double rec = p.recency * std::exp(-static_cast<double>(n - 1 - t) / p.recency_tokens);
      const bool is_sink = t < p.sinks;
      for (std::size_t j = 0; j < d; ++j) {
        double k = offset[j] + rec * sink[j];
        k += is_sink ? p.sink_strength * sink[j] : centres[c * d + j] + p.noise * z();
        K[t * d + j] = static_cast<float>(k);
        V[t * d + j] = static_cast<float>(vmeans[c * d + j] + z());
      }
    }
    for (std::size_t j = 0; j < g; ++j) {
      const std::size_t head = h * g + j;
      const double frac = p.q_heads > 1 ? static_cast<double>(head) / static_cast<double>(p.q_heads - 1) : 0.0;
      const double beta = p.beta_max * std::pow(p.beta_min / p.beta_max, frac);
      const std::size_t c = pick.below(p.clusters);
      std::vector<double> q(d);
      double norm = 0.0;
      for (std::size_t i = 0; i < d; ++i) {
        q[i] = centres[c * d + i] + 0.3 * sink[i] + z() / std::sqrt(static_cast<double>(d));
        norm += q[i] * q[i];
      }
      norm = std::sqrt(norm);
      for (std::size_t i = 0; i < d; ++i)
        w.queries[head * d + i] = static_cast<float>(beta * std::sqrt(static_cast<double>(d)) * q[i] / norm);
    }
  }
  return w;
}

struct anchor_params {
  std::size_t tokens = 131072, q_heads = 32, kv_heads = 8, dim = 128;
  std::uint64_t seed = 2026;
};

/// The method.md anchor workload described at the top of this file.
inline layer_data anchor(const anchor_params& p) {
  detail::check_shape(p.tokens, p.q_heads, p.kv_heads, p.dim);
  layer_data w{p.q_heads, p.kv_heads, p.tokens, p.dim, {}, {}, {}};
  const std::size_t n = p.tokens, d = p.dim, g = p.q_heads / p.kv_heads;
  w.keys.resize(p.kv_heads * n * d);
  w.values.resize(p.kv_heads * n * d);
  w.queries.resize(p.q_heads * d);
  detail::normals shared{p.seed, 0x41000000u};
  std::vector<double> offset(d);
  for (auto& x : offset) x = 2.0 * shared();
  for (std::size_t h = 0; h < p.kv_heads; ++h) {
    float* K = w.keys.data() + h * n * d;
    float* V = w.values.data() + h * n * d;
    random::fill_normal(K, n * d, p.seed, 0x41100000u + h);
    random::fill_normal(V, n * d, p.seed, 0x41200000u + h);
    for (std::size_t t = 0; t < n; ++t)
      for (std::size_t j = 0; j < d; ++j) K[t * d + j] = static_cast<float>(K[t * d + j] + offset[j]);
    random::philox_engine pick(p.seed, 0x41300000u + h);
    detail::normals z{p.seed, 0x41400000u + h};
    for (std::size_t j = 0; j < g; ++j) {
      float* q = w.queries.data() + (h * g + j) * d;
      const float* k = K + pick.below(n) * d;
      double qn = 0.0, kn = 0.0;
      for (std::size_t i = 0; i < d; ++i) {
        q[i] = static_cast<float>(z());
        qn += static_cast<double>(q[i]) * q[i];
        kn += static_cast<double>(k[i]) * k[i];
      }
      const double a = 0.5 * std::sqrt(qn) / std::sqrt(kn);
      for (std::size_t i = 0; i < d; ++i) q[i] = static_cast<float>(q[i] + a * k[i]);
    }
  }
  return w;
}

}  // namespace lshattn::workload
