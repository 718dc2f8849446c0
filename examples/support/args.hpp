#pragma once
// Command-line parsing shared by the example programs. Example code, not part
// of the library: problems are thrown as std::runtime_error, which each
// program's main() prints with its own name.

#include <cstdio>
#include <stdexcept>
#include <string>

namespace lshattn_examples {

/// Walks argv[1..] in order. For each argument a other than --help / -h,
/// calls handle(a, next), where next() consumes and returns the argument that
/// follows a (throwing "a needs a value" when there is none); handle returns
/// false for an option it does not know, which is thrown as an error. --help
/// or -h prints usage and returns false at once: the caller then exits with 0.
/// Returns true when every argument was handled.
template <class Handle>
bool parse_args(int argc, char** argv, const char* usage, Handle&& handle) {
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    const auto next = [&]() -> std::string {
      if (i + 1 >= argc) throw std::runtime_error(a + " needs a value");
      return argv[++i];
    };
    if (a == "--help" || a == "-h") {
      std::puts(usage);
      return false;
    }
    if (!handle(a, next)) throw std::runtime_error("unknown option " + a + " (try --help)");
  }
  return true;
}

}  // namespace lshattn_examples
