#include "llama2/model.hpp"

#include <doctest/doctest.h>

#include <cmath>
#include <string>

#include "shared_data.hpp"

// The llama2.c-format forward pass on the real stories260K checkpoint.

namespace {
const llama2::weights& model_weights() {
  static const llama2::weights w = llama2::load_weights(quality_test::shared_file("stories260K.bin"));
  return w;
}
const llama2::tokenizer& model_tokenizer() {
  static const llama2::tokenizer t =
      llama2::tokenizer::load(quality_test::shared_file("tok512.bin"), model_weights().cfg.vocab_size);
  return t;
}
std::string text_of(const std::vector<int>& toks) {
  std::string s;
  for (std::size_t i = 1; i < toks.size(); ++i) s += model_tokenizer().decode(toks[i - 1], toks[i]);
  return s;
}
}  // namespace

TEST_CASE("llama2: the checkpoint's shape is what the data README states") {
  const auto& c = model_weights().cfg;
  CHECK(c.dim == 64);
  CHECK(c.n_layers == 5);
  CHECK(c.n_heads == 8);
  CHECK(c.n_kv_heads == 4);
  CHECK(c.head_dim() == 8);
  CHECK(c.vocab_size == 512);
  CHECK(c.seq_len == 512);
}

TEST_CASE("llama2: greedy decoding from BOS with exact attention tells the known story") {
  const auto toks = llama2::greedy(model_weights(), {}, {1}, 24);
  const std::string text = text_of(toks);
  MESSAGE(text);
  CHECK(text.rfind("Once upon a time, there was a little girl named Lily.", 0) == 0);
  // The tokenizer encodes that sentence into exactly the tokens the model chose.
  const auto enc = model_tokenizer().encode("Once upon a time, there was a little girl named Lily.");
  REQUIRE(enc.size() <= toks.size());
  CHECK(std::equal(enc.begin(), enc.end(), toks.begin()));
}

TEST_CASE("llama2: LSH attention where every key collides equals exact attention") {
  // K = 1, L = 64, m = 1: u = 1 - 2^-64 = 1 in float64, every key of the
  // sampled range is retrieved, so the estimate is exact attention through the
  // index path (GQA: 2 query heads per KV head).
  llama2::attention_config a;
  a.method = llama2::attention_config::kind::lsh;
  a.lsh = lshattn::lsh_params{1, 64, 1, 9};
  a.min_range = 4;
  llama2::model exact(model_weights(), {}), lsh(model_weights(), a);
  const auto toks = llama2::greedy(model_weights(), {}, {1}, 60);
  for (std::size_t pos = 0; pos + 1 < toks.size(); ++pos) {
    const auto le = exact.forward(toks[pos], static_cast<int>(pos));
    const auto& ll = lsh.forward(toks[pos], static_cast<int>(pos));
    double worst = 0.0;
    for (std::size_t i = 0; i < le.size(); ++i) worst = std::max(worst, std::abs(static_cast<double>(le[i]) - ll[i]));
    REQUIRE(worst < 1e-4);
  }
  CHECK(lsh.stats().sampled_keys > 0);
}
