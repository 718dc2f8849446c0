// The shortest complete lshattn program: index a KV cache once (prefill),
// run one decode step with the MagicPIG estimator, and get every query head's
// output together with its log-sum-exp, ready to merge with attention that
// was computed elsewhere (another device, another shard, the new token).
#include <cmath>
#include <cstdio>
#include <vector>

#include <lshattn/lshattn.hpp>

int main() {
  const std::size_t tokens = 8192, dim = 128, q_heads = 8, kv_heads = 2;  // GQA 4:1

  // Caller-owned buffers: keys and values [kv_heads, tokens, dim], queries [q_heads, dim].
  // The seeded synthetic workload fills them here; any float/bf16/fp16 memory works.
  lshattn::workload::layer_data w = lshattn::workload::anchor({tokens, q_heads, kv_heads, dim, 7});
  const lshattn::cache_view<const float> keys(w.keys.data(), kv_heads, tokens, dim);
  const lshattn::cache_view<const float> values(w.values.data(), kv_heads, tokens, dim);
  const lshattn::matrix_view<const float> queries(w.queries.data(), q_heads, dim);

  // Prefill: SimHash tables (K=10, L=150, m=2 by default) over the middle of
  // the cache; the first `sink` and last `window` tokens are attended exactly.
  lshattn::decode_params params;  // sink 4, window 64, scale 1/sqrt(dim), natural-log LSE
  lshattn::lsh_index<> index(dim, kv_heads, lshattn::lsh_params{});
  index.build(keys, params.sink, tokens - params.window);
  // (During decode, index.sync(keys, params) indexes tokens as they leave the window.)

  // Decode: output [q_heads, dim] and lse [q_heads].
  std::vector<float> out(q_heads * dim), lse(q_heads);
  lshattn::decode_stats stats;
  const lshattn::decode_request<float, float> request{
      queries, keys, values, &index, lshattn::matrix_view<float>(out.data(), q_heads, dim), lse, &stats};
  lshattn::decode(lshattn::reference, lshattn::estimator::lsh{}, params, request);

  std::printf("sampled %.0f of %zu keys per query head; head 0: lse %.4f, out[0..3] = %.4f %.4f %.4f %.4f\n",
              static_cast<double>(stats.sampled_keys) / q_heads, tokens, lse[0], out[0], out[1], out[2], out[3]);

  // Merge-ready: attention over a disjoint key set (here the token being
  // generated, whose key and value are not in the cache yet) is a state
  // (output, lse) too, and two states merge exactly into attention over the union.
  std::vector<float> k_new(w.keys.end() - dim, w.keys.end());  // stand-ins for the new token's K and V
  std::vector<double> v_new(w.values.end() - dim, w.values.end());
  const double s_new = lshattn::estimator::score(queries.row(0), k_new.data(), dim, params.effective_scale(dim));
  std::vector<double> o(out.begin(), out.begin() + dim);
  double a = lse[0];
  lshattn::merge_state(o.data(), a, v_new.data(), s_new, dim);  // one key: output v_new, lse = its score
  std::printf("with the new token merged in: lse %.4f, its weight %.2e, out[0] = %.4f\n", a, std::exp(s_new - a),
              o[0]);
  return std::isfinite(a) ? 0 : 1;
}
