#pragma once
// One layer's LSH index: for every KV head, L bucket tables over a range of
// token positions [begin, end) of the cache, in CSR form (MagicPIG, Chen et
// al. 2024, section 4: keys sorted by code, a start offset per bucket).
//
// Growth during decode: append() hashes new tokens into a tail (each token's L
// codes, in token order) that queries scan directly; once the tail exceeds a
// fraction of the index it is merged into the CSR arrays in one
// O(n L + L 2^K) pass, so appending costs O(L) amortised per token and never a
// full re-hash. The mean key used for
// centring is computed at build() and frozen afterwards (re-centring would
// change every stored code).
//
// Retrieval counts collisions with an epoch-stamped counter array (the
// "visited list" of hnswlib): no O(n) clear per query.

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <numeric>
#include <span>
#include <utility>
#include <vector>

#include "lshattn/core/dtype.hpp"
#include "lshattn/core/error.hpp"
#include "lshattn/core/params.hpp"
#include "lshattn/core/view.hpp"
#include "lshattn/hash/concepts.hpp"
#include "lshattn/hash/simhash.hpp"
#include "lshattn/index/common.hpp"

namespace lshattn {

/// Scratch space for retrieval, owned by the caller and reused across
/// queries: after the first query at a given cache size no allocation
/// happens. One per thread.
struct retrieval_workspace {
  std::vector<std::uint32_t> stamp;  ///< per token position: epoch of last touch
  std::vector<std::uint16_t> count;  ///< per token position: collisions in that epoch
  std::uint32_t epoch = 0;
  std::vector<std::uint32_t> query_codes;  ///< [L]
  std::vector<std::uint32_t> ids;          ///< result: token positions, ascending
  std::vector<std::uint16_t> counts;       ///< result: collision count of each id (>= m)
  std::vector<float> scratch;              ///< a centred or widened vector

  /// Starts a new query over token positions < n.
  void begin_query(std::size_t n) {
    if (stamp.size() < n) {
      stamp.resize(n, 0);
      count.resize(n, 0);
    }
    if (++epoch == 0) {  // wrapped after 2^32 queries: one real clear
      std::fill(stamp.begin(), stamp.end(), 0u);
      epoch = 1;
    }
    ids.clear();
    counts.clear();
  }

  /// Counts one collision of token `id` in the current query; the token
  /// joins ids when its count reaches m (once: later collisions pass m).
  void touch(std::uint32_t id, int m) {
    if (stamp[id] != epoch) {
      stamp[id] = epoch;
      count[id] = 1;
    } else {
      ++count[id];
    }
    if (count[id] == m) ids.push_back(id);
  }

  /// Ends the query: ids ascending, counts[i] the collision count of ids[i].
  void end_query() {
    std::sort(ids.begin(), ids.end());
    counts.resize(ids.size());
    for (std::size_t i = 0; i < ids.size(); ++i) counts[i] = count[ids[i]];
  }
};

/// LSH bucket tables for every KV head of one layer.
/// Family: a hash::family (default SimHash with 32-bit codes).
template <hash::family Family = hash::simhash<>>
class lsh_index {
 public:
  using family_type = Family;
  using code_type = typename Family::code_type;

  lsh_index() = default;
  /// An empty index for kv_heads heads of head_dim dim. Throws naming the bad parameter.
  lsh_index(std::size_t dim, std::size_t kv_heads, const lsh_params& p)
      : family_((p.validate(), dim), p.K, p.L, p.seed), heads_(detail::check_kv_heads(kv_heads)), m_(p.m) {}
  lsh_index(Family family, std::size_t kv_heads, int m)
      : family_(std::move(family)), heads_(detail::check_kv_heads(kv_heads)), m_(m) {
    detail::check_threshold(m, family_.tables());
  }

  [[nodiscard]] const Family& family() const noexcept { return family_; }
  [[nodiscard]] std::size_t kv_heads() const noexcept { return heads_; }
  [[nodiscard]] std::size_t dim() const noexcept { return family_.dim(); }
  [[nodiscard]] int threshold() const noexcept { return m_; }
  /// Token positions [begin(), end()) are indexed; built() is false before build().
  [[nodiscard]] std::size_t begin() const noexcept { return begin_; }
  [[nodiscard]] std::size_t end() const noexcept { return end_; }
  [[nodiscard]] std::size_t size() const noexcept { return end_ - begin_; }
  [[nodiscard]] bool built() const noexcept { return built_; }
  /// Mean of the indexed keys of a head at build time, used to centre keys for hashing.
  [[nodiscard]] std::span<const float> mean(std::size_t head) const noexcept {
    return {means_.data() + head * dim(), dim()};
  }
  /// Tail tokens not yet merged into the CSR arrays.
  [[nodiscard]] std::size_t tail_size() const noexcept { return end_ - csr_end_; }
  /// Merge the tail when it exceeds max(min_tail, size() * tail_fraction).
  void set_merge_policy(std::size_t min_tail, double tail_fraction) {
    detail::check_tail_fraction(tail_fraction);
    min_tail_ = min_tail;
    tail_fraction_ = tail_fraction;
  }

  /// Index tokens [begin, end) of every head of keys ([kv_heads, tokens, dim]),
  /// replacing any previous content. Keys are centred by their mean over the
  /// range. Throws on mismatched shapes, a bad range or non-finite keys, and
  /// then leaves the index unchanged.
  template <element_type T>
  void build(const cache_view<const T>& keys, std::size_t begin, std::size_t end) {
    detail::check_index_keys(keys, heads_, dim());
    detail::check_index_range(begin, end, keys.tokens);
    detail::check_finite_keys(keys, begin, end);
    std::vector<float> means(heads_ * dim());
    for (std::size_t h = 0; h < heads_; ++h)
      detail::chunked_key_mean(keys.head(h), begin, end, means.data() + h * dim());
    std::vector<head_tables> tables(heads_);
    std::vector<code_type> codes;
    for (std::size_t h = 0; h < heads_; ++h) {
      hash_range(keys.head(h), means.data() + h * dim(), begin, end, codes);
      tables[h] = make_csr(codes, begin, end - begin);
    }
    means_ = std::move(means);
    tables_ = std::move(tables);
    begin_ = begin;
    csr_end_ = end_ = end;
    built_ = true;
  }

  /// Index tokens [end(), new_end) of keys (the same cache, grown). Cheap:
  /// O(L) per token amortised. Throws and leaves the index unchanged on bad input.
  template <element_type T>
  void append(const cache_view<const T>& keys, std::size_t new_end) {
    LSHATTN_REQUIRE(built_, invalid_state, "index", "append() before build()");
    detail::check_index_keys(keys, heads_, dim());
    detail::check_append_end(new_end, end_, keys.tokens);
    if (new_end == end_) return;
    detail::check_finite_keys(keys, end_, new_end);
    // Hash every head first, then commit: a throw leaves the index as it was.
    std::vector<std::vector<code_type>> codes(heads_);
    for (std::size_t h = 0; h < heads_; ++h) hash_range(keys.head(h), means_.data() + h * dim(), end_, new_end, codes[h]);
    for (std::size_t h = 0; h < heads_; ++h) tables_[h].tail.reserve(tables_[h].tail.size() + codes[h].size());
    for (std::size_t h = 0; h < heads_; ++h)
      tables_[h].tail.insert(tables_[h].tail.end(), codes[h].begin(), codes[h].end());
    end_ = new_end;
    if (tail_size() > std::max<std::size_t>(min_tail_, static_cast<std::size_t>(tail_fraction_ * size()))) merge_tail();
  }

  /// Index newly cached tokens so that all but the last params.window tokens
  /// are covered: the decode-time growth step.
  template <element_type T>
  void sync(const cache_view<const T>& keys, const decode_params& params) {
    const std::size_t target = keys.tokens > params.window ? keys.tokens - params.window : 0;
    if (target > end_) append(keys, target);
  }

  /// Merge the tail into the CSR arrays now: per table one pass over the old
  /// ids, the tail and the bucket directory, O(n + tail + 2^K).
  void merge_tail() {
    if (tail_size() == 0) return;
    const std::size_t L = static_cast<std::size_t>(family_.tables());
    const std::size_t tail = tail_size();
    std::vector<head_tables> merged(heads_);
    for (std::size_t h = 0; h < heads_; ++h) {
      const head_tables& ht = tables_[h];
      merged[h].tables.resize(L);
      for (std::size_t l = 0; l < L; ++l) {
        const table& t = ht.tables[l];
        table& out = merged[h].tables[l];
        if (!t.codes.empty() || t.offsets.empty()) {  // sparse directory: rebuild this table
          std::vector<std::pair<code_type, std::uint32_t>> pairs;
          pairs.reserve(t.ids.size() + tail);
          for (std::size_t b = 0; b + 1 < t.offsets.size(); ++b)
            for (std::uint32_t k = t.offsets[b]; k < t.offsets[b + 1]; ++k) pairs.push_back({t.codes[b], t.ids[k]});
          for (std::size_t i = 0; i < tail; ++i)
            pairs.push_back({ht.tail[i * L + l], static_cast<std::uint32_t>(csr_end_ + i)});
          out = sparse_table(pairs);
          continue;
        }
        // Dense directory: bucket b keeps its old ids, then its tail ids (all larger).
        const std::size_t B = t.offsets.size() - 1;
        out.offsets.assign(B + 1, 0);
        for (std::size_t i = 0; i < tail; ++i) ++out.offsets[ht.tail[i * L + l] + 1];
        for (std::size_t b = 0; b < B; ++b) out.offsets[b + 1] += out.offsets[b] + (t.offsets[b + 1] - t.offsets[b]);
        out.ids.resize(t.ids.size() + tail);
        std::vector<std::uint32_t> next(B);
        for (std::size_t b = 0; b < B; ++b) {
          const std::uint32_t old = t.offsets[b + 1] - t.offsets[b];
          std::copy_n(t.ids.data() + t.offsets[b], old, out.ids.data() + out.offsets[b]);
          next[b] = out.offsets[b] + old;
        }
        for (std::size_t i = 0; i < tail; ++i) out.ids[next[ht.tail[i * L + l]]++] = static_cast<std::uint32_t>(csr_end_ + i);
      }
    }
    for (std::size_t h = 0; h < heads_; ++h) tables_[h].tables = std::move(merged[h].tables);
    for (auto& ht : tables_) ht.tail.clear();
    csr_end_ = end_;
  }

  /// Keys of head `head` that collide with q in at least m tables, with their
  /// collision counts, into ws.ids / ws.counts (ascending ids). q has dim()
  /// floats and is hashed as is (queries are not centred).
  void query(std::size_t head, const float* q, int m, retrieval_workspace& ws) const {
    LSHATTN_REQUIRE(built_, invalid_state, "index", "query() before build()");
    LSHATTN_REQUIRE(head < heads_, invalid_argument, "head", "head = ", head, " must be < kv_heads = ", heads_);
    detail::check_threshold(m, family_.tables());
    const std::size_t L = static_cast<std::size_t>(family_.tables());
    ws.query_codes.resize(L);
    if constexpr (std::is_same_v<code_type, std::uint32_t>) {
      family_.hash(q, ws.query_codes.data());
    } else {
      std::vector<code_type> qc(L);
      family_.hash(q, qc.data());
      std::copy(qc.begin(), qc.end(), ws.query_codes.begin());
    }
    collect(head, ws.query_codes.data(), m, ws);
  }

  /// Retrieval from precomputed query codes (codes[l], l < L).
  void collect(std::size_t head, const std::uint32_t* codes, int m, retrieval_workspace& ws) const {
    ws.begin_query(end_);
    const head_tables& ht = tables_[head];
    const std::size_t L = static_cast<std::size_t>(family_.tables());
    const std::size_t tail = tail_size();
    for (std::size_t l = 0; l < L; ++l) {
      const auto [lo, hi] = ht.tables[l].bucket(static_cast<code_type>(codes[l]));
      for (std::uint32_t k = lo; k < hi; ++k) ws.touch(ht.tables[l].ids[k], m);
    }
    // Tail tokens are not in the CSR arrays: count each one's collisions over
    // its L codes, stored contiguously.
    for (std::size_t i = 0; i < tail; ++i) {
      const code_type* tc = ht.tail.data() + i * L;
      std::uint32_t hits = 0;
      for (std::size_t l = 0; l < L; ++l) hits += tc[l] == static_cast<code_type>(codes[l]) ? 1u : 0u;
      const auto id = static_cast<std::uint32_t>(csr_end_ + i);
      ws.stamp[id] = ws.epoch;
      ws.count[id] = static_cast<std::uint16_t>(hits);
      if (hits >= static_cast<std::uint32_t>(m)) ws.ids.push_back(id);
    }
    ws.end_query();
  }

  /// Token positions in bucket `code` of table `l` of `head` (CSR part only), ascending.
  [[nodiscard]] std::span<const std::uint32_t> bucket(std::size_t head, int l, code_type code) const {
    const table& t = tables_.at(head).tables.at(static_cast<std::size_t>(l));
    const auto [lo, hi] = t.bucket(code);
    return {t.ids.data() + lo, hi - lo};
  }

  /// Bytes held by the index: tables, tails and means (the family's hyperplanes excluded,
  /// see family().memory_bytes()).
  [[nodiscard]] std::size_t memory_bytes() const noexcept {
    std::size_t b = means_.size() * sizeof(float);
    for (const auto& ht : tables_) {
      b += ht.tail.size() * sizeof(code_type);
      for (const auto& t : ht.tables)
        b += t.ids.size() * sizeof(std::uint32_t) + t.offsets.size() * sizeof(std::uint32_t) +
             t.codes.size() * sizeof(code_type);
    }
    return b;
  }

 private:
  // One table in CSR form. Dense directory (codes empty): bucket c is
  // ids[offsets[c], offsets[c+1]). Sparse directory (2^K far above n, e.g. K = 32):
  // codes holds the non-empty codes ascending and bucket codes[i] is
  // ids[offsets[i], offsets[i+1]).
  struct table {
    std::vector<std::uint32_t> offsets;
    std::vector<std::uint32_t> ids;
    std::vector<code_type> codes;
    [[nodiscard]] std::pair<std::uint32_t, std::uint32_t> bucket(code_type c) const noexcept {
      if (codes.empty()) {
        if (static_cast<std::size_t>(c) + 1 >= offsets.size()) return {0, 0};
        return {offsets[c], offsets[c + 1]};
      }
      const auto it = std::lower_bound(codes.begin(), codes.end(), c);
      if (it == codes.end() || *it != c) return {0, 0};
      const auto i = static_cast<std::size_t>(it - codes.begin());
      return {offsets[i], offsets[i + 1]};
    }
  };
  struct head_tables {
    std::vector<table> tables;
    std::vector<code_type> tail;  // [tail_size()][L]: codes of the tokens not yet merged
  };

  // Codes of tokens [begin, end), centred: codes[(t - begin) * L + l].
  template <class T>
  void hash_range(const matrix_view<const T>& keys, const float* mean, std::size_t begin, std::size_t end,
                  std::vector<code_type>& codes) const {
    const std::size_t d = dim(), L = static_cast<std::size_t>(family_.tables());
    codes.resize((end - begin) * L);
    constexpr std::size_t block = 4096;
    std::vector<float> x(std::min(block, end - begin) * d);
    for (std::size_t b0 = begin; b0 < end; b0 += block) {
      const std::size_t nb = std::min(block, end - b0);
      for (std::size_t i = 0; i < nb; ++i)
        for (std::size_t j = 0; j < d; ++j) x[i * d + j] = to_float(keys(b0 + i, j)) - mean[j];
      if constexpr (requires { family_.hash_batch(x.data(), nb, d, codes.data()); })
        family_.hash_batch(x.data(), nb, d, codes.data() + (b0 - begin) * L);
      else
        for (std::size_t i = 0; i < nb; ++i) family_.hash(x.data() + i * d, codes.data() + (b0 - begin + i) * L);
    }
  }

  // A sparse-directory table from (code, token) pairs.
  static table sparse_table(std::vector<std::pair<code_type, std::uint32_t>>& pairs) {
    table t;
    std::sort(pairs.begin(), pairs.end());
    const std::size_t n = pairs.size();
    t.ids.resize(n);
    for (std::size_t i = 0; i < n; ++i) {
      if (i == 0 || pairs[i].first != pairs[i - 1].first) {
        t.offsets.push_back(static_cast<std::uint32_t>(i));
        t.codes.push_back(pairs[i].first);
      }
      t.ids[i] = pairs[i].second;
    }
    if (n) t.offsets.push_back(static_cast<std::uint32_t>(n));
    return t;
  }

  // Counting sort of n tokens (positions first..first+n) into L tables. codes
  // is [n][L]; 16 tables at a time are first gathered into columns, so every
  // cache line of codes is read once rather than once per table.
  head_tables make_csr(const std::vector<code_type>& codes, std::size_t first, std::size_t n) const {
    const std::size_t L = static_cast<std::size_t>(family_.tables());
    const std::uint64_t B = family_.buckets();
    const bool dense = B <= 2 * n + 1024;
    head_tables ht;
    ht.tables.resize(L);
    constexpr std::size_t group = 16;
    std::vector<code_type> cols(group * n);
    for (std::size_t l0 = 0; l0 < L; l0 += group) {
      const std::size_t gl = std::min(group, L - l0);
      for (std::size_t i = 0; i < n; ++i)
        for (std::size_t g = 0; g < gl; ++g) cols[g * n + i] = codes[i * L + l0 + g];
      for (std::size_t g = 0; g < gl; ++g) {
        const code_type* col = cols.data() + g * n;
        table& t = ht.tables[l0 + g];
        if (dense) {
          t.ids.resize(n);
          t.offsets.assign(B + 1, 0);
          for (std::size_t i = 0; i < n; ++i) ++t.offsets[col[i] + 1];
          std::partial_sum(t.offsets.begin(), t.offsets.end(), t.offsets.begin());
          std::vector<std::uint32_t> next(t.offsets.begin(), t.offsets.end() - 1);
          for (std::size_t i = 0; i < n; ++i) t.ids[next[col[i]]++] = static_cast<std::uint32_t>(first + i);
        } else {
          std::vector<std::pair<code_type, std::uint32_t>> pairs(n);
          for (std::size_t i = 0; i < n; ++i) pairs[i] = {col[i], static_cast<std::uint32_t>(first + i)};
          t = sparse_table(pairs);
        }
      }
    }
    return ht;
  }

  Family family_{};
  std::size_t heads_ = 0;
  int m_ = 2;
  std::size_t begin_ = 0, end_ = 0, csr_end_ = 0;
  bool built_ = false;
  std::size_t min_tail_ = 256;
  double tail_fraction_ = 1.0 / 64.0;
  std::vector<float> means_;
  std::vector<head_tables> tables_;
};

}  // namespace lshattn
