#pragma once
// The bad-input contract of LSHATTN_REQUIRE as the test folders check it: a
// call throws lshattn::error with the expected errc, naming the argument, and
// its message shows the offending value.

#include <doctest/doctest.h>

#include <string>
#include <utility>

#include "lshattn/core/error.hpp"

namespace lshattn::test {

/// f() throws lshattn::error with `code` and argument() == arg. Returns the
/// message, for further checks by the caller.
template <class F>
std::string expect_error(F&& f, errc code, const std::string& arg) {
  try {
    std::forward<F>(f)();
  } catch (const error& e) {
    CHECK(e.code() == code);
    CHECK(e.argument() == arg);
    return e.what();
  }
  FAIL("no throw for " << arg);
  return {};
}

/// As above, and the message contains `fragment` (typically "name = value").
template <class F>
std::string expect_error(F&& f, errc code, const std::string& arg, const std::string& fragment) {
  std::string what = expect_error(std::forward<F>(f), code, arg);
  CHECK(what.find(fragment) != std::string::npos);
  return what;
}

}  // namespace lshattn::test
