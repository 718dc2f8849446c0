// llama2_run: the stories260K model (llama2.c format) with lshattn attention.
//
//   llama2_run [--data DIR] [--prompt TEXT] [--steps N]          greedy generation
//              [--method exact|lsh|topk|uniform|oracle] [--K --L --m --k --seed]
//              [--sink S --window W]
//   llama2_run --sweep OUT.csv [--text FILE] [--data DIR]         the quality report
//
// The sweep compares, on (a) a fixed prompt continued greedily with exact
// attention to the full 512-token context and (b) a text file (default
// examples/llama2/story.txt), for several K, L, m: the perplexity of the text
// under exact and sampled attention, the greedy token agreement with exact
// attention (teacher-forced: the fraction of positions where the argmax
// matches exact attention's argmax), the free-running agreement (tokens
// generated before the first divergence from exact greedy decoding on (a)),
// and the keys touched. Top-k, uniform and oracle sampling are run at the same
// number of sampled keys per head as each LSH setting measured.

#include <chrono>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <iostream>
#include <sstream>
#include <string>

#include "llama2/model.hpp"
#include "support/args.hpp"

namespace {

struct options {
  std::string data = "../shared/data", prompt, method = "exact", sweep, text = "examples/llama2/story.txt";
  int steps = 64, K = 3, L = 8, m = 2, seeds = 3;
  std::size_t k = 32, sink = 1, window = 8;
  std::uint64_t seed = 1;
};

llama2::attention_config make_config(const options& o) {
  llama2::attention_config a;
  using K = llama2::attention_config::kind;
  if (o.method == "exact") a.method = K::exact;
  else if (o.method == "lsh") a.method = K::lsh;
  else if (o.method == "topk") a.method = K::topk;
  else if (o.method == "uniform") a.method = K::uniform;
  else if (o.method == "oracle") a.method = K::oracle;
  else throw std::runtime_error("unknown --method " + o.method);
  a.lsh = lshattn::lsh_params{o.K, o.L, o.m, o.seed};
  a.k = o.k;
  a.seed = o.seed;
  a.params.sink = o.sink;
  a.params.window = o.window;
  return a;
}

struct text_result {
  double nll = 0.0;               // mean -ln p(next token)
  std::size_t agree = 0, count = 0;  // argmax agreement with exact
  double sampled_per_call = 0.0;  // sampled keys per query-head call
  double sampled_fraction = 0.0;  // sampled keys / sampled range
  double touched_fraction = 0.0;  // (dense + sampled) / keys exact attention reads
};

// Teacher-forced pass over toks; agreement against exact_argmax (empty: not computed).
text_result run_text(const llama2::weights& w, const llama2::attention_config& a, const std::vector<int>& toks,
                     const std::vector<int>& exact_argmax, std::vector<int>* argmax_out = nullptr) {
  llama2::model m(w, a);
  text_result r;
  for (std::size_t pos = 0; pos + 1 < toks.size(); ++pos) {
    const auto& logits = m.forward(toks[pos], static_cast<int>(pos));
    r.nll += llama2::nll(logits, toks[pos + 1]);
    const int am = llama2::argmax(logits);
    if (argmax_out) argmax_out->push_back(am);
    if (!exact_argmax.empty()) {
      r.agree += am == exact_argmax[pos] ? 1 : 0;
      ++r.count;
    }
  }
  r.nll /= static_cast<double>(toks.size() - 1);
  const auto& st = m.stats();
  r.sampled_per_call = static_cast<double>(st.sampled_keys) / static_cast<double>(m.head_calls());
  r.sampled_fraction = st.sampled_range ? static_cast<double>(st.sampled_keys) / static_cast<double>(st.sampled_range) : 1.0;
  r.touched_fraction = static_cast<double>(st.dense_keys + st.sampled_keys) / static_cast<double>(m.keys_available());
  return r;
}

std::size_t free_running_agreement(const llama2::weights& w, const llama2::attention_config& a,
                                   const std::vector<int>& prompt, const std::vector<int>& exact_seq) {
  const int steps = static_cast<int>(exact_seq.size() - prompt.size());
  const auto s = llama2::greedy(w, a, prompt, steps);
  std::size_t i = prompt.size();
  while (i < s.size() && i < exact_seq.size() && s[i] == exact_seq[i]) ++i;
  return i - prompt.size();
}

int sweep(const options& o, const llama2::weights& w, const llama2::tokenizer& tok) {
  std::ifstream tf(o.text);
  if (!tf) throw std::runtime_error("cannot open --text " + o.text);
  std::stringstream ss;
  ss << tf.rdbuf();
  std::string text = ss.str();
  while (!text.empty() && (text.back() == '\n' || text.back() == ' ')) text.pop_back();
  for (auto& c : text)
    if (c == '\n') c = ' ';
  std::vector<int> file_toks = tok.encode(text);
  if (file_toks.size() > static_cast<std::size_t>(w.cfg.seq_len)) file_toks.resize(static_cast<std::size_t>(w.cfg.seq_len));
  const std::string prompt_text = o.prompt.empty() ? "One day, a little boy named Tim went to the park with his mom." : o.prompt;
  const auto prompt = tok.encode(prompt_text);
  llama2::attention_config exact_cfg;
  exact_cfg.params = make_config(o).params;
  const auto prompt_seq = llama2::greedy(w, exact_cfg, prompt, w.cfg.seq_len - static_cast<int>(prompt.size()));
  struct source {
    const char* name;
    const std::vector<int>* toks;
  } sources[] = {{"prompt", &prompt_seq}, {"file", &file_toks}};
  std::FILE* out = std::fopen(o.sweep.c_str(), "w");
  if (!out) throw std::runtime_error("cannot write " + o.sweep);
  std::fprintf(out, "source,tokens,method,K,L,m,k,seeds,sampled_per_call,sampled_fraction,touched_fraction,"
                    "ppl_exact,ppl,agreement,free_run\n");
  struct grid_point {
    int K, L, m;
  };
  const grid_point grid[] = {{2, 4, 2}, {2, 8, 2}, {3, 8, 2}, {3, 16, 2}, {4, 16, 2}, {4, 32, 2}, {2, 4, 1}, {3, 4, 1}};
  for (const auto& src : sources) {
    std::vector<int> exact_am;
    const auto ex = run_text(w, exact_cfg, *src.toks, {}, &exact_am);
    std::fprintf(out, "%s,%zu,exact,0,0,0,0,1,%.3f,1,1,%.4f,%.4f,1,%zu\n", src.name, src.toks->size(),
                 ex.sampled_per_call, std::exp(ex.nll), std::exp(ex.nll),
                 src.toks == &prompt_seq ? prompt_seq.size() - prompt.size() : std::size_t{0});
    for (const auto& g : grid) {
      std::fprintf(stderr, "[llama2 %s] K=%d L=%d m=%d\n", src.name, g.K, g.L, g.m);
      // LSH over several hyperplane seeds; the baselines at LSH's mean sampled keys per call.
      double per_call = 0.0;
      for (const char* method : {"lsh", "topk", "uniform", "oracle"}) {
        options oo = o;
        oo.method = method;
        oo.K = g.K;
        oo.L = g.L;
        oo.m = g.m;
        oo.k = std::max<std::size_t>(1, static_cast<std::size_t>(std::lround(per_call)));
        const int seeds = std::strcmp(method, "topk") == 0 ? 1 : o.seeds;
        text_result acc;
        double free_run = 0.0;
        for (int s = 0; s < seeds; ++s) {
          oo.seed = 1000 + static_cast<std::uint64_t>(s);
          const auto cfg = make_config(oo);
          const auto r = run_text(w, cfg, *src.toks, exact_am);
          acc.nll += r.nll / seeds;
          acc.agree += r.agree;
          acc.count += r.count;
          acc.sampled_per_call += r.sampled_per_call / seeds;
          acc.sampled_fraction += r.sampled_fraction / seeds;
          acc.touched_fraction += r.touched_fraction / seeds;
          if (src.toks == &prompt_seq) free_run += static_cast<double>(free_running_agreement(w, cfg, prompt, prompt_seq)) / seeds;
        }
        if (std::strcmp(method, "lsh") == 0) per_call = acc.sampled_per_call;
        std::fprintf(out, "%s,%zu,%s,%d,%d,%d,%zu,%d,%.3f,%.4f,%.4f,%.4f,%.4f,%.4f,%.1f\n", src.name, src.toks->size(),
                     method, g.K, g.L, g.m, std::strcmp(method, "lsh") == 0 ? std::size_t{0} : oo.k, seeds,
                     acc.sampled_per_call, acc.sampled_fraction, acc.touched_fraction, std::exp(ex.nll),
                     std::exp(acc.nll), static_cast<double>(acc.agree) / static_cast<double>(acc.count), free_run);
        std::fflush(out);
      }
    }
  }
  std::fclose(out);
  std::fprintf(stderr, "wrote %s\n", o.sweep.c_str());
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  try {
    options o;
    const char* usage =
        "usage: llama2_run [--data DIR] [--prompt TEXT] [--steps N] [--method exact|lsh|topk|uniform|oracle]\n"
        "                  [--K K --L L --m M] [--k KEYS] [--seed S] [--sink S --window W]\n"
        "       llama2_run --sweep OUT.csv [--text FILE] [--seeds N] [--data DIR]";
    const bool run = lshattn_examples::parse_args(argc, argv, usage, [&](const std::string& a, const auto& next) {
      if (a == "--data") o.data = next();
      else if (a == "--prompt") o.prompt = next();
      else if (a == "--steps") o.steps = std::stoi(next());
      else if (a == "--method") o.method = next();
      else if (a == "--K") o.K = std::stoi(next());
      else if (a == "--L") o.L = std::stoi(next());
      else if (a == "--m") o.m = std::stoi(next());
      else if (a == "--k") o.k = std::stoul(next());
      else if (a == "--seed") o.seed = std::stoull(next());
      else if (a == "--seeds") o.seeds = std::stoi(next());
      else if (a == "--sink") o.sink = std::stoul(next());
      else if (a == "--window") o.window = std::stoul(next());
      else if (a == "--sweep") o.sweep = next();
      else if (a == "--text") o.text = next();
      else return false;
      return true;
    });
    if (!run) return 0;
    const auto w = llama2::load_weights(o.data + "/stories260K.bin");
    const auto tok = llama2::tokenizer::load(o.data + "/tok512.bin", w.cfg.vocab_size);
    if (!o.sweep.empty()) return sweep(o, w, tok);
    const auto prompt = tok.encode(o.prompt);
    const auto cfg = make_config(o);
    llama2::model m(w, cfg);
    std::vector<int> seq = prompt;
    int pos = 0;
    for (; pos + 1 < static_cast<int>(prompt.size()); ++pos) m.forward(prompt[static_cast<std::size_t>(pos)], pos);
    for (int s = 0; s < o.steps && pos < w.cfg.seq_len; ++s, ++pos) {
      const int next = llama2::argmax(m.forward(seq[static_cast<std::size_t>(pos)], pos));
      if (next == 1) break;  // BOS delimits stories
      seq.push_back(next);
    }
    for (std::size_t i = 1; i < seq.size(); ++i) std::cout << tok.decode(seq[i - 1], seq[i]);
    const auto& st = m.stats();
    std::cout << "\n[" << o.method << "] keys touched: " << st.dense_keys + st.sampled_keys << " of "
              << m.keys_available() << " (sampled " << st.sampled_keys << " of a sampled range of " << st.sampled_range
              << ")\n";
    return 0;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "llama2_run: %s\n", e.what());
    return 1;
  }
}
