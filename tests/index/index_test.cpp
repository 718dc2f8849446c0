// The LSH index: contents and retrieval against brute force, growth, the
// epoch-stamped workspace, memory accounting and rejected input.
#include "lshattn/index/lsh_index.hpp"

#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <map>
#include <string>
#include <vector>

#include "expect_error.hpp"
#include "lshattn/decode.hpp"
#include "lshattn/estimator/lsh.hpp"
#include "lshattn/executor/reference.hpp"
#include "lshattn/random/normal.hpp"

using namespace lshattn;

namespace {

// Keys [heads, n, d] with a common offset (so centring matters) and mild
// clustering (so buckets are unevenly filled).
std::vector<float> make_keys(std::size_t heads, std::size_t n, std::size_t d, std::uint64_t seed) {
  std::vector<float> k(heads * n * d), offset(d), centres(4 * d);
  random::fill_normal(k.data(), k.size(), seed, 1);
  random::fill_normal(offset.data(), d, seed, 2);
  random::fill_normal(centres.data(), centres.size(), seed, 3);
  for (std::size_t h = 0; h < heads; ++h)
    for (std::size_t t = 0; t < n; ++t)
      for (std::size_t j = 0; j < d; ++j) k[(h * n + t) * d + j] += 3.0f * offset[j] + centres[(t % 4) * d + j];
  return k;
}

// Brute-force codes of tokens [0, n) of a head, centred by `mean`, with the scalar hash.
std::vector<std::uint32_t> brute_codes(const hash::simhash<>& f, const float* keys, std::size_t n, std::size_t d,
                                       std::span<const float> mean) {
  const std::size_t L = static_cast<std::size_t>(f.tables());
  std::vector<std::uint32_t> codes(n * L);
  std::vector<float> x(d);
  for (std::size_t t = 0; t < n; ++t) {
    for (std::size_t j = 0; j < d; ++j) x[j] = keys[t * d + j] - mean[j];
    f.hash(x.data(), codes.data() + t * L);
  }
  return codes;
}

// Brute-force retrieval over tokens [begin, end): ids with >= m collisions, ascending, and their counts.
void brute_retrieve(const hash::simhash<>& f, const std::vector<std::uint32_t>& codes, std::size_t begin,
                    std::size_t end, const float* q, int m, std::vector<std::uint32_t>& ids,
                    std::vector<std::uint16_t>& counts) {
  const std::size_t L = static_cast<std::size_t>(f.tables());
  std::vector<std::uint32_t> qc(L);
  f.hash(q, qc.data());
  ids.clear();
  counts.clear();
  for (std::size_t t = begin; t < end; ++t) {
    int c = 0;
    for (std::size_t l = 0; l < L; ++l) c += codes[t * L + l] == qc[l];
    if (c >= m) {
      ids.push_back(static_cast<std::uint32_t>(t));
      counts.push_back(static_cast<std::uint16_t>(c));
    }
  }
}

using test::expect_error;

}  // namespace

TEST_CASE("index contents equal a brute-force build, dense and sparse directories") {
  const std::size_t H = 2, n = 400, d = 16, b = 3, e = 380;
  const auto keys = make_keys(H, n, d, 1);
  cache_view<const float> kv(keys.data(), H, n, d);
  for (int K : {4, 10, 20, 32}) {
    INFO("K = " << K);
    const int L = 5;
    lsh_index<> idx(d, H, lsh_params{K, L, 1, 77});
    idx.build(kv, b, e);
    CHECK(idx.built());
    CHECK(idx.begin() == b);
    CHECK(idx.end() == e);
    CHECK(idx.size() == e - b);
    CHECK(idx.tail_size() == 0);
    for (std::size_t h = 0; h < H; ++h) {
      // The mean: float64 over [b, e), rounded once; equal to a plain float64 mean to float rounding.
      const auto mean = idx.mean(h);
      for (std::size_t j = 0; j < d; ++j) {
        double s = 0;
        for (std::size_t t = b; t < e; ++t) s += keys[(h * n + t) * d + j];
        CHECK(mean[j] == static_cast<float>(s / static_cast<double>(e - b)));
      }
      const auto codes = brute_codes(idx.family(), keys.data() + h * n * d, n, d, mean);
      for (int l = 0; l < L; ++l) {
        std::map<std::uint32_t, std::vector<std::uint32_t>> buckets;
        for (std::size_t t = b; t < e; ++t)
          buckets[codes[t * static_cast<std::size_t>(L) + static_cast<std::size_t>(l)]].push_back(static_cast<std::uint32_t>(t));
        std::size_t total = 0;
        for (const auto& [code, ids] : buckets) {
          const auto got = idx.bucket(h, l, code);
          CHECK(std::vector<std::uint32_t>(got.begin(), got.end()) == ids);
          total += got.size();
        }
        CHECK(total == e - b);
        // Codes nobody has: empty buckets (including codes beyond 2^K for the dense directory).
        for (std::uint32_t probe : {0u, 1u, 0x5555u, 0xffffffffu})
          if (!buckets.count(probe) && (K == 32 || probe < (1ull << K))) CHECK(idx.bucket(h, l, probe).empty());
      }
    }
  }
}

TEST_CASE("retrieval equals brute-force collision counting for every m") {
  const std::size_t H = 2, n = 300, d = 12;
  const auto keys = make_keys(H, n, d, 2);
  cache_view<const float> kv(keys.data(), H, n, d);
  std::vector<float> q(d);
  retrieval_workspace ws;
  std::vector<std::uint32_t> ids;
  std::vector<std::uint16_t> counts;
  for (int K : {3, 10, 32}) {
    const int L = 6;
    lsh_index<> idx(d, H, lsh_params{K, L, 2, 5});
    idx.build(kv, 0, n);
    for (std::size_t h = 0; h < H; ++h) {
      const auto codes = brute_codes(idx.family(), keys.data() + h * n * d, n, d, idx.mean(h));
      for (std::uint64_t qs = 0; qs < 4; ++qs) {
        random::fill_normal(q.data(), d, 100 + qs, 0);
        if (qs == 3) {  // a query equal to a centred key collides with it in every table
          for (std::size_t j = 0; j < d; ++j) q[j] = keys[(h * n + 17) * d + j] - idx.mean(h)[j];
        }
        for (int m = 1; m <= L; ++m) {
          INFO("K " << K << " head " << h << " query " << qs << " m " << m);
          idx.query(h, q.data(), m, ws);
          brute_retrieve(idx.family(), codes, 0, n, q.data(), m, ids, counts);
          CHECK(ws.ids == ids);
          CHECK(ws.counts == counts);
          if (qs == 3) CHECK(std::binary_search(ws.ids.begin(), ws.ids.end(), 17u));
        }
      }
    }
  }
}

namespace {
void check_growth(int K) {
  const std::size_t H = 2, n = 700, d = 8, b = 4;
  const auto keys = make_keys(H, n, d, 3);
  cache_view<const float> kv(keys.data(), H, n, d);
  const int L = 5;
  INFO("K = " << K);
  lsh_index<> idx(d, H, lsh_params{K, L, 1, 9});
  idx.set_merge_policy(40, 0.1);
  idx.build(kv.prefix(200), b, 150);
  const std::vector<float> mean0(idx.mean(1).begin(), idx.mean(1).end());
  retrieval_workspace ws;
  std::vector<std::uint32_t> ids;
  std::vector<std::uint16_t> counts;
  std::vector<float> q(d);
  std::size_t merges = 0, tails = 0;
  const auto check_all = [&](std::size_t end) {
    CHECK(idx.end() == end);
    for (std::size_t h = 0; h < H; ++h) {
      const auto codes = brute_codes(idx.family(), keys.data() + h * n * d, n, d, idx.mean(h));
      for (std::uint64_t qs = 0; qs < 2; ++qs) {
        random::fill_normal(q.data(), d, 500 + qs, 0);
        for (int m = 1; m <= L; ++m) {
          idx.query(h, q.data(), m, ws);
          brute_retrieve(idx.family(), codes, b, end, q.data(), m, ids, counts);
          CHECK(ws.ids == ids);
          CHECK(ws.counts == counts);
        }
      }
    }
  };
  std::size_t end = 150;
  for (std::size_t step : {1, 7, 30, 2, 50, 61, 5, 90, 3, 100, 40}) {
    const std::size_t prev_tail = idx.tail_size();
    end += step;
    idx.append(kv.prefix(end + 20), end);  // the cache holds more tokens than are indexed
    merges += idx.tail_size() < prev_tail + step;
    tails += idx.tail_size() > 0;
    check_all(end);
  }
  CHECK(merges >= 2);  // the policy merged the tail more than once...
  CHECK(tails >= 2);   // ...and retrieval also ran with a live tail
  // The mean is frozen at build().
  CHECK(std::equal(mean0.begin(), mean0.end(), idx.mean(1).begin()));
  // sync(): index everything but the last `window` tokens.
  idx.sync(kv, decode_params{4, 64});
  check_all(n - 64);
  idx.sync(kv.prefix(100), decode_params{4, 64});  // a shorter cache never shrinks the index
  CHECK(idx.end() == n - 64);
  idx.merge_tail();
  CHECK(idx.tail_size() == 0);
  check_all(n - 64);
  // After the merge the CSR buckets hold every token, ascending.
  const auto codes = brute_codes(idx.family(), keys.data(), n, d, idx.mean(0));
  std::vector<std::uint32_t> want;
  for (std::size_t t = b; t < n - 64; ++t)
    if (codes[t * L + 2] == codes[300 * L + 2]) want.push_back(static_cast<std::uint32_t>(t));
  const auto got = idx.bucket(0, 2, codes[300 * L + 2]);
  CHECK(std::vector<std::uint32_t>(got.begin(), got.end()) == want);
  idx.append(kv, n - 64);  // no-op
  CHECK(idx.end() == n - 64);
}
}  // namespace

TEST_CASE("append and sync grow the index like brute force over the frozen mean, across tail merges") {
  check_growth(6);   // dense directory
  check_growth(20);  // sparse directory
}

namespace {
// A second hash family, defined outside the library: SimHash with each code's
// bits reversed. A bijection of codes leaves every collision, and so the
// collision law, unchanged; the index and the estimators must take it as is.
struct reversed_simhash {
  using code_type = std::uint32_t;
  hash::simhash<> inner;
  std::size_t dim() const { return inner.dim(); }
  int bits() const { return inner.bits(); }
  int tables() const { return inner.tables(); }
  std::uint64_t buckets() const { return inner.buckets(); }
  std::uint64_t seed() const { return inner.seed(); }
  void hash(const float* x, code_type* codes) const {
    inner.hash(x, codes);
    for (int l = 0; l < tables(); ++l) {
      code_type r = 0;
      for (int t = 0; t < bits(); ++t) r |= ((codes[l] >> t) & 1u) << (bits() - 1 - t);
      codes[l] = r;
    }
  }
  double table_collision_probability(double c) const { return inner.table_collision_probability(c); }
};
static_assert(hash::family<reversed_simhash>);
}  // namespace

TEST_CASE("a hash family defined outside the library plugs into the index unchanged") {
  const std::size_t H = 2, n = 300, d = 8;
  const auto keys = make_keys(H, n, d, 8);
  cache_view<const float> kv(keys.data(), H, n, d);
  lsh_index<> plain(d, H, lsh_params{7, 6, 2, 4});
  lsh_index<reversed_simhash> rev(reversed_simhash{hash::simhash<>(d, 7, 6, 4)}, H, 2);
  plain.build(kv, 0, 200);
  rev.build(kv, 0, 200);
  rev.append(kv, 260);
  plain.append(kv, 260);
  retrieval_workspace a, b;
  std::vector<float> q(d);
  for (std::uint64_t s = 0; s < 5; ++s) {
    random::fill_normal(q.data(), d, 40 + s, 0);
    for (int m = 1; m <= 6; ++m) {
      plain.query(s % H, q.data(), m, a);
      rev.query(s % H, q.data(), m, b);
      CHECK(a.ids == b.ids);
      CHECK(a.counts == b.counts);
    }
  }
  // ... and into the LSH estimator and the executor: the same samples, the same u, the same output.
  std::vector<float> vals(keys.size()), Q(4 * d), o1(4 * d), o2(4 * d), l1(4), l2(4);
  random::fill_normal(vals.data(), vals.size(), 2, 2);
  random::fill_normal(Q.data(), Q.size(), 3, 3);
  cache_view<const float> vv(vals.data(), H, n, d);
  decode(reference, estimator::lsh{}, decode_params{},
         decode_request<float, float>{matrix_view<const float>(Q.data(), 4, d), kv, vv, &plain,
                                      matrix_view<float>(o1.data(), 4, d), l1});
  decode(reference, estimator::lsh{}, decode_params{},
         decode_request<float, float, float, lsh_index<reversed_simhash>>{
             matrix_view<const float>(Q.data(), 4, d), kv, vv, &rev, matrix_view<float>(o2.data(), 4, d), l2});
  CHECK(o1 == o2);
  CHECK(l1 == l2);
}

TEST_CASE("repeated queries need no clear: the epoch separates them") {
  const std::size_t n = 200, d = 8;
  const auto keys = make_keys(1, n, d, 4);
  lsh_index<> idx(d, 1, lsh_params{3, 6, 2, 1});
  idx.build(cache_view<const float>(keys.data(), 1, n, d), 0, n);
  retrieval_workspace ws, fresh;
  std::vector<float> q1(d), q2(d);
  random::fill_normal(q1.data(), d, 1, 0);
  random::fill_normal(q2.data(), d, 2, 0);
  idx.query(0, q1.data(), 2, ws);
  const auto first = ws.ids;
  const auto first_counts = ws.counts;
  for (int i = 0; i < 50; ++i) {
    idx.query(0, (i % 2 ? q1 : q2).data(), 1 + i % 6, ws);
    idx.query(0, (i % 2 ? q1 : q2).data(), 1 + i % 6, fresh = retrieval_workspace{});
    CHECK(ws.ids == fresh.ids);
    CHECK(ws.counts == fresh.counts);
  }
  idx.query(0, q1.data(), 2, ws);
  CHECK(ws.ids == first);
  CHECK(ws.counts == first_counts);
  // Epoch wrap-around: the one real clear keeps results right.
  ws.epoch = 0xffffffffu;
  idx.query(0, q1.data(), 2, ws);
  CHECK(ws.epoch == 1);
  CHECK(ws.ids == first);
}

TEST_CASE("memory_bytes: ids, offsets, codes and means, within plausible bounds") {
  const std::size_t H = 2, n = 1000, d = 16;
  const auto keys = make_keys(H, n, d, 5);
  cache_view<const float> kv(keys.data(), H, n, d);
  for (int K : {4, 10, 20}) {
    const int L = 8;
    lsh_index<> idx(d, H, lsh_params{K, L, 1, 2});
    CHECK(idx.memory_bytes() == 0);
    idx.build(kv, 0, n);
    const std::size_t ids = H * L * n * 4, means = H * d * 4;
    const std::size_t dense_dir = H * L * ((std::size_t{1} << K) + 1) * 4;
    const std::size_t sparse_dir = H * L * (n + 1) * 8;  // at most n codes + n + 1 offsets per table
    const std::size_t b = idx.memory_bytes();
    CHECK(b >= ids + means);
    CHECK(b <= ids + means + std::max(dense_dir, sparse_dir));
    if (K <= 10) CHECK(b == ids + means + dense_dir);  // the dense directory: exactly 2^K + 1 offsets
    CHECK(idx.family().memory_bytes() == static_cast<std::size_t>(K * L) * d * 4);
  }
}

TEST_CASE("non-finite keys are rejected and leave the index unchanged") {
  const std::size_t n = 120, d = 8;
  auto keys = make_keys(1, n, d, 6);
  cache_view<const float> kv(keys.data(), 1, n, d);
  lsh_index<> idx(d, 1, lsh_params{4, 6, 1, 3});
  expect_error([&] {
    auto bad = keys;
    bad[5 * d + 3] = std::numeric_limits<float>::quiet_NaN();
    idx.build(cache_view<const float>(bad.data(), 1, n, d), 0, 60);
  }, errc::non_finite, "keys");
  CHECK_FALSE(idx.built());
  idx.build(kv, 0, 60);
  std::vector<float> q(d, 1.0f);
  retrieval_workspace ws;
  idx.query(0, q.data(), 1, ws);
  const auto before = ws.ids;
  const std::size_t bytes = idx.memory_bytes();
  for (float v : {std::numeric_limits<float>::quiet_NaN(), std::numeric_limits<float>::infinity(),
                  -std::numeric_limits<float>::infinity()}) {
    auto bad = keys;
    bad[70 * d + 1] = v;
    cache_view<const float> bv(bad.data(), 1, n, d);
    expect_error([&] { idx.append(bv, 80); }, errc::non_finite, "keys");
    expect_error([&] { idx.build(bv, 0, 100); }, errc::non_finite, "keys");
    CHECK(idx.end() == 60);
    CHECK(idx.tail_size() == 0);
    CHECK(idx.memory_bytes() == bytes);
    idx.query(0, q.data(), 1, ws);
    CHECK(ws.ids == before);
  }
  // bf16 and fp16 keys: the same policy (an fp16 overflow to Inf is non-finite too).
  std::vector<fp16> hk(n * d, fp16(1.0f));
  for (std::size_t i = 0; i < hk.size(); ++i) hk[i] = fp16(keys[i] * 0.1f);
  hk[3] = fp16::from_bits(0x7c00);
  expect_error([&] { idx.build(cache_view<const fp16>(hk.data(), 1, n, d), 0, 10); }, errc::non_finite, "keys");
  std::vector<bf16> bk(n * d, bf16(1.0f));
  bk[9] = bf16::from_bits(0x7fc0);
  expect_error([&] { idx.build(cache_view<const bf16>(bk.data(), 1, n, d), 0, 10); }, errc::non_finite, "keys");
  CHECK(idx.end() == 60);
}

TEST_CASE("bad ranges, shapes, heads and parameters throw naming the argument") {
  const std::size_t n = 50, d = 8;
  const auto keys = make_keys(2, n, d, 7);
  cache_view<const float> kv(keys.data(), 2, n, d);
  lsh_index<> idx(d, 2, lsh_params{4, 6, 2, 3});
  std::vector<float> q(d, 0.5f);
  retrieval_workspace ws;
  expect_error([&] { idx.query(0, q.data(), 1, ws); }, errc::invalid_state, "index");
  expect_error([&] { idx.append(kv, 10); }, errc::invalid_state, "index");
  expect_error([&] { idx.build(kv, 30, 20); }, errc::invalid_argument, "range");
  expect_error([&] { idx.build(kv, 0, n + 1); }, errc::invalid_argument, "range");
  expect_error([&] { idx.build(cache_view<const float>(keys.data(), 1, n, d), 0, 10); }, errc::shape_mismatch, "keys.heads");
  expect_error([&] { idx.build(cache_view<const float>(keys.data(), 2, n / 2, 2 * d), 0, 10); }, errc::shape_mismatch,
               "keys.dim");
  expect_error([&] { idx.build(cache_view<const float>(nullptr, 2, n, d), 0, 10); }, errc::invalid_argument, "keys");
  CHECK_FALSE(idx.built());
  idx.build(kv, 2, 30);
  expect_error([&] { idx.append(kv, 29); }, errc::invalid_argument, "new_end");
  expect_error([&] { idx.append(kv, n + 1); }, errc::invalid_argument, "new_end");
  expect_error([&] { idx.query(2, q.data(), 1, ws); }, errc::invalid_argument, "head");
  expect_error([&] { idx.query(0, q.data(), 0, ws); }, errc::invalid_argument, "m");
  expect_error([&] { idx.query(0, q.data(), 7, ws); }, errc::invalid_argument, "m");
  expect_error([&] { idx.set_merge_policy(10, 1.5); }, errc::invalid_argument, "tail_fraction");
  expect_error([&] { idx.set_merge_policy(10, -0.1); }, errc::invalid_argument, "tail_fraction");
  CHECK(idx.begin() == 2);
  CHECK(idx.end() == 30);
  expect_error([&] { lsh_index<>(d, 0, lsh_params{}); }, errc::invalid_argument, "kv_heads");
  expect_error([&] { lsh_index<>(d, 2, lsh_params{0, 10, 1}); }, errc::invalid_argument, "K");
  expect_error([&] { lsh_index<>(d, 2, lsh_params{4, 10, 11}); }, errc::invalid_argument, "m");
  expect_error([&] { lsh_index<>(0, 2, lsh_params{}); }, errc::invalid_argument, "dim");
  expect_error([&] { lsh_index<>(hash::simhash<>(d, 4, 5, 1), 2, 6); }, errc::invalid_argument, "m");
  // An empty range builds an empty index that retrieves nothing.
  idx.build(kv, 10, 10);
  idx.query(1, q.data(), 1, ws);
  CHECK(ws.ids.empty());
}
