// Hashing: the exact sign of a float dot product against a big-integer
// reference, and SimHash's codes (scalar == GEMM batch, seeds, bad input).
#include "lshattn/hash/simhash.hpp"

#include <doctest/doctest.h>

#include <array>
#include <cmath>
#include <cstdint>
#include <string>
#include <vector>

#include "conformance.hpp"
#include "expect_error.hpp"
#include "lshattn/hash/concepts.hpp"
#include "lshattn/hash/exact_sign.hpp"

using namespace lshattn;

static_assert(hash::family<hash::simhash<>>);
static_assert(hash::family<hash::simhash<std::uint16_t>>);
static_assert(hash::family<hash::simhash<std::uint8_t>>);

namespace {

__extension__ typedef unsigned __int128 u128;

// Brute-force exact reference: each product of two floats is an integer
// (at most 48 bits) times a power of two; all of them are added into one
// 512-bit two's-complement fixed-point accumulator whose lowest bit is 2^-320,
// which holds every product of floats whose exponents lie in [-150, 100].
struct bigsum {
  static constexpr int limbs = 8, low = -320;
  std::array<std::uint64_t, limbs> a{};
  void add_shifted(u128 mag, int shift, bool negative) {
    std::array<std::uint64_t, limbs> v{};
    const int limb = shift / 64, bit = shift % 64;
    // mag < 2^48, so it spans at most two limbs after the shift.
    const u128 s = mag << bit;
    v[static_cast<std::size_t>(limb)] = static_cast<std::uint64_t>(s);
    if (limb + 1 < limbs) v[static_cast<std::size_t>(limb + 1)] = static_cast<std::uint64_t>(s >> 64);
    if (negative) {  // two's complement negation
      unsigned carry = 1;
      for (auto& x : v) {
        x = ~x + carry;
        carry = carry && x == 0;
      }
    }
    u128 carry = 0;
    for (int i = 0; i < limbs; ++i) {
      const u128 t = static_cast<u128>(a[static_cast<std::size_t>(i)]) + v[static_cast<std::size_t>(i)] + carry;
      a[static_cast<std::size_t>(i)] = static_cast<std::uint64_t>(t);
      carry = t >> 64;
    }
  }
  void add_product(float x, float w) {
    if (x == 0.0f || w == 0.0f) return;
    int ex = 0, ew = 0;
    const double mx = std::frexp(static_cast<double>(x), &ex), mw = std::frexp(static_cast<double>(w), &ew);
    const auto ix = static_cast<std::int64_t>(std::ldexp(mx, 24)), iw = static_cast<std::int64_t>(std::ldexp(mw, 24));
    // x * w = ix * iw * 2^(ex + ew - 48)
    const int shift = ex + ew - 48 - low;
    REQUIRE(shift >= 0);
    REQUIRE(shift + 49 < 64 * limbs - 1);
    const bool neg = (ix < 0) != (iw < 0);
    add_shifted(static_cast<u128>(std::llabs(ix)) * static_cast<u128>(std::llabs(iw)), shift, neg);
  }
  int sign() const {
    if (a[limbs - 1] >> 63) return -1;
    for (auto x : a)
      if (x) return 1;
    return 0;
  }
};

int reference_sign(const std::vector<float>& x, const std::vector<float>& w) {
  bigsum s;
  for (std::size_t i = 0; i < x.size(); ++i) s.add_product(x[i], w[i]);
  return s.sign();
}

float random_float(random::philox_engine& r, int emin, int emax) {
  const double m = 0.5 + 0.5 * r.uniform();
  const int e = emin + static_cast<int>(r.below(static_cast<std::uint64_t>(emax - emin + 1)));
  return static_cast<float>((r() & 1 ? -1.0 : 1.0) * std::ldexp(m, e));
}

}  // namespace

TEST_CASE("exact_dot_sign: constructed cancellations with a known sign") {
  // big + tiny - big: float64 summation in this order gives 0; the sign is the tiny term's.
  for (float tiny : {1e-30f, -1e-30f, 1e-38f, -3e-39f}) {
    const std::vector<float> x{1e30f, tiny, -1e30f}, w{1e8f, 1.0f, 1e8f};
    const int want = tiny > 0 ? 1 : -1;
    CHECK(hash::exact_dot_sign(x.data(), w.data(), 3) == want);
    CHECK(hash::dot_positive(x.data(), w.data(), 3) == (want > 0));
  }
  // Random products, then their exact negations in another order: sum exactly 0.
  random::philox_engine r(8);
  for (int rep = 0; rep < 200; ++rep) {
    const std::size_t k = 1 + r.below(60);
    std::vector<float> x, w;
    for (std::size_t i = 0; i < k; ++i) {
      x.push_back(random_float(r, -60, 60));
      w.push_back(random_float(r, -60, 60));
    }
    for (std::size_t i = k; i-- > 0;) {
      x.push_back(-x[i]);
      w.push_back(w[i]);
    }
    CHECK(hash::exact_dot_sign(x.data(), w.data(), x.size()) == 0);
    CHECK_FALSE(hash::dot_positive(x.data(), w.data(), x.size()));  // [0 > 0] is false
    // ... plus one tiny term: its sign decides.
    const float t = random_float(r, -140, -100);
    x.insert(x.begin() + static_cast<std::ptrdiff_t>(r.below(x.size())), t);
    w.insert(w.begin() + static_cast<std::ptrdiff_t>(r.below(w.size())), 1.0f);
    // (the insert positions differ, so recompute the reference rather than trust the construction)
    const int want = reference_sign(x, w);
    CHECK(hash::exact_dot_sign(x.data(), w.data(), x.size()) == want);
  }
  CHECK(hash::exact_dot_sign(nullptr, nullptr, 0) == 0);
}

TEST_CASE("exact_dot_sign and dot_positive agree with a big-integer reference") {
  random::philox_engine r(9);
  std::size_t bad = 0, near_zero = 0;
  for (int rep = 0; rep < 3000; ++rep) {
    std::size_t n = 1 + r.below(130);
    const int spread = rep % 3 == 0 || rep % 4 == 1 ? 60 : 8;  // wide exponent ranges stress the expansion
    std::vector<float> x(n), w(n);
    for (std::size_t i = 0; i < n; ++i) {
      x[i] = random_float(r, -spread, spread);
      w[i] = random_float(r, -spread, spread);
    }
    if (rep % 2 == 0 && n > 1) {
      // Choose the last x so that the sum nearly cancels: x_last = -rest / w_last, rounded.
      long double rest = 0.0L;
      for (std::size_t i = 0; i + 1 < n; ++i) rest += static_cast<long double>(x[i]) * w[i];
      const float last = static_cast<float>(-rest / w[n - 1]);
      if (std::isfinite(last)) x[n - 1] = last;  // (a huge rest over a tiny w would overflow)
    }
    if (rep % 4 == 1) {
      // Large products and their exact negations, shuffled, around a few small
      // ones: the float64 sum's rounding error dwarfs the true (small) sum.
      std::vector<float> x2, w2;
      for (std::size_t i = 0; i < n; ++i) {
        x2.push_back(x[i]), w2.push_back(w[i]);
        x2.push_back(-x[i]), w2.push_back(w[i]);
      }
      for (int k = 0; k < 3; ++k) x2.push_back(random_float(r, -40, -20)), w2.push_back(random_float(r, -10, 0));
      for (std::size_t i = x2.size(); i > 1; --i) {  // Fisher-Yates
        const std::size_t j = r.below(i);
        std::swap(x2[i - 1], x2[j]);
        std::swap(w2[i - 1], w2[j]);
      }
      x.swap(x2), w.swap(w2);
      n = x.size();
    }
    const int want = reference_sign(x, w);
    double s = 0.0;
    for (std::size_t i = 0; i < n; ++i) s += static_cast<double>(x[i]) * w[i];
    near_zero += (s > 0) != (want > 0);  // cases where naive float64 would decide wrongly
    bad += hash::exact_dot_sign(x.data(), w.data(), n) != want;
    bad += hash::dot_positive(x.data(), w.data(), n) != (want > 0);
  }
  CHECK(bad == 0);
  MESSAGE(near_zero << " of 3000 cases have a naive float64 sign that differs from the exact one");
}

TEST_CASE("simhash: hash() == hash_batch() bit for bit, random and adversarial inputs") {
  lshattn::conformance::check_hash_codes([](const hash::simhash<>& f, const float* x, std::size_t n, std::size_t ld,
                                            std::uint32_t* codes) { f.hash_batch(x, n, ld, codes); });
  // Across hash_batch's 1024-row blocks, with 16-bit codes.
  const hash::simhash<std::uint16_t> f(7, 16, 5, 77);
  const std::size_t n = 2100;
  std::vector<float> x(n * 7);
  random::fill_normal(x.data(), x.size(), 5, 5);
  std::vector<std::uint16_t> a(n * 5), b(n * 5);
  for (std::size_t i = 0; i < n; ++i) f.hash(x.data() + i * 7, a.data() + i * 5);
  f.hash_batch(x.data(), n, 7, b.data());
  CHECK(a == b);
}

TEST_CASE("simhash: hyperplanes come from the seed alone, zero maps to code 0") {
  const hash::simhash<> a(32, 10, 15, 1234), b(32, 10, 15, 1234), c(32, 10, 15, 1235);
  CHECK(std::equal(a.hyperplanes(), a.hyperplanes() + 32 * 150, b.hyperplanes()));
  CHECK(!std::equal(a.hyperplanes(), a.hyperplanes() + 32 * 150, c.hyperplanes()));
  for (std::size_t r : {std::size_t{0}, std::size_t{17}, std::size_t{149}})
    for (std::size_t j : {std::size_t{0}, std::size_t{31}})
      CHECK(a.hyperplanes()[r * 32 + j] == static_cast<float>(random::normal_at(1234, hash::simhash_stream, r * 32 + j)));
  CHECK(a.memory_bytes() == 32 * 150 * sizeof(float));
  CHECK(a.buckets() == 1024);
  CHECK(a.bits() == 10);
  CHECK(a.tables() == 15);
  CHECK(a.seed() == 1234);
  std::vector<float> zero(32, 0.0f), x(32);
  std::vector<std::uint32_t> codes(15, 99);
  a.hash(zero.data(), codes.data());
  for (auto code : codes) CHECK(code == 0);
  // Bit t of table l is [x . w_{l K + t} > 0].
  random::fill_normal(x.data(), 32, 3, 3);
  a.hash(x.data(), codes.data());
  for (int l = 0; l < 15; ++l)
    for (int t = 0; t < 10; ++t) {
      const float* w = a.hyperplanes() + static_cast<std::size_t>(l * 10 + t) * 32;
      double dot = 0;
      for (int j = 0; j < 32; ++j) dot += static_cast<double>(x[static_cast<std::size_t>(j)]) * w[j];
      CHECK(((codes[static_cast<std::size_t>(l)] >> t) & 1u) == (dot > 0 ? 1u : 0u));
    }
  // A K = 32 family uses every bit of the code; scaling x by a positive factor keeps the codes.
  const hash::simhash<> k32(32, 32, 2, 9);
  std::vector<std::uint32_t> c1(2), c2(2);
  k32.hash(x.data(), c1.data());
  for (auto& v : x) v *= 3.0f;
  k32.hash(x.data(), c2.data());
  CHECK(c1 == c2);
}

TEST_CASE("simhash: bad dim, K and L throw naming the argument") {
  const auto expect = [](auto&& f, const std::string& arg, const std::string& fragment) {
    test::expect_error(f, errc::invalid_argument, arg, fragment);
  };
  expect([] { hash::simhash<>(0, 10, 10, 1); }, "dim", "dim = 0");
  expect([] { hash::simhash<>(max_head_dim + 1, 10, 10, 1); }, "dim", "dim = " + std::to_string(max_head_dim + 1));
  expect([] { hash::simhash<>(16, 0, 10, 1); }, "K", "K = 0");
  expect([] { hash::simhash<>(16, 33, 10, 1); }, "K", "K = 33");
  expect([] { hash::simhash<std::uint16_t>(16, 17, 10, 1); }, "K", "K = 17");
  expect([] { hash::simhash<std::uint8_t>(16, 9, 10, 1); }, "K", "K = 9");
  expect([] { hash::simhash<>(16, 10, 0, 1); }, "L", "L = 0");
  expect([] { hash::simhash<>(16, 10, max_tables + 1, 1); }, "L", "L = " + std::to_string(max_tables + 1));
  expect([] { hash::simhash<>(16, lsh_params{10, 150, 151}); }, "m", "m = 151");
  CHECK_NOTHROW(hash::simhash<>(1, 32, 1, 1));
}
