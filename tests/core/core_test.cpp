// Core: element types, views, errors, the mergeable softmax state and the LSE base.
#include "lshattn/core/dtype.hpp"

#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <string>
#include <vector>

#include "expect_error.hpp"
#include "lshattn/core/eigen.hpp"
#include "lshattn/core/error.hpp"
#include "lshattn/core/params.hpp"
#include "lshattn/core/state.hpp"
#include "lshattn/core/view.hpp"
#include "lshattn/random/philox.hpp"

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define LSHATTN_TEST_F16C 1
#endif

using namespace lshattn;

namespace {

float bits_to_float(std::uint32_t u) { return detail::bit_cast<float>(u); }
std::uint32_t float_bits(float f) { return detail::bit_cast<std::uint32_t>(f); }

// Round-to-nearest-even to the grid of representable values `table` (ascending
// non-negative magnitudes, element i having bit pattern i, the last one the
// "virtual" overflow value): the independent reference for both 16-bit types.
std::uint16_t round_to_table(double a, const std::vector<double>& table) {
  const auto it = std::lower_bound(table.begin(), table.end(), a);
  if (it == table.begin()) return 0;
  const std::size_t hi = static_cast<std::size_t>(it - table.begin());
  if (hi == table.size()) return static_cast<std::uint16_t>(table.size() - 1);
  const std::size_t lo = hi - 1;
  const double dlo = a - table[lo], dhi = table[hi] - a;  // exact: neighbours of a float
  if (dlo < dhi) return static_cast<std::uint16_t>(lo);
  if (dhi < dlo) return static_cast<std::uint16_t>(hi);
  return static_cast<std::uint16_t>((lo & 1) ? hi : lo);
}

std::vector<double> half_magnitudes() {  // 0x0000 .. 0x7c00 (Inf = the overflow point 2^16)
  std::vector<double> t;
  for (std::uint32_t h = 0; h < 0x7c00; ++h) {
    const std::uint32_t e = h >> 10, m = h & 0x3ff;
    t.push_back(e == 0 ? std::ldexp(static_cast<double>(m), -24) : std::ldexp(1024.0 + m, static_cast<int>(e) - 25));
  }
  t.push_back(65536.0);
  return t;
}

std::vector<float> test_floats() {  // random bit patterns plus edge cases
  std::vector<float> v;
  random::philox_engine rng(77);
  for (int i = 0; i < 300000; ++i) v.push_back(bits_to_float(rng()));
  for (int i = 0; i < 300000; ++i) {  // dense near the 16-bit ranges: exponents -30..20
    const std::uint32_t e = 97 + rng() % 51;
    v.push_back(bits_to_float((rng() & 0x807fffffu) | (e << 23)));
  }
  for (float f : {0.0f, -0.0f, 1.0f, 65504.0f, 65519.99f, 65520.0f, 65536.0f, 5.96046448e-8f, 2.98023224e-8f,
                  2.98023259e-8f, 6.09755516e-5f, 6.10351562e-5f, 3.38953139e38f, 3.40282347e38f,
                  std::numeric_limits<float>::infinity(), std::numeric_limits<float>::denorm_min(),
                  std::numeric_limits<float>::min()})
    for (float s : {1.0f, -1.0f}) v.push_back(f * s);
  return v;
}

#ifdef LSHATTN_TEST_F16C
__attribute__((target("f16c"))) std::uint16_t hw_half(float f) {
  return static_cast<std::uint16_t>(_cvtss_sh(f, _MM_FROUND_TO_NEAREST_INT));
}
#endif

}  // namespace

TEST_CASE("fp16: every half widens exactly and narrows back to itself") {
  const auto table = half_magnitudes();
  std::size_t bad = 0;
  for (std::uint32_t h = 0; h < 65536; ++h) {
    const float f = fp16::to_float(static_cast<std::uint16_t>(h));
    const std::uint32_t a = h & 0x7fff;
    if (a > 0x7c00) {
      bad += !std::isnan(f);
      bad += (fp16::from_float(f) & 0x7fff) <= 0x7c00;  // stays NaN
      continue;
    }
    const double want = a == 0x7c00 ? std::numeric_limits<double>::infinity() : table[a];
    bad += static_cast<double>(std::fabs(f)) != want;
    bad += std::signbit(f) != ((h & 0x8000) != 0);
    bad += fp16::from_float(f) != h;
  }
  CHECK(bad == 0);
}

TEST_CASE("fp16: narrowing rounds to nearest even, subnormals, overflow to Inf, NaN stays NaN") {
  const auto table = half_magnitudes();
  std::size_t bad = 0, hw_bad = 0, hw_checked = 0;
#ifdef LSHATTN_TEST_F16C
  const bool hw = __builtin_cpu_supports("f16c");
#else
  const bool hw = false;
#endif
  for (float f : test_floats()) {
    const std::uint16_t got = fp16::from_float(f);
    if (std::isnan(f)) {
      bad += (got & 0x7fff) <= 0x7c00;
      continue;
    }
    const std::uint16_t sign = std::signbit(f) ? 0x8000 : 0;
    const std::uint16_t want = sign | round_to_table(std::fabs(static_cast<double>(f)), table);
    bad += got != want;
#ifdef LSHATTN_TEST_F16C
    if (hw) {
      ++hw_checked;
      hw_bad += got != hw_half(f);
    }
#endif
  }
  CHECK(bad == 0);
  CHECK(hw_bad == 0);
  MESSAGE("compared with F16C _cvtss_sh on " << hw_checked << " floats");
}

TEST_CASE("bf16: every bf16 widens exactly, narrowing rounds to nearest even") {
  std::vector<double> table;  // magnitudes of 0x0000 .. 0x7f80 (the last is the overflow point 2^128)
  for (std::uint32_t b = 0; b < 0x7f80; ++b) table.push_back(static_cast<double>(bits_to_float(b << 16)));
  table.push_back(std::ldexp(1.0, 128));
  std::size_t bad = 0;
  for (std::uint32_t b = 0; b < 65536; ++b) {
    const float f = static_cast<float>(bf16::from_bits(static_cast<std::uint16_t>(b)));
    bad += float_bits(f) != (b << 16);
    if (std::isnan(f)) bad += !std::isnan(static_cast<float>(bf16(f)));
    else bad += bf16(f).bits != b;
  }
  for (float f : test_floats()) {
    const std::uint16_t got = bf16(f).bits;
    if (std::isnan(f)) {
      bad += (got & 0x7fff) <= 0x7f80;
      continue;
    }
    const std::uint16_t sign = std::signbit(f) ? 0x8000 : 0;
    const std::uint16_t want =
        std::isinf(f) ? static_cast<std::uint16_t>(sign | 0x7f80)
                      : static_cast<std::uint16_t>(sign | round_to_table(std::fabs(static_cast<double>(f)), table));
    bad += got != want;
  }
  // Signalling NaN payloads that live only in the low 16 bits must stay NaN.
  bad += !std::isnan(static_cast<float>(bf16(bits_to_float(0x7f800001u))));
  bad += !std::isnan(static_cast<float>(bf16(bits_to_float(0xff800001u))));
  CHECK(bad == 0);
  CHECK(to_float(from_float<bf16>(1.0f)) == 1.0f);
  CHECK(to_float(from_float<fp16>(-2.5f)) == -2.5f);
  CHECK(dtype_of<float> == dtype::f32);
  CHECK(std::string(to_string(dtype_of<bf16>)) == "bf16");
  CHECK(std::string(to_string(dtype_of<fp16>)) == "f16");
}

TEST_CASE("views: strides, rows, heads, prefix and const conversion") {
  static_assert(std::is_convertible_v<matrix_view<float>, matrix_view<const float>>);
  static_assert(!std::is_convertible_v<matrix_view<const float>, matrix_view<float>>);
  static_assert(std::is_convertible_v<cache_view<bf16>, cache_view<const bf16>>);
  static_assert(!std::is_convertible_v<cache_view<const fp16>, cache_view<fp16>>);
  std::vector<float> buf(200);
  for (std::size_t i = 0; i < buf.size(); ++i) buf[i] = static_cast<float>(i);
  matrix_view<float> m(buf.data(), 3, 4, 10);
  CHECK(m(2, 3) == 23.0f);
  CHECK(m.row(1)[0] == 10.0f);
  matrix_view<const float> c = m;
  CHECK(c.row_stride == 10);
  CHECK(c(1, 2) == 12.0f);
  CHECK(matrix_view<float>(buf.data(), 0, 4).empty());
  // Interleaved [tokens, heads, d] = [5, 2, 4]: head stride d, token stride heads * d.
  cache_view<const float> kv(buf.data(), 2, 5, 4, 4, 8);
  CHECK(kv.row(1, 3)[2] == static_cast<float>(3 * 8 + 4 + 2));
  const auto h1 = kv.head(1);
  CHECK(h1.rows == 5);
  CHECK(h1.row_stride == 8);
  CHECK(h1(3, 2) == kv.row(1, 3)[2]);
  const auto p = kv.prefix(2);
  CHECK(p.tokens == 2);
  CHECK(p.row(1, 1) == kv.row(1, 1));
  cache_view<const float> contiguous(buf.data(), 2, 5, 4);
  CHECK(contiguous.head_stride == 20);
  CHECK(contiguous.row(1, 2)[3] == 31.0f);
  // The checks name the view and the bad value.
  try {
    detail::check_view(matrix_view<const float>(nullptr, 2, 3), "queries");
    FAIL("null view accepted");
  } catch (const error& e) {
    CHECK(e.code() == errc::invalid_argument);
    CHECK(e.argument() == "queries");
  }
  try {
    detail::check_view(cache_view<const float>(buf.data(), 1, 3, 8, 24, 5), "keys");
    FAIL("token stride below dim accepted");
  } catch (const error& e) {
    CHECK(e.argument() == "keys");
    CHECK(std::string(e.what()).find("token_stride = 5") != std::string::npos);
  }
}

TEST_CASE("views: Eigen view_of for matrices, const matrices and strided maps") {
  row_matrix a(3, 5);
  for (int i = 0; i < 15; ++i) a.data()[i] = static_cast<float>(i);
  auto v = view_of(a);
  static_assert(std::is_same_v<decltype(v), matrix_view<float>>);
  CHECK(v.rows == 3);
  CHECK(v.cols == 5);
  CHECK(v.row_stride == 5);
  CHECK(v(2, 1) == a(2, 1));
  const row_matrix& ca = a;
  auto cv = view_of(ca);
  static_assert(std::is_same_v<decltype(cv), matrix_view<const float>>);
  CHECK(cv(1, 4) == a(1, 4));
  std::vector<float> buf(40);
  for (std::size_t i = 0; i < buf.size(); ++i) buf[i] = static_cast<float>(i);
  Eigen::Map<const row_matrix, 0, Eigen::OuterStride<>> map(buf.data(), 4, 3, Eigen::OuterStride<>(7));
  auto mv = view_of(map);
  CHECK(mv.row_stride == 7);
  CHECK(mv(3, 2) == map(3, 2));
  CHECK(mv(3, 2) == 23.0f);
}

TEST_CASE("errors name the argument and the value, with file and line") {
  const auto expect = [](auto&& f, errc code, const std::string& arg, const std::string& fragment) {
    const std::string w = test::expect_error(f, code, arg, fragment);
    CHECK(w.find(std::string(to_string(code))) != std::string::npos);
    CHECK(w.find("lshattn/core/params.hpp:") != std::string::npos);
  };
  expect([] { lsh_params{0, 150, 2}.validate(); }, errc::invalid_argument, "K", "K = 0");
  expect([] { lsh_params{33, 150, 2}.validate(); }, errc::invalid_argument, "K", "K = 33");
  expect([] { lsh_params{10, 0, 1}.validate(); }, errc::invalid_argument, "L", "L = 0");
  expect([] { lsh_params{10, max_tables + 1, 1}.validate(); }, errc::invalid_argument, "L",
         "L = " + std::to_string(max_tables + 1));
  expect([] { lsh_params{10, 5, 6}.validate(); }, errc::invalid_argument, "m", "m = 6");
  expect([] { lsh_params{10, 5, 0}.validate(); }, errc::invalid_argument, "m", "m = 0");
  expect([] { decode_params{4, 64, -1.0f}.validate(); }, errc::invalid_argument, "scale", "scale = -1");
  expect([] { decode_params{4, 64, std::nanf("")}.validate(); }, errc::invalid_argument, "scale", "scale = nan");
  CHECK_NOTHROW(lsh_params{}.validate());
  CHECK_NOTHROW(lsh_params{32, max_tables, max_tables}.validate());
  CHECK(to_string(errc::non_finite) == "non_finite");
  CHECK(decode_params{}.effective_scale(64) == 0.125);
  CHECK(decode_params{4, 64, 0.5f}.effective_scale(64) == 0.5);
}

namespace {
// Attention over keys [lo, hi) of a 1-d toy problem in float64: (o[d], lse).
void attend(const std::vector<double>& s, const std::vector<double>& v, std::size_t d, std::size_t lo, std::size_t hi,
            std::vector<double>& o, double& lse) {
  o.assign(d, 0.0);
  if (lo >= hi) {
    lse = -std::numeric_limits<double>::infinity();
    return;
  }
  double mx = -std::numeric_limits<double>::infinity(), sum = 0.0;
  for (std::size_t i = lo; i < hi; ++i) mx = std::max(mx, s[i]);
  for (std::size_t i = lo; i < hi; ++i) {
    const double w = std::exp(s[i] - mx);
    sum += w;
    for (std::size_t j = 0; j < d; ++j) o[j] += w * v[i * d + j];
  }
  for (auto& x : o) x /= sum;
  lse = mx + std::log(sum);
}
}  // namespace

TEST_CASE("merge_state: merging the states of a split equals attention over the union") {
  const std::size_t n = 97, d = 6;
  random::philox_engine rng(3);
  std::vector<double> s(n), v(n * d);
  for (auto& x : s) x = 40.0 * rng.uniform() - 20.0;
  for (auto& x : v) x = 2.0 * rng.uniform() - 1.0;
  std::vector<double> all, a, b;
  double lse_all = 0, la = 0, lb = 0;
  attend(s, v, d, 0, n, all, lse_all);
  // Float64 merge: relative rounding of a handful of operations on O(1) numbers.
  for (std::size_t split : {std::size_t{0}, std::size_t{1}, std::size_t{40}, n - 1, n}) {
    attend(s, v, d, 0, split, a, la);
    attend(s, v, d, split, n, b, lb);
    merge_state(a.data(), la, b.data(), lb, d);
    CHECK(la == doctest::Approx(lse_all).epsilon(1e-14));
    for (std::size_t j = 0; j < d; ++j) CHECK(std::fabs(a[j] - all[j]) <= 1e-14);
  }
  // Float states too (the type the GPU merges in): float rounding, 2^-24 relative, a few ops.
  std::vector<float> fa(d), fb(d);
  attend(s, v, d, 0, 50, a, la);
  attend(s, v, d, 50, n, b, lb);
  for (std::size_t j = 0; j < d; ++j) fa[j] = static_cast<float>(a[j]), fb[j] = static_cast<float>(b[j]);
  float fla = static_cast<float>(la);
  merge_state(fa.data(), fla, fb.data(), static_cast<float>(lb), d);
  CHECK(std::fabs(fla - lse_all) <= 8 * 0x1p-24 * std::fabs(lse_all));
  for (std::size_t j = 0; j < d; ++j) CHECK(std::fabs(fa[j] - all[j]) <= 8 * 0x1p-24);
}

TEST_CASE("merge_state: empty states contribute nothing and never make NaN") {
  const double inf = std::numeric_limits<double>::infinity();
  std::vector<double> o1{1.0, 2.0}, o2{5.0, 6.0};
  double a = 0.5;
  merge_state(o1.data(), a, o2.data(), -inf, 2);  // merging an empty state: no change
  CHECK(a == 0.5);
  CHECK(o1[0] == 1.0);
  std::vector<double> e{std::nan(""), std::nan("")};  // an empty state's o is never read
  double ae = -inf;
  merge_state(e.data(), ae, o2.data(), 1.5, 2);
  CHECK(ae == 1.5);
  CHECK(e[0] == 5.0);
  CHECK(e[1] == 6.0);
  std::vector<double> z{0.0, 0.0};
  double az = -inf;
  merge_state(z.data(), az, o2.data(), -inf, 2);  // both empty
  CHECK(az == -inf);
  CHECK(!std::isnan(z[0]));
  // Far-apart LSEs: no overflow, the smaller state vanishes.
  std::vector<double> p{1.0, 1.0}, q{3.0, 3.0};
  double ap = 700.0;
  merge_state(p.data(), ap, q.data(), -700.0, 2);
  CHECK(ap == 700.0);
  CHECK(p[0] == 1.0);
  float fo[1] = {2.0f}, fq[1] = {4.0f};
  float fa = -std::numeric_limits<float>::infinity();
  merge_state(fo, fa, fq, -std::numeric_limits<float>::infinity(), 1);
  CHECK(fa == -std::numeric_limits<float>::infinity());
  CHECK(!std::isnan(fo[0]));
}

TEST_CASE("lse base conversion: base 2 is natural / ln 2 and round-trips") {
  CHECK(ln2 == std::log(2.0));
  random::philox_engine rng(5);
  for (int i = 0; i < 1000; ++i) {
    const double x = 200.0 * rng.uniform() - 100.0;
    CHECK(lse_in_base(x, lse_base::natural) == x);
    CHECK(lse_to_natural(x, lse_base::natural) == x);
    const double b2 = lse_in_base(x, lse_base::base2);
    CHECK(std::fabs(b2 - x / std::log(2.0)) <= 0x1p-52 * std::fabs(b2));
    CHECK(std::fabs(std::exp2(b2) - std::exp(x)) <= 1e-13 * std::exp(x));
    CHECK(std::fabs(lse_to_natural(b2, lse_base::base2) - x) <= 0x1p-51 * std::fabs(x) + 1e-300);
  }
}
