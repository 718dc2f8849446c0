#pragma once
// The library's one error channel: every rejected call throws lshattn::error.
// Checks run before any state is touched, so a call that throws leaves caches,
// indexes and outputs as they were. The library never prints and never aborts
// on user error.

#include <cstdint>
#include <sstream>
#include <stdexcept>
#include <string>
#include <string_view>

namespace lshattn {

/// What kind of misuse or failure an lshattn::error reports.
enum class errc : std::uint8_t {
  invalid_argument,  ///< a value outside its documented domain (K, L, m, sizes, strides)
  shape_mismatch,    ///< views whose extents disagree (head counts, head_dim, tokens)
  non_finite,        ///< NaN or Inf where finite numbers are required (queries, keys, values)
  invalid_state,     ///< an object used before it was ready (index not built, empty cache)
  unsupported,       ///< a valid request this backend or build does not implement
  backend_failure,   ///< the backend failed (CUDA errors carry the CUDA error string)
};

/// Human-readable name of an errc value.
inline constexpr std::string_view to_string(errc c) noexcept {
  switch (c) {
    case errc::invalid_argument: return "invalid_argument";
    case errc::shape_mismatch: return "shape_mismatch";
    case errc::non_finite: return "non_finite";
    case errc::invalid_state: return "invalid_state";
    case errc::unsupported: return "unsupported";
    case errc::backend_failure: return "backend_failure";
  }
  return "unknown";
}

/// Exception thrown by every lshattn entry point. what() reads
/// "lshattn: <code>: <argument> = <value>: <explanation> [file:line]".
class error : public std::runtime_error {
 public:
  error(errc code, std::string argument, std::string message, const char* file, int line)
      : std::runtime_error(compose(code, argument, message, file, line)),
        code_(code),
        argument_(std::move(argument)) {}

  /// The category of the failure.
  [[nodiscard]] errc code() const noexcept { return code_; }
  /// The name of the offending argument ("K", "keys.rows", ...), or "" when none applies.
  [[nodiscard]] const std::string& argument() const noexcept { return argument_; }

 private:
  static std::string compose(errc code, const std::string& argument, const std::string& message,
                             const char* file, int line) {
    std::string s = "lshattn: ";
    s += to_string(code);
    s += ": ";
    if (!argument.empty()) {
      s += argument;
      s += ": ";
    }
    s += message;
    if (file) {
      std::string_view f(file);
      if (auto p = f.rfind("include/"); p != std::string_view::npos) f.remove_prefix(p + 8);
      s += " [";
      s += f;
      s += ':';
      s += std::to_string(line);
      s += ']';
    }
    return s;
  }
  errc code_;
  std::string argument_;
};

namespace detail {
template <class... Parts>
std::string cat(const Parts&... parts) {
  std::ostringstream os;
  os.precision(17);
  (os << ... << parts);
  return os.str();
}
}  // namespace detail

}  // namespace lshattn

/// Throws lshattn::error(code, arg, message...) unless cond holds. The message
/// parts are streamed, so values can be passed directly.
#define LSHATTN_REQUIRE(cond, code, arg, ...)                                                 \
  do {                                                                                        \
    if (!(cond))                                                                              \
      throw ::lshattn::error(::lshattn::errc::code, arg, ::lshattn::detail::cat(__VA_ARGS__), \
                             __FILE__, __LINE__);                                             \
  } while (0)
