#pragma once
// Locating ../shared/data for the quality tests. A missing file is reported by
// name; the case is then skipped (exit 77, which CTest counts as skipped) or,
// with LSHATTN_REQUIRE_DATA=1 in the environment (CI), failed.

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <string>

#ifndef LSHATTN_SHARED_DATA
#define LSHATTN_SHARED_DATA "../shared/data"
#endif

namespace quality_test {

inline std::string shared_file(const char* name) {
  const std::string path = std::string(LSHATTN_SHARED_DATA) + "/" + name;
  if (!std::filesystem::exists(path)) {
    std::fprintf(stderr,
                 "MISSING TEST DATA: %s\n  (set the CMake cache variable LSHATTN_SHARED_DATA to the folder that holds "
                 "%s; see ../shared/data/README.md)\n",
                 path.c_str(), name);
    const char* req = std::getenv("LSHATTN_REQUIRE_DATA");
    std::exit(req && std::string(req) == "1" ? 1 : 77);
  }
  return path;
}

}  // namespace quality_test
