#pragma once
// cpu_index: a compact LSH index for the CPU executor. Same tables, same
// codes and same retrieval results as lsh_index (MagicPIG, Chen et al. 2024,
// section 4: L tables of K-bit SimHash codes, keys centred by their mean),
// in half the memory of 32-bit token ids:
//
//   The indexed range [begin, end) is cut into blocks of 65535 tokens. For
//   each KV head, block and table: the block's token ids as 16-bit offsets
//   sorted by code (2 B per token per table), and a directory of 2^K 16-bit
//   bucket starts (bucket c is ids[start[c], start[c+1]), the last bucket
//   ends at the block's length). At K = 10, L = 150 that is 300 B of ids per
//   token and KV head, plus 2^K * 2 B * L / 65535 = 4.7 B of directory for
//   each full block. docs/cpu-index-layout.md has the details.
//
// Growth during decode works as in lsh_index: appended tokens go to a tail of
// codes that queries scan; the tail is merged by rebuilding only the last,
// partial block. The mean key is frozen at build().
//
// Hashing runs through the CPU kernels: an fp32 GEMM against the hyperplanes
// decides every bit whose value exceeds the GEMM's rounding bound, the rest
// are decided exactly (hash::dot_positive), so the codes equal
// simhash::hash() bit for bit and the index holds exactly lsh_index's tables.

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <new>
#include <span>
#include <utility>
#include <vector>

#if defined(__linux__)
#include <sys/mman.h>
#endif

#include "lshattn/collision/inclusion.hpp"
#include "lshattn/core/error.hpp"
#include "lshattn/core/params.hpp"
#include "lshattn/core/view.hpp"
#include "lshattn/executor/cpu/kernels.hpp"
#include "lshattn/executor/cpu/policy.hpp"
#include "lshattn/hash/exact_sign.hpp"
#include "lshattn/hash/simhash.hpp"
#include "lshattn/index/common.hpp"
#include "lshattn/index/lsh_index.hpp"

namespace lshattn {

namespace executor::cpu_detail {

/// 64-byte aligned storage for SIMD-loaded arrays.
template <class T>
struct aligned_allocator {
  using value_type = T;
  aligned_allocator() = default;
  template <class U>
  aligned_allocator(const aligned_allocator<U>&) noexcept {}
  T* allocate(std::size_t n) { return static_cast<T*>(::operator new(n * sizeof(T), std::align_val_t{64})); }
  void deallocate(T* p, std::size_t) noexcept { ::operator delete(p, std::align_val_t{64}); }
  template <class U>
  bool operator==(const aligned_allocator<U>&) const noexcept { return true; }
};

/// Storage of the index's tables: 2 MiB aligned and, on Linux, advised into
/// transparent huge pages. Retrieval reads a few cache lines at random places
/// of hundreds of MB (one directory entry and one bucket per table and query
/// head); with 4 KiB pages nearly every one of them is also a TLB miss, and a
/// page walk (a two-level one under virtualisation) costs more than the line.
template <class T>
struct table_allocator {
  using value_type = T;
  static constexpr std::size_t huge = std::size_t{1} << 21;
  table_allocator() = default;
  template <class U>
  table_allocator(const table_allocator<U>&) noexcept {}
  T* allocate(std::size_t n) {
    const std::size_t bytes = n * sizeof(T);
    if (bytes < huge) return static_cast<T*>(::operator new(bytes, std::align_val_t{64}));
    const std::size_t rounded = (bytes + huge - 1) / huge * huge;
    void* p = ::operator new(rounded, std::align_val_t{huge});
#if defined(__linux__) && defined(MADV_HUGEPAGE)
    ::madvise(p, rounded, MADV_HUGEPAGE);  // advice only: failure leaves 4 KiB pages
#endif
    return static_cast<T*>(p);
  }
  void deallocate(T* p, std::size_t n) noexcept {
    const std::size_t bytes = n * sizeof(T);
    if (bytes < huge) ::operator delete(p, std::align_val_t{64});
    else ::operator delete(p, std::align_val_t{huge});
  }
  /// Elements are left uninitialised by resize(): the table builders write
  /// every one, in parallel, so the pages are first touched (faulted in and
  /// zeroed by the kernel) by the threads that fill them, not by one thread
  /// clearing hundreds of MB before the build starts.
  template <class U>
  void construct(U* p) noexcept {
    ::new (static_cast<void*>(p)) U;
  }
  template <class U, class... A>
  void construct(U* p, A&&... a) {
    ::new (static_cast<void*>(p)) U(std::forward<A>(a)...);
  }
  template <class U>
  bool operator==(const table_allocator<U>&) const noexcept { return true; }
};

/// The hyperplanes laid out for the GEMM kernel plus the per-plane rounding
/// bounds: Wt in 64-column panels (kernels.hpp, gemm_fn; zero padded), bound[p] >= gamma_d |w_p| with
/// gamma_d = d u / (1 - d u), u = 2^-24 (Higham eq. 3.5, Cauchy-Schwarz).
struct hash_plan {
  std::size_t dim = 0, dpad = 0, P = 0, ppad = 0;
  int K = 0, L = 0;
  std::vector<float, aligned_allocator<float>> Wt;
  std::vector<float> bound;
  const float* planes = nullptr;  // [P][dim], the family's

  hash_plan() = default;
  explicit hash_plan(const hash::simhash<>& f)
      : dim(f.dim()), dpad(padded(f.dim())), K(f.bits()), L(f.tables()), planes(f.hyperplanes()) {
    P = static_cast<std::size_t>(K) * static_cast<std::size_t>(L);
    ppad = (P + 63) / 64 * 64;
    Wt.assign(dpad * ppad, 0.0f);
    bound.assign(ppad, 0.0f);
    const double u = 0x1p-24 * static_cast<double>(dim + 2);
    const double gamma = u / (1.0 - u) * 1.01;  // margin for the fp32 norms (relative error < 2^-10 after rounding up)
    for (std::size_t p = 0; p < P; ++p) {
      double n2 = 0.0;
      for (std::size_t j = 0; j < dim; ++j) {
        const float w = planes[p * dim + j];
        Wt[(p / gemm_panel) * dpad * gemm_panel + j * gemm_panel + p % gemm_panel] = w;
        n2 += static_cast<double>(w) * w;
      }
      bound[p] = std::nextafter(static_cast<float>(gamma * std::sqrt(n2)), std::numeric_limits<float>::infinity());
    }
  }

  /// 64-bit words of bits per row (gemm_sign's layout).
  [[nodiscard]] std::size_t words() const noexcept { return ppad / 64; }

  /// Codes of n padded fp32 rows X [n][ldx] with norm upper bounds `norms`:
  /// emit(i, l, code) for every row and table, tables in the outer loop (a
  /// table-major code array is then written in order: row-major emission
  /// stored to 150 places n tokens apart per row, a TLB miss each). bits and
  /// unsure are scratch of n * words() each.
  template <class Emit>
  void encode(const kernel_table& k, const float* X, std::size_t n, std::size_t ldx, const float* norms,
              std::uint64_t* bits, std::uint64_t* unsure, Emit&& emit) const {
    k.gemm_sign(X, n, ldx, Wt.data(), dpad, P, bound.data(), norms, bits, unsure);
    const std::size_t nw = words();
    const std::uint64_t last_mask = P % 64 ? (std::uint64_t{1} << (P % 64)) - 1 : ~std::uint64_t{0};
    for (std::size_t w = 0; w < nw; ++w) {
      const std::uint64_t keep = w + 1 == nw ? last_mask : ~std::uint64_t{0};
      for (std::size_t i = 0; i < n; ++i) {
        std::uint64_t u = unsure[w * n + i] & keep;
        while (u) {
          const int j = __builtin_ctzll(u);
          u &= u - 1;
          const std::size_t p = w * 64 + static_cast<std::size_t>(j);
          if (hash::dot_positive(X + i * ldx, planes + p * dim, dim)) bits[w * n + i] |= std::uint64_t{1} << j;
          else bits[w * n + i] &= ~(std::uint64_t{1} << j);
        }
      }
    }
    const std::uint64_t mask = (std::uint64_t{1} << K) - 1;
    for (int l = 0; l < L; ++l) {
      const std::size_t o = static_cast<std::size_t>(l) * static_cast<std::size_t>(K), s = o % 64;
      const std::uint64_t* lo = bits + (o / 64) * n;
      if (s + static_cast<std::size_t>(K) > 64) {
        const std::uint64_t* hi = lo + n;
        for (std::size_t i = 0; i < n; ++i)
          emit(i, l, static_cast<std::uint32_t>(((lo[i] >> s) | (hi[i] << (64 - s))) & mask));
      } else {
        for (std::size_t i = 0; i < n; ++i) emit(i, l, static_cast<std::uint32_t>((lo[i] >> s) & mask));
      }
    }
  }
};

/// Per-thread scratch of hashing and retrieval, reused across calls.
struct cpu_scratch {
  std::vector<float> X, norms;
  std::vector<std::uint64_t> bits, unsure;  // hashing: sign and unsure bits, [words][rows]
  std::vector<std::uint8_t> cnt8;           // retrieval: block-local counts (L <= 255)
  std::vector<std::uint16_t> cnt16;         // retrieval: block-local counts (L > 255)
  std::vector<std::uint32_t> slot;          // union: block-local epoch-stamped union slots
  std::vector<std::uint32_t> span;          // retrieval: [L] bucket bounds (lo, hi) in a block's ids
  std::vector<std::uint16_t> hits;          // retrieval: every id walked, the first n_hits kept
  std::uint32_t union_epoch = 0;
  std::vector<std::vector<std::uint16_t>> group_hits;  // retrieve_group: each head's hits
  static cpu_scratch& local() {
    thread_local cpu_scratch s;
    return s;
  }
};

}  // namespace executor::cpu_detail

/// The compact index described at the top of this file. Models the index
/// contract of lsh_index (query/collect/mean/family/threshold), so the lsh
/// estimator and the reference executor accept it too.
class cpu_index {
 public:
  using family_type = hash::simhash<>;
  using code_type = std::uint32_t;
  /// Tokens per block: 16-bit offsets and 16-bit bucket starts.
  static constexpr std::size_t block_tokens = 65535;
  /// Codes as hash_keys() writes them, [head][table][token]: storage whose
  /// resize() leaves the elements uninitialised (hash_keys writes every one,
  /// in parallel; zero-filling 315 MB at 128K tokens first took one thread
  /// tens of milliseconds), huge-page advised like the tables.
  using code_vector = std::vector<std::uint16_t, executor::cpu_detail::table_allocator<std::uint16_t>>;

  cpu_index() = default;
  /// An empty index; K must be at most 16 (16-bit codes in the tail).
  cpu_index(std::size_t dim, std::size_t kv_heads, const lsh_params& p)
      : family_((p.validate(), check_k(p.K), dim), p.K, p.L, p.seed), heads_(detail::check_kv_heads(kv_heads)), m_(p.m),
        plan_(family_) {
    make_lnu_table();
  }

  [[nodiscard]] const family_type& family() const noexcept { return family_; }
  [[nodiscard]] std::size_t kv_heads() const noexcept { return heads_; }
  [[nodiscard]] std::size_t dim() const noexcept { return family_.dim(); }
  [[nodiscard]] int threshold() const noexcept { return m_; }
  [[nodiscard]] std::size_t begin() const noexcept { return begin_; }
  [[nodiscard]] std::size_t end() const noexcept { return end_; }
  [[nodiscard]] std::size_t size() const noexcept { return end_ - begin_; }
  [[nodiscard]] bool built() const noexcept { return built_; }
  [[nodiscard]] std::size_t tail_size() const noexcept { return end_ - csr_end_; }
  [[nodiscard]] std::span<const float> mean(std::size_t head) const noexcept {
    return {means_.data() + head * plan_.dpad, dim()};
  }
  /// The mean of a head padded with zeros to a multiple of 16 floats.
  [[nodiscard]] const float* padded_mean(std::size_t head) const noexcept { return means_.data() + head * plan_.dpad; }
  [[nodiscard]] const executor::cpu_detail::lnu_table& lnu() const noexcept { return lnu_view_; }
  void set_merge_policy(std::size_t min_tail, double tail_fraction) {
    detail::check_tail_fraction(tail_fraction);
    min_tail_ = min_tail;
    tail_fraction_ = tail_fraction;
  }

  /// Index tokens [begin, end) of keys ([kv_heads, tokens, dim]) with the
  /// given policy's threads and kernels, replacing any previous content.
  /// Throws on bad shapes, range or non-finite keys and leaves the index unchanged.
  template <element_type T>
  void build(const executor::cpu_policy& exec, const cache_view<const T>& keys, std::size_t begin, std::size_t end) {
    detail::check_index_keys(keys, heads_, dim());
    detail::check_index_range(begin, end, keys.tokens);
    detail::check_finite_keys(keys, begin, end);
    const auto& k = exec.kernels();
    std::vector<float> means(heads_ * plan_.dpad, 0.0f);
    // lsh_index's mean, so the centred keys, and hence the codes, are the same.
    exec.parallel_for(heads_, [&](std::size_t h, std::size_t) {
      detail::chunked_key_mean(keys.head(h), begin, end, &means[h * plan_.dpad]);
    });
    code_vector codes;
    hash_keys(exec, keys, begin, end, means.data(), codes);
    (void)k;
    build_from_codes(exec, std::move(means), codes, begin, end);
  }

  /// The table-building half of build(): install means ([heads][padded(dim)])
  /// and codes (as hash_keys() returns them) for tokens [begin, end). Public
  /// for benchmarks; the codes must come from hash_keys() with these means.
  void build_from_codes(const executor::cpu_policy& exec, std::vector<float> means,
                        const code_vector& codes, std::size_t begin, std::size_t end) {
    const std::size_t L = static_cast<std::size_t>(family_.tables());
    LSHATTN_REQUIRE(means.size() == heads_ * plan_.dpad && codes.size() == heads_ * L * (end - begin),
                    shape_mismatch, "codes", "codes.size() = ", codes.size(), " but ", heads_ * L * (end - begin),
                    " are needed");
    const std::size_t n = end - begin, B = family_.buckets(), blocks = (n + block_tokens - 1) / block_tokens;
    // A rebuild whose tables fit in the current ones' storage reuses it: the
    // pages are already mapped, where fresh ones (hundreds of MB at long
    // contexts) are faulted in and zeroed by the kernel on first touch, which
    // costs more than the counting sorts. Nothing can fail once the in-place
    // writing has started but the thread pool itself (bad_alloc, thread
    // creation); if that happens the index is left empty, not half-written.
    const bool in_place = tables_.size() == heads_ && std::all_of(tables_.begin(), tables_.end(), [&](const head_tables& t) {
                            // (and not far larger: memory_bytes() would not count the rest)
                            return t.ids.capacity() >= L * n && t.ids.capacity() <= 2 * L * n &&
                                   t.dir.capacity() >= blocks * L * B && t.dir.capacity() <= 2 * blocks * L * B;
                          });
    if (in_place) {
      try {
        tables_from_codes(exec, codes, n, tables_);
      } catch (...) {
        tables_.clear();
        built_ = false;
        begin_ = end_ = csr_end_ = 0;
        throw;
      }
    } else {
      std::vector<head_tables> tables(heads_);
      tables_from_codes(exec, codes, n, tables);
      tables_ = std::move(tables);
    }
    means_ = std::move(means);
    begin_ = begin;
    csr_end_ = end_ = end;
    built_ = true;
  }
  /// build() with every hardware thread and the best instruction set.
  template <element_type T>
  void build(const cache_view<const T>& keys, std::size_t begin, std::size_t end) {
    build(executor::cpu_policy{}, keys, begin, end);
  }

  /// Codes of tokens [begin, end) of every head, centred by means ([heads][dpad]):
  /// codes[(h * L + l) * (end - begin) + i]. The hashing half of build(), public for benchmarks.
  template <element_type T>
  void hash_keys(const executor::cpu_policy& exec, const cache_view<const T>& keys, std::size_t begin,
                 std::size_t end, const float* means, code_vector& codes) const {
    const std::size_t n = end - begin, L = static_cast<std::size_t>(family_.tables());
    codes.resize(heads_ * L * n);
    constexpr std::size_t chunk = 512;
    const std::size_t chunks = (n + chunk - 1) / chunk;
    const auto& k = exec.kernels();
    exec.parallel_for(heads_ * chunks, [&](std::size_t task, std::size_t) {
      const std::size_t h = task / chunks, r0 = (task % chunks) * chunk, nr = std::min(chunk, n - r0);
      auto& s = executor::cpu_detail::cpu_scratch::local();
      s.X.resize(chunk * plan_.dpad);
      s.bits.resize(chunk * plan_.words());
      s.unsure.resize(chunk * plan_.words());
      s.norms.resize(chunk);
      const auto kv = keys.head(h);
      k.centre[static_cast<int>(dtype_of<T>)](kv.row(begin + r0), kv.row_stride, nr, means + h * plan_.dpad, dim(),
                                              s.X.data(), plan_.dpad, s.norms.data());
      std::uint16_t* out = codes.data() + h * L * n + r0;
      plan_.encode(k, s.X.data(), nr, plan_.dpad, s.norms.data(), s.bits.data(), s.unsure.data(),
                   [&](std::size_t i, int l, std::uint32_t c) { out[static_cast<std::size_t>(l) * n + i] = static_cast<std::uint16_t>(c); });
    });
  }

  /// Index tokens [end(), new_end) of the grown cache. Throws and leaves the index unchanged on bad input.
  template <element_type T>
  void append(const cache_view<const T>& keys, std::size_t new_end, const executor::cpu_policy& exec = {}) {
    LSHATTN_REQUIRE(built_, invalid_state, "index", "append() before build()");
    detail::check_index_keys(keys, heads_, dim());
    detail::check_append_end(new_end, end_, keys.tokens);
    if (new_end == end_) return;
    detail::check_finite_keys(keys, end_, new_end);
    const std::size_t L = static_cast<std::size_t>(family_.tables()), add = new_end - end_, old = tail_size();
    code_vector codes;
    hash_keys(exec, keys, end_, new_end, means_.data(), codes);
    for (std::size_t h = 0; h < heads_; ++h) {
      std::vector<std::uint16_t> grown(L * (old + add));
      for (std::size_t l = 0; l < L; ++l) {
        std::copy_n(tables_[h].tail.data() + l * old, old, grown.data() + l * (old + add));
        std::copy_n(codes.data() + (h * L + l) * add, add, grown.data() + l * (old + add) + old);
      }
      tables_[h].tail = std::move(grown);
    }
    end_ = new_end;
    const std::size_t limit = std::max<std::size_t>(min_tail_, static_cast<std::size_t>(tail_fraction_ * size()));
    if (tail_size() > std::min<std::size_t>(limit, 32768)) merge_tail(exec);
  }
  /// Index newly cached tokens so that all but the last params.window are covered.
  template <element_type T>
  void sync(const cache_view<const T>& keys, const decode_params& params, const executor::cpu_policy& exec = {}) {
    const std::size_t target = keys.tokens > params.window ? keys.tokens - params.window : 0;
    if (target > end_) append(keys, target, exec);
  }

  /// Merge the tail into the blocks now: only the last partial block and new blocks are rebuilt.
  void merge_tail(const executor::cpu_policy& exec = {}) {
    if (tail_size() == 0) return;
    const std::size_t L = static_cast<std::size_t>(family_.tables());
    const std::size_t full = (csr_end_ - begin_) / block_tokens;  // blocks that stay as they are
    const std::size_t first = begin_ + full * block_tokens, n = end_ - first, tail = tail_size();
    exec.parallel_for(heads_, [&](std::size_t h, std::size_t) {
      head_tables& ht = tables_[h];
      std::vector<std::uint16_t> codes(L * n);
      if (csr_end_ > first) {  // recover the partial block's codes from its buckets
        const std::size_t len = csr_end_ - first, B = family_.buckets();
        for (std::size_t l = 0; l < L; ++l) {
          const std::uint16_t* ids = ht.ids.data() + ids_offset(full, l, len);
          const std::uint16_t* dir = ht.dir.data() + dir_offset(full, l);
          for (std::size_t c = 0; c < B; ++c) {
            const std::size_t lo = dir[c], hi = c + 1 < B ? dir[c + 1] : len;
            for (std::size_t i = lo; i < hi; ++i) codes[l * n + ids[i]] = static_cast<std::uint16_t>(c);
          }
        }
      }
      for (std::size_t l = 0; l < L; ++l)
        std::copy_n(ht.tail.data() + l * tail, tail, codes.data() + l * n + (csr_end_ - first));
      ht.ids.resize(full * L * block_tokens);
      ht.dir.resize(full * L * family_.buckets());
      append_blocks(codes, n, ht);
      ht.tail.clear();
    });
    csr_end_ = end_;
  }

  /// Keys of `head` colliding with q in at least m tables, ascending, with
  /// their counts, into ws.ids / ws.counts: lsh_index's contract.
  void query(std::size_t head, const float* q, int m, retrieval_workspace& ws) const {
    LSHATTN_REQUIRE(built_, invalid_state, "index", "query() before build()");
    LSHATTN_REQUIRE(head < heads_, invalid_argument, "head", "head = ", head, " must be < kv_heads = ", heads_);
    detail::check_threshold(m, family_.tables());
    ws.query_codes.resize(static_cast<std::size_t>(family_.tables()));
    family_.hash(q, ws.query_codes.data());
    collect(head, ws.query_codes.data(), m, ws);
  }
  /// Retrieval from precomputed query codes.
  void collect(std::size_t head, const std::uint32_t* codes, int m, retrieval_workspace& ws) const {
    ws.begin_query(end_);
    for_each_candidate(head, codes, [&](std::size_t, std::uint32_t token) { ws.touch(token, m); });
    ws.end_query();
  }

  /// Number of retrieval blocks: CSR blocks plus one for the tail when it is not empty.
  [[nodiscard]] std::size_t retrieval_blocks() const noexcept { return csr_blocks() + (tail_size() ? 1 : 0); }
  /// First token and token count of retrieval block b.
  [[nodiscard]] std::pair<std::size_t, std::size_t> block_range(std::size_t b) const noexcept {
    if (b < csr_blocks()) return {begin_ + b * block_tokens, block_len(b)};
    return {csr_end_, tail_size()};
  }

  /// The GQA retrieval of the CPU executor within block b: for query head g
  /// of the group (codes [group][L]), the tokens colliding in >= m tables.
  /// Appends to out_ids (token positions) and out_member (bit g set when head
  /// g sampled it) the union over the group, each token once. walk_block()
  /// for each head, then merge_hits(); the executor runs the heads' walks as
  /// separate tasks.
  void retrieve_group(std::size_t head, std::size_t b, const std::uint32_t* codes, std::size_t group, int m,
                      executor::cpu_detail::cpu_scratch& s, std::vector<std::uint32_t>& out_ids,
                      std::vector<std::uint64_t>& out_member) const {
    const std::size_t L = static_cast<std::size_t>(family_.tables());
    if (s.group_hits.size() < group) s.group_hits.resize(group);
    for (std::size_t g = 0; g < group; ++g) walk_block(head, b, codes + g * L, m, s, s.group_hits[g]);
    merge_hits(b, s.group_hits.data(), group, s, out_ids, out_member);
  }

  /// One query head's part of retrieve_group: the block-local offsets of the
  /// tokens of block b whose count over the L tables (codes qc[L]) reaches m,
  /// in the order they reach it, replace the contents of hits.
  void walk_block(std::size_t head, std::size_t b, const std::uint32_t* qc, int m,
                  executor::cpu_detail::cpu_scratch& s, std::vector<std::uint16_t>& hits) const {
    if (family_.tables() <= 255) walk_block<std::uint8_t>(head, b, qc, m, s, s.cnt8, hits);
    else walk_block<std::uint16_t>(head, b, qc, m, s, s.cnt16, hits);
  }

  /// The union of the heads' hit lists of block b (hits[g] for g < group, as
  /// walk_block() left them), in head order then hit order, appended to
  /// out_ids (token positions) and out_member (bit g set for head g).
  void merge_hits(std::size_t b, const std::vector<std::uint16_t>* hits, std::size_t group,
                  executor::cpu_detail::cpu_scratch& s, std::vector<std::uint32_t>& out_ids,
                  std::vector<std::uint64_t>& out_member) const {
    const std::size_t first = block_range(b).first;
    if (s.slot.size() < block_tokens) s.slot.assign(block_tokens, 0);
    if (++s.union_epoch == 0x10000u) {  // 16-bit union epochs: clear once every 65535 merges
      std::fill(s.slot.begin(), s.slot.end(), 0u);
      s.union_epoch = 1;
    }
    const std::uint32_t uep = s.union_epoch << 16;
    const std::size_t base = out_ids.size();
    std::size_t total = 0;
    for (std::size_t g = 0; g < group; ++g) total += hits[g].size();
    out_ids.reserve(base + total);
    out_member.reserve(base + total);
    for (std::size_t g = 0; g < group; ++g)
      for (const std::uint16_t local : hits[g]) {
        std::uint32_t& sl = s.slot[local];
        if ((sl & 0xffff0000u) != uep) {
          sl = uep | static_cast<std::uint32_t>(out_ids.size() - base);
          out_ids.push_back(static_cast<std::uint32_t>(first + local));
          out_member.push_back(0);
        }
        out_member[base + (sl & 0xffffu)] |= std::uint64_t{1} << g;
      }
  }

  /// Codes of g query rows q ([g][padded(dim)], zero padded) into codes
  /// [g][L]: the same bits as family().hash(), through the GEMM kernel.
  void hash_queries(const executor::cpu_detail::kernel_table& k, const float* q, std::size_t g,
                    std::uint32_t* codes) const {
    auto& s = executor::cpu_detail::cpu_scratch::local();
    s.bits.resize(std::max(s.bits.size(), g * plan_.words()));
    s.unsure.resize(std::max(s.unsure.size(), g * plan_.words()));
    s.norms.resize(std::max(s.norms.size(), g));
    for (std::size_t i = 0; i < g; ++i) {
      double n2 = 0.0;
      for (std::size_t j = 0; j < dim(); ++j) n2 += static_cast<double>(q[i * plan_.dpad + j]) * q[i * plan_.dpad + j];
      s.norms[i] = static_cast<float>(std::sqrt(n2)) * (1.0f + 0x1p-10f);
    }
    const std::size_t L = static_cast<std::size_t>(family_.tables());
    plan_.encode(k, q, g, plan_.dpad, s.norms.data(), s.bits.data(), s.unsure.data(),
                 [&](std::size_t i, int l, std::uint32_t c) { codes[i * L + static_cast<std::size_t>(l)] = c; });
  }

  /// Bytes held: ids, directories, tails and means (hyperplanes excluded).
  [[nodiscard]] std::size_t memory_bytes() const noexcept {
    std::size_t b = means_.size() * sizeof(float);
    for (const auto& ht : tables_) b += (ht.ids.size() + ht.dir.size() + ht.tail.size()) * sizeof(std::uint16_t);
    return b;
  }

 private:
  using table_vector = std::vector<std::uint16_t, executor::cpu_detail::table_allocator<std::uint16_t>>;
  struct head_tables {
    table_vector ids;                 // [block][L][block length]
    table_vector dir;                 // [block][L][2^K]
    std::vector<std::uint16_t> tail;  // [L][tail]
  };

  static int check_k(int K) {
    LSHATTN_REQUIRE(K <= 16, invalid_argument, "K", "K = ", K, " must be <= 16 for cpu_index (16-bit codes)");
    return K;
  }

  [[nodiscard]] std::size_t csr_blocks() const noexcept { return (csr_end_ - begin_ + block_tokens - 1) / block_tokens; }
  [[nodiscard]] std::size_t block_len(std::size_t b) const noexcept {
    return std::min(block_tokens, csr_end_ - begin_ - b * block_tokens);
  }
  [[nodiscard]] std::size_t ids_offset(std::size_t b, std::size_t l, std::size_t len) const noexcept {
    return b * static_cast<std::size_t>(family_.tables()) * block_tokens + l * len;
  }
  [[nodiscard]] std::size_t dir_offset(std::size_t b, std::size_t l) const noexcept {
    return (b * static_cast<std::size_t>(family_.tables()) + l) * family_.buckets();
  }

  // walk_block with counters of type C (L below its maximum, so that no
  // count wraps): cleared per walk (64 KB for 8-bit counters, a few hundred
  // stores) rather than epoch-stamped, which keeps them half or a quarter the
  // size (more of them in L1/L2) and the per-id work to an increment.
  template <class C>
  void walk_block(std::size_t head, std::size_t b, const std::uint32_t* qc, int m,
                  executor::cpu_detail::cpu_scratch& s, std::vector<C>& counts, std::vector<std::uint16_t>& out) const {
    const std::size_t L = static_cast<std::size_t>(family_.tables());
    const auto [first, len] = block_range(b);
    (void)first;
    if (counts.size() < block_tokens) counts.resize(block_tokens);
    C* cnt = counts.data();
    std::fill(cnt, cnt + len, C{0});
    const C target = static_cast<C>(m);
    if (b < csr_blocks()) {
      // The bucket walks are independent cache misses (a directory entry,
      // then the bucket, in tables of ~20 MB per block and head); walked one
      // after the other they cost two memory latencies each. So: all L
      // directory entries are requested first, then each bucket requested as
      // soon as its bounds are read, then the buckets counted. (Requesting
      // only the next 8 buckets while counting left most of the walk waiting
      // on memory on the development VM: 4 KiB pages, a page walk per bucket.)
      const std::uint16_t* dir = tables_[head].dir.data() + dir_offset(b, 0);
      const std::size_t B = family_.buckets();
      for (std::size_t l = 0; l < L; ++l) prefetch_line(dir + l * B + qc[l]);
      s.span.resize(L * 2);
      std::uint32_t* sp = s.span.data();
      std::size_t walked = 0;
      const std::uint16_t* ids = tables_[head].ids.data() + ids_offset(b, 0, len);
      for (std::size_t l = 0; l < L; ++l) {
        const std::size_t c = qc[l];
        const std::uint16_t* d = dir + l * B;
        sp[2 * l] = static_cast<std::uint32_t>(l * len + d[c]);
        sp[2 * l + 1] = static_cast<std::uint32_t>(l * len + (c + 1 < B ? d[c + 1] : len));
        walked += sp[2 * l + 1] - sp[2 * l];
        prefetch_span(ids, sp + 2 * l);
      }
      if (s.hits.size() < walked + 1) s.hits.resize(walked + 1);
      // Branch-free: every id is written to hits, and kept when its count
      // just reached m (~10% of ids: a branch on it would mispredict often).
      std::uint16_t* hits = s.hits.data();
      std::size_t n_hits = 0;
      for (std::size_t l = 0; l < L; ++l) {
        const std::uint16_t* p = ids + sp[2 * l];
        const std::uint16_t* e = ids + sp[2 * l + 1];
        for (; p != e; ++p) {
          const std::uint16_t id = *p;
          const C c = static_cast<C>(cnt[id] + 1);
          cnt[id] = c;
          hits[n_hits] = id;
          n_hits += c == target;
        }
      }
      out.assign(hits, hits + n_hits);
    } else {
      const std::uint16_t* tail = tables_[head].tail.data();
      out.clear();
      for (std::size_t l = 0; l < L; ++l) {
        const std::uint16_t code = static_cast<std::uint16_t>(qc[l]);
        for (std::size_t i = 0; i < len; ++i)
          if (tail[l * len + i] == code && ++cnt[i] == target) out.push_back(static_cast<std::uint16_t>(i));
      }
    }
  }

  static void prefetch_line(const void* p) noexcept {
#if defined(__GNUC__) && (defined(__x86_64__) || defined(__i386__))
    // asm, not __builtin_prefetch: GCC may delete a loop of the builtin as dead code.
    __asm__ volatile("prefetcht0 %0" : : "m"(*static_cast<const char*>(p)));
#elif defined(__GNUC__)
    __builtin_prefetch(p);
#else
    (void)p;
#endif
  }
  // The cache lines of ids[sp[0], sp[1]).
  static void prefetch_span(const std::uint16_t* ids, const std::uint32_t* sp) noexcept {
    const std::uintptr_t lo = reinterpret_cast<std::uintptr_t>(ids + sp[0]) & ~std::uintptr_t{63};
    const std::uintptr_t hi = reinterpret_cast<std::uintptr_t>(ids + sp[1]);
    for (std::uintptr_t p = lo; p < hi; p += 64) prefetch_line(reinterpret_cast<const void*>(p));
  }

  // Counting sort of each block of codes ([L][n], tokens in order) into ht.
  void append_blocks(const std::vector<std::uint16_t>& codes, std::size_t n, head_tables& ht) const {
    const std::size_t L = static_cast<std::size_t>(family_.tables()), B = family_.buckets();
    std::vector<std::uint32_t> start(B + 1);
    for (std::size_t t0 = 0; t0 < n; t0 += block_tokens) {
      const std::size_t len = std::min(block_tokens, n - t0);
      const std::size_t io = ht.ids.size(), dio = ht.dir.size();
      ht.ids.resize(io + L * len);
      ht.dir.resize(dio + L * B);
      for (std::size_t l = 0; l < L; ++l) {
        const std::uint16_t* c = codes.data() + l * n + t0;
        std::fill(start.begin(), start.end(), 0u);
        for (std::size_t i = 0; i < len; ++i) ++start[c[i] + 1u];
        for (std::size_t b = 0; b < B; ++b) start[b + 1] += start[b];
        std::uint16_t* dir = ht.dir.data() + dio + l * B;
        for (std::size_t b = 0; b < B; ++b) dir[b] = static_cast<std::uint16_t>(start[b]);
        std::uint16_t* ids = ht.ids.data() + io + l * len;
        for (std::size_t i = 0; i < len; ++i) ids[start[c[i]]++] = static_cast<std::uint16_t>(i);
      }
    }
  }

  void tables_from_codes(const executor::cpu_policy& exec, const code_vector& codes, std::size_t n,
                         std::vector<head_tables>& tables) const {
    const std::size_t L = static_cast<std::size_t>(family_.tables()), B = family_.buckets();
    const std::size_t blocks = (n + block_tokens - 1) / block_tokens;
    // Bucket counters per worker, allocated before any table is touched.
    std::vector<std::uint32_t> starts(exec.thread_count() * (B + 1));
    for (auto& ht : tables) {
      ht.ids.resize(L * n);  // uninitialised (table_allocator): written once below
      ht.dir.resize(blocks * L * B);
      ht.tail.clear();
    }
    // One task per (head, block, table): a counting sort of one block's codes.
    exec.parallel_for(heads_ * blocks * L, [&](std::size_t task, std::size_t worker) {
      const std::size_t h = task / (blocks * L), b = task / L % blocks, l = task % L;
      const std::size_t t0 = b * block_tokens, len = std::min(block_tokens, n - t0);
      const std::uint16_t* c = codes.data() + (h * L + l) * n + t0;
      std::uint32_t* start = starts.data() + worker * (B + 1);
      std::fill(start, start + B + 1, 0u);
      for (std::size_t i = 0; i < len; ++i) ++start[c[i] + 1u];
      for (std::size_t k = 0; k < B; ++k) start[k + 1] += start[k];
      std::uint16_t* dir = tables[h].dir.data() + (b * L + l) * B;
      for (std::size_t k = 0; k < B; ++k) dir[k] = static_cast<std::uint16_t>(start[k]);
      std::uint16_t* ids = tables[h].ids.data() + b * L * block_tokens + l * len;
      for (std::size_t i = 0; i < len; ++i) ids[start[c[i]]++] = static_cast<std::uint16_t>(i);
    });
  }

  template <class F>
  void for_each_candidate(std::size_t head, const std::uint32_t* codes, F&& f) const {
    const std::size_t L = static_cast<std::size_t>(family_.tables()), B = family_.buckets();
    const head_tables& ht = tables_[head];
    for (std::size_t l = 0; l < L; ++l) {
      const std::size_t c = codes[l];
      for (std::size_t b = 0; b < csr_blocks(); ++b) {
        const std::size_t len = block_len(b), first = begin_ + b * block_tokens;
        const std::uint16_t* ids = ht.ids.data() + ids_offset(b, l, len);
        const std::uint16_t* dir = ht.dir.data() + dir_offset(b, l);
        const std::size_t lo = dir[c], hi = c + 1 < B ? dir[c + 1] : len;
        for (std::size_t i = lo; i < hi; ++i) f(l, static_cast<std::uint32_t>(first + ids[i]));
      }
      const std::size_t tail = tail_size();
      for (std::size_t i = 0; i < tail; ++i)
        if (ht.tail[l * tail + i] == c) f(l, static_cast<std::uint32_t>(csr_end_ + i));
    }
  }

  // ln u on a grid of cosines (lnu_table), certified interval by interval:
  // an interval whose midpoint deviates from the interpolation by more than
  // 2^-21 (well below the fp32 rounding of a score) is left to the exact formula.
  void make_lnu_table() {
    constexpr std::size_t n = 8192;
    lnu_.assign(2 * n, 0.0f);
    std::vector<double> f(2 * n + 1);
    for (std::size_t i = 0; i <= 2 * n; ++i) f[i] = exact_lnu(-1.0 + static_cast<double>(i) / static_cast<double>(n), this);
    for (std::size_t i = 0; i < n; ++i) {
      const double a = f[2 * i], b = f[2 * i + 2], mid = f[2 * i + 1];
      const bool ok = std::isfinite(a) && std::isfinite(b) && std::fabs(0.5 * (a + b) - mid) <= 0x1p-21;
      lnu_[2 * i] = ok ? static_cast<float>(a) : std::numeric_limits<float>::quiet_NaN();
      lnu_[2 * i + 1] = ok ? static_cast<float>(b - a) : std::numeric_limits<float>::quiet_NaN();
    }
    lnu_view_ = {lnu_.data(), n, &exact_lnu, this};
  }
  static double exact_lnu(double c, const void* self) {
    const auto* idx = static_cast<const cpu_index*>(self);
    return collision::log_inclusion_probability_at(c, idx->family_.bits(), idx->family_.tables(), idx->m_);
  }

 public:
  cpu_index(const cpu_index& o) { *this = o; }
  cpu_index& operator=(const cpu_index& o) {
    if (this == &o) return *this;
    family_ = o.family_;
    heads_ = o.heads_;
    m_ = o.m_;
    begin_ = o.begin_, end_ = o.end_, csr_end_ = o.csr_end_;
    built_ = o.built_;
    min_tail_ = o.min_tail_;
    tail_fraction_ = o.tail_fraction_;
    means_ = o.means_;
    tables_ = o.tables_;
    plan_ = executor::cpu_detail::hash_plan(family_);
    lnu_ = o.lnu_;
    lnu_view_ = {lnu_.data(), o.lnu_view_.intervals, &exact_lnu, this};
    return *this;
  }
  cpu_index(cpu_index&& o) noexcept { *this = std::move(o); }
  cpu_index& operator=(cpu_index&& o) noexcept {
    family_ = std::move(o.family_);
    heads_ = o.heads_;
    m_ = o.m_;
    begin_ = o.begin_, end_ = o.end_, csr_end_ = o.csr_end_;
    built_ = o.built_;
    min_tail_ = o.min_tail_;
    tail_fraction_ = o.tail_fraction_;
    means_ = std::move(o.means_);
    tables_ = std::move(o.tables_);
    plan_ = std::move(o.plan_);
    plan_.planes = family_.hyperplanes();
    lnu_ = std::move(o.lnu_);
    lnu_view_ = {lnu_.data(), o.lnu_view_.intervals, &exact_lnu, this};
    return *this;
  }

 private:
  family_type family_{};
  std::size_t heads_ = 0;
  int m_ = 2;
  std::size_t begin_ = 0, end_ = 0, csr_end_ = 0;
  bool built_ = false;
  std::size_t min_tail_ = 256;
  double tail_fraction_ = 1.0 / 64.0;
  std::vector<float> means_;  // [heads][dpad]
  std::vector<head_tables> tables_;
  executor::cpu_detail::hash_plan plan_;
  std::vector<float> lnu_;
  executor::cpu_detail::lnu_table lnu_view_;
};

}  // namespace lshattn
