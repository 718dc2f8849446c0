#pragma once
// A small fp32 CPU forward pass for Llama-architecture models stored in
// llama2.c's legacy (v0) checkpoint format, and its tokenizer, written for
// lshattn's quality evaluation: every attention call goes through
// lshattn::decode with a chosen estimator (exact, lsh, topk, uniform, oracle
// sampling), with grouped-query attention, so the model's perplexity and greedy
// tokens measure what an estimator does to a real network.
//
// Format (../shared/data/README.md): 7 int32 (dim, hidden_dim, n_layers,
// n_heads, n_kv_heads, vocab_size (negative: separate classifier), seq_len),
// then fp32 tensors: token embedding [vocab, dim], rms_att [layers, dim],
// wq [layers, dim, dim], wk [layers, kv_dim, dim], wv [layers, kv_dim, dim],
// wo [layers, dim, dim], rms_ffn [layers, dim], w1 [layers, hidden, dim],
// w2 [layers, dim, hidden], w3 [layers, hidden, dim], rms_final [dim], then the
// legacy RoPE tables (2 x seq_len x head_dim/2, skipped) and, if vocab_size < 0,
// the classifier [vocab, dim]. Matrices are [out, in] row-major.
// The architecture: pre-norm RMSNorm (eps 1e-5), RoPE (base 10000, adjacent
// pairs), SwiGLU feed-forward, tied classifier (Touvron et al. 2023).

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <fstream>
#include <map>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

#include <lshattn/lshattn.hpp>

namespace llama2 {

struct config {
  int dim = 0, hidden_dim = 0, n_layers = 0, n_heads = 0, n_kv_heads = 0, vocab_size = 0, seq_len = 0;
  [[nodiscard]] int head_dim() const { return dim / n_heads; }
  [[nodiscard]] int kv_dim() const { return head_dim() * n_kv_heads; }
};

/// The checkpoint's weights, owned.
struct weights {
  config cfg;
  std::vector<float> emb, rms_att, wq, wk, wv, wo, rms_ffn, w1, w2, w3, rms_final, wcls_own;
  const float* wcls = nullptr;
};

inline weights load_weights(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  if (!f) throw std::runtime_error("cannot open model " + path + " (is ../shared/data present?)");
  weights w;
  config& c = w.cfg;
  std::int32_t h[7];
  f.read(reinterpret_cast<char*>(h), sizeof h);
  if (!f) throw std::runtime_error(path + ": truncated header");
  c = {h[0], h[1], h[2], h[3], h[4], h[5] < 0 ? -h[5] : h[5], h[6]};
  const bool shared = h[5] > 0;
  if (c.dim <= 0 || c.n_heads <= 0 || c.dim % c.n_heads || c.n_kv_heads <= 0 || c.n_heads % c.n_kv_heads ||
      c.n_layers <= 0 || c.vocab_size <= 0 || c.seq_len <= 0 || c.hidden_dim <= 0)
    throw std::runtime_error(path + ": implausible header");
  const auto L = static_cast<std::size_t>(c.n_layers), D = static_cast<std::size_t>(c.dim),
             KV = static_cast<std::size_t>(c.kv_dim()), H = static_cast<std::size_t>(c.hidden_dim),
             V = static_cast<std::size_t>(c.vocab_size);
  auto rd = [&](std::vector<float>& v, std::size_t n) {
    v.resize(n);
    f.read(reinterpret_cast<char*>(v.data()), static_cast<std::streamsize>(n * sizeof(float)));
    if (!f) throw std::runtime_error(path + ": truncated weights");
  };
  rd(w.emb, V * D);
  rd(w.rms_att, L * D);
  rd(w.wq, L * D * D);
  rd(w.wk, L * KV * D);
  rd(w.wv, L * KV * D);
  rd(w.wo, L * D * D);
  rd(w.rms_ffn, L * D);
  rd(w.w1, L * H * D);
  rd(w.w2, L * D * H);
  rd(w.w3, L * H * D);
  rd(w.rms_final, D);
  std::vector<float> skip;
  rd(skip, static_cast<std::size_t>(c.seq_len) * static_cast<std::size_t>(c.head_dim()));  // freq_cis real + imag
  if (shared) {
    w.wcls = w.emb.data();
  } else {
    rd(w.wcls_own, V * D);
    w.wcls = w.wcls_own.data();
  }
  return w;
}

/// llama2.c's tokenizer: scored pieces, byte fallback <0xXX>, greedy pair merges.
struct tokenizer {
  std::vector<std::string> vocab;
  std::vector<float> scores;
  std::map<std::string, int> lookup;

  static tokenizer load(const std::string& path, int vocab_size) {
    std::ifstream f(path, std::ios::binary);
    if (!f) throw std::runtime_error("cannot open tokenizer " + path + " (is ../shared/data present?)");
    tokenizer t;
    std::int32_t max_len = 0;
    f.read(reinterpret_cast<char*>(&max_len), 4);
    for (int i = 0; i < vocab_size; ++i) {
      float s = 0;
      std::int32_t len = 0;
      f.read(reinterpret_cast<char*>(&s), 4);
      f.read(reinterpret_cast<char*>(&len), 4);
      if (!f || len < 0 || len > 1 << 16) throw std::runtime_error(path + ": truncated or corrupt");
      std::string piece(static_cast<std::size_t>(len), '\0');
      f.read(piece.data(), len);
      t.vocab.push_back(piece);
      t.scores.push_back(s);
      t.lookup.emplace(piece, i);
    }
    if (!f) throw std::runtime_error(path + ": truncated");
    return t;
  }

  /// The text of token `tok` following `prev` (a space after BOS is dropped; <0xXX> is a byte).
  [[nodiscard]] std::string decode(int prev, int tok) const {
    std::string p = vocab.at(static_cast<std::size_t>(tok));
    if (prev == 1 && !p.empty() && p[0] == ' ') p.erase(0, 1);
    unsigned byte = 0;
    if (p.size() == 6 && std::sscanf(p.c_str(), "<0x%02X>", &byte) == 1) return std::string(1, static_cast<char>(byte));
    return p;
  }

  /// Tokens of text, with BOS (1) first and llama2.c's dummy-prefix space.
  [[nodiscard]] std::vector<int> encode(const std::string& text) const {
    std::vector<int> t{1};
    if (text.empty()) return t;
    std::vector<int> toks;
    const std::string s = " " + text;
    for (std::size_t i = 0; i < s.size();) {
      std::size_t len = 1;  // one UTF-8 code point
      while (i + len < s.size() && (static_cast<unsigned char>(s[i + len]) & 0xC0) == 0x80 && len < 4) ++len;
      const auto it = lookup.find(s.substr(i, len));
      if (it != lookup.end()) {
        toks.push_back(it->second);
      } else {
        for (std::size_t j = 0; j < len; ++j) toks.push_back(static_cast<unsigned char>(s[i + j]) + 3);
      }
      i += len;
    }
    for (;;) {  // merge the best-scoring adjacent pair until none exists
      float best = -1e30f;
      int best_id = -1;
      std::size_t best_i = 0;
      for (std::size_t i = 0; i + 1 < toks.size(); ++i) {
        const auto it = lookup.find(vocab[static_cast<std::size_t>(toks[i])] + vocab[static_cast<std::size_t>(toks[i + 1])]);
        if (it != lookup.end() && scores[static_cast<std::size_t>(it->second)] > best) {
          best = scores[static_cast<std::size_t>(it->second)];
          best_id = it->second;
          best_i = i;
        }
      }
      if (best_id < 0) break;
      toks[best_i] = best_id;
      toks.erase(toks.begin() + static_cast<std::ptrdiff_t>(best_i) + 1);
    }
    t.insert(t.end(), toks.begin(), toks.end());
    return t;
  }
};

/// Which estimator the attention uses, with its parameters.
struct attention_config {
  enum class kind { exact, lsh, topk, uniform, oracle } method = kind::exact;
  lshattn::lsh_params lsh{};       ///< K, L, m, seed for kind::lsh
  std::size_t k = 0;               ///< keys per head for topk, uniform, oracle
  std::uint64_t seed = 1;          ///< for uniform and oracle
  /// Scaled down from MagicPIG's 4 + 64 for a 512-token context with head_dim 8:
  /// the BOS sink and the last 8 tokens (docs/quality.md explains the choice).
  lshattn::decode_params params{1, 8};
  /// The index is built once the sampled range holds this many tokens (before:
  /// exact attention), then rebuilt (re-centred) each time the range doubles.
  std::size_t min_range = 16;
};

/// One sequence's state: KV caches per layer and, for kind::lsh, an index per layer.
class model {
 public:
  model(const weights& w, attention_config a) : w_(w), a_(std::move(a)) {
    const config& c = w.cfg;
    const auto S = static_cast<std::size_t>(c.seq_len), KV = static_cast<std::size_t>(c.kv_dim());
    kc_.assign(static_cast<std::size_t>(c.n_layers), std::vector<float>(S * KV));
    vc_ = kc_;
    index_.resize(static_cast<std::size_t>(c.n_layers));
    built_at_.assign(static_cast<std::size_t>(c.n_layers), 0);
  }

  /// Keys touched so far: dense + sampled, summed over query heads and layers.
  [[nodiscard]] const lshattn::decode_stats& stats() const { return stats_; }
  /// Attention calls (query head x layer x position) so far.
  [[nodiscard]] std::size_t head_calls() const { return head_calls_; }
  /// Keys that exact attention would have read: sum over calls of the context length.
  [[nodiscard]] std::size_t keys_available() const { return keys_available_; }

  /// Runs token `tok` at position `pos` (positions must be fed 0, 1, 2, ...);
  /// returns the logits [vocab].
  const std::vector<float>& forward(int tok, int pos) {
    const config& c = w_.cfg;
    const auto D = static_cast<std::size_t>(c.dim), KV = static_cast<std::size_t>(c.kv_dim()),
               H = static_cast<std::size_t>(c.hidden_dim), hd = static_cast<std::size_t>(c.head_dim()),
               nkv = static_cast<std::size_t>(c.n_kv_heads), S = static_cast<std::size_t>(c.seq_len);
    if (pos < 0 || pos >= c.seq_len) throw std::runtime_error("position out of range");
    x_.assign(w_.emb.begin() + static_cast<std::ptrdiff_t>(static_cast<std::size_t>(tok) * D),
              w_.emb.begin() + static_cast<std::ptrdiff_t>((static_cast<std::size_t>(tok) + 1) * D));
    xb_.resize(D);
    q_.resize(D);
    att_.resize(D);
    hb_.resize(H);
    hb2_.resize(H);
    std::vector<float> k(KV), v(KV), tmp(D);
    const auto n = static_cast<std::size_t>(pos) + 1;
    for (std::size_t l = 0; l < static_cast<std::size_t>(c.n_layers); ++l) {
      rmsnorm(xb_.data(), x_.data(), w_.rms_att.data() + l * D, D);
      matmul(q_.data(), xb_.data(), w_.wq.data() + l * D * D, D, D);
      matmul(k.data(), xb_.data(), w_.wk.data() + l * KV * D, D, KV);
      matmul(v.data(), xb_.data(), w_.wv.data() + l * KV * D, D, KV);
      rope(q_.data(), D, hd, pos);
      rope(k.data(), KV, hd, pos);
      // Cache layout [kv_heads, seq_len, head_dim]: contiguous per head, as lshattn's cache_view expects.
      for (std::size_t h = 0; h < nkv; ++h)
        for (std::size_t j = 0; j < hd; ++j) {
          kc_[l][(h * S + n - 1) * hd + j] = k[h * hd + j];
          vc_[l][(h * S + n - 1) * hd + j] = v[h * hd + j];
        }
      attend(l, n);
      matmul(tmp.data(), att_.data(), w_.wo.data() + l * D * D, D, D);
      for (std::size_t i = 0; i < D; ++i) x_[i] += tmp[i];
      rmsnorm(xb_.data(), x_.data(), w_.rms_ffn.data() + l * D, D);
      matmul(hb_.data(), xb_.data(), w_.w1.data() + l * H * D, D, H);
      matmul(hb2_.data(), xb_.data(), w_.w3.data() + l * H * D, D, H);
      for (std::size_t i = 0; i < H; ++i) hb_[i] = hb_[i] / (1.0f + std::exp(-hb_[i])) * hb2_[i];
      matmul(tmp.data(), hb_.data(), w_.w2.data() + l * D * H, H, D);
      for (std::size_t i = 0; i < D; ++i) x_[i] += tmp[i];
    }
    rmsnorm(x_.data(), x_.data(), w_.rms_final.data(), D);
    logits_.resize(static_cast<std::size_t>(c.vocab_size));
    matmul(logits_.data(), x_.data(), w_.wcls, D, static_cast<std::size_t>(c.vocab_size));
    return logits_;
  }

  /// The attention outputs of the last forward's last layer call (for tests).
  [[nodiscard]] const std::vector<float>& last_attention() const { return att_; }

 private:
  void attend(std::size_t l, std::size_t n) {
    const config& c = w_.cfg;
    const auto hd = static_cast<std::size_t>(c.head_dim()), nh = static_cast<std::size_t>(c.n_heads),
               nkv = static_cast<std::size_t>(c.n_kv_heads), S = static_cast<std::size_t>(c.seq_len);
    // [kv_heads, seq_len, hd] with only the first n tokens live.
    lshattn::cache_view<const float> keys(kc_[l].data(), nkv, n, hd, S * hd, hd);
    lshattn::cache_view<const float> values(vc_[l].data(), nkv, n, hd, S * hd, hd);
    lshattn::decode_request<float, float> r{lshattn::matrix_view<const float>(q_.data(), nh, hd), keys, values,
                                            nullptr, lshattn::matrix_view<float>(att_.data(), nh, hd)};
    r.stats = &stats_;
    head_calls_ += nh;
    keys_available_ += nh * n;
    const auto& p = a_.params;
    using K = attention_config::kind;
    switch (a_.method) {
      case K::exact: lshattn::decode(lshattn::reference, lshattn::estimator::exact{}, p, r); break;
      case K::topk: lshattn::decode(lshattn::reference, lshattn::estimator::topk{a_.k}, p, r); break;
      case K::uniform: lshattn::decode(lshattn::reference, lshattn::estimator::uniform{a_.k, a_.seed + n * 131 + l}, p, r); break;
      case K::oracle:
        lshattn::decode(lshattn::reference, lshattn::estimator::oracle_sampling{a_.k, a_.seed + n * 131 + l}, p, r);
        break;
      case K::lsh: {
        const std::size_t target = n > p.window ? n - p.window : 0;
        const std::size_t range = target > p.sink ? target - p.sink : 0;
        auto& idx = index_[l];
        if (range < a_.min_range) {
          lshattn::decode(lshattn::reference, lshattn::estimator::exact{}, p, r);
          break;
        }
        if (!idx || range >= 2 * built_at_[l]) {
          idx = std::make_unique<lshattn::lsh_index<>>(hd, nkv, a_.lsh);
          idx->build(keys, p.sink, target);
          built_at_[l] = range;
        } else {
          idx->sync(keys, p);
        }
        r.index = idx.get();
        lshattn::decode(lshattn::reference, lshattn::estimator::lsh{}, p, r);
        break;
      }
    }
  }

  static void rmsnorm(float* o, const float* x, const float* w, std::size_t n) {
    double ss = 0.0;
    for (std::size_t i = 0; i < n; ++i) ss += static_cast<double>(x[i]) * x[i];
    const float s = 1.0f / std::sqrt(static_cast<float>(ss / static_cast<double>(n)) + 1e-5f);
    for (std::size_t i = 0; i < n; ++i) o[i] = w[i] * (s * x[i]);
  }
  // o[out] = W[out, in] x[in]
  static void matmul(float* o, const float* x, const float* W, std::size_t in, std::size_t out) {
    for (std::size_t i = 0; i < out; ++i) {
      float s = 0.0f;
      for (std::size_t j = 0; j < in; ++j) s += W[i * in + j] * x[j];
      o[i] = s;
    }
  }
  // RoPE on adjacent pairs within each head (llama2.c's convention).
  static void rope(float* x, std::size_t n, std::size_t hd, int pos) {
    for (std::size_t i = 0; i < n; i += 2) {
      const std::size_t j = i % hd;
      const float freq = 1.0f / std::pow(10000.0f, static_cast<float>(j) / static_cast<float>(hd));
      const float a = static_cast<float>(pos) * freq, cr = std::cos(a), ci = std::sin(a);
      const float x0 = x[i], x1 = x[i + 1];
      x[i] = x0 * cr - x1 * ci;
      x[i + 1] = x0 * ci + x1 * cr;
    }
  }

  const weights& w_;
  attention_config a_;
  std::vector<std::vector<float>> kc_, vc_;
  std::vector<std::unique_ptr<lshattn::lsh_index<>>> index_;
  std::vector<std::size_t> built_at_;
  std::vector<float> x_, xb_, q_, att_, hb_, hb2_, logits_;
  lshattn::decode_stats stats_{};
  std::size_t head_calls_ = 0, keys_available_ = 0;
};

/// Index of the largest logit (ties: the lowest index).
inline int argmax(const std::vector<float>& v) {
  return static_cast<int>(std::max_element(v.begin(), v.end()) - v.begin());
}

/// -ln softmax(logits)[target], computed stably in double.
inline double nll(const std::vector<float>& logits, int target) {
  double mx = -1e300;
  for (float x : logits) mx = std::max(mx, static_cast<double>(x));
  double s = 0.0;
  for (float x : logits) s += std::exp(static_cast<double>(x) - mx);
  return mx + std::log(s) - static_cast<double>(logits[static_cast<std::size_t>(target)]);
}

/// Greedy decoding from `prompt` (token ids, BOS first) for `steps` new tokens.
inline std::vector<int> greedy(const weights& w, const attention_config& a, const std::vector<int>& prompt, int steps) {
  model m(w, a);
  std::vector<int> out = prompt;
  int pos = 0;
  for (; pos + 1 < static_cast<int>(prompt.size()); ++pos) m.forward(prompt[static_cast<std::size_t>(pos)], pos);
  for (int s = 0; s < steps && pos < w.cfg.seq_len; ++s, ++pos) {
    const int next = argmax(m.forward(out[static_cast<std::size_t>(pos)], pos));
    out.push_back(next);
  }
  return out;
}

}  // namespace llama2
