#pragma once
// A minimal reader for numpy .npy files (format 1.0/2.0) holding a 2-D,
// C-ordered float16 or float32 array, widened to float32. Example code, not
// part of the library: it throws std::runtime_error with the path and what is
// wrong, so a tool can tell the user which file is missing or malformed.

#include <cstdint>
#include <cstring>
#include <fstream>
#include <stdexcept>
#include <string>
#include <vector>

#include <lshattn/core/dtype.hpp>

namespace lshattn_examples {

struct npy_matrix {
  std::size_t rows = 0, cols = 0;
  std::vector<float> data;  ///< rows x cols, row-major
  const float* row(std::size_t r) const { return data.data() + r * cols; }
};

/// Reads at most max_rows rows (0: all) of a 2-D '<f2' or '<f4' .npy array.
inline npy_matrix read_npy(const std::string& path, std::size_t max_rows = 0) {
  std::ifstream f(path, std::ios::binary);
  if (!f) throw std::runtime_error("cannot open " + path + " (is ../shared/data present? see docs/quality.md)");
  char magic[8];
  f.read(magic, 8);
  if (!f || std::memcmp(magic, "\x93NUMPY", 6) != 0) throw std::runtime_error(path + ": not a .npy file");
  std::size_t hlen = 0;
  if (magic[6] == 1) {
    unsigned char b[2];
    f.read(reinterpret_cast<char*>(b), 2);
    hlen = b[0] | (b[1] << 8);
  } else {
    unsigned char b[4];
    f.read(reinterpret_cast<char*>(b), 4);
    hlen = b[0] | (b[1] << 8) | (b[2] << 16) | (static_cast<std::size_t>(b[3]) << 24);
  }
  std::string header(hlen, '\0');
  f.read(header.data(), static_cast<std::streamsize>(hlen));
  if (!f) throw std::runtime_error(path + ": truncated header");
  const bool f16 = header.find("'<f2'") != std::string::npos;
  const bool f32 = header.find("'<f4'") != std::string::npos;
  if (!f16 && !f32) throw std::runtime_error(path + ": dtype must be '<f2' or '<f4', header: " + header);
  if (header.find("'fortran_order': False") == std::string::npos)
    throw std::runtime_error(path + ": only C-ordered arrays are supported");
  const auto s = header.find("'shape': (");
  if (s == std::string::npos) throw std::runtime_error(path + ": no shape in header");
  std::size_t rows = 0, cols = 0;
  if (std::sscanf(header.c_str() + s + 10, "%zu, %zu)", &rows, &cols) != 2)
    throw std::runtime_error(path + ": shape must be 2-D, header: " + header);
  npy_matrix m;
  m.rows = max_rows ? std::min(rows, max_rows) : rows;
  m.cols = cols;
  m.data.resize(m.rows * cols);
  if (f16) {
    std::vector<std::uint16_t> raw(m.rows * cols);
    f.read(reinterpret_cast<char*>(raw.data()), static_cast<std::streamsize>(raw.size() * 2));
    for (std::size_t i = 0; i < raw.size(); ++i) m.data[i] = lshattn::fp16::to_float(raw[i]);
  } else {
    f.read(reinterpret_cast<char*>(m.data.data()), static_cast<std::streamsize>(m.data.size() * 4));
  }
  if (!f) throw std::runtime_error(path + ": truncated data");
  return m;
}

}  // namespace lshattn_examples
