#include "quant/dynamic_map.h"

#include <algorithm>
#include <cmath>
#include <vector>

#include "core/error.h"

namespace qft {

CodeBook dynamic_code_book(bool is_signed) {
  constexpr int kExponents = 7;
  std::vector<double> values;
  for (int e = 0; e < kExponents; ++e) {
    const int cells = is_signed ? 1 << e : 1 << (e + 1);
    const double scale = std::pow(10.0, e - (kExponents - 1));
    for (int cell = 0; cell < cells; ++cell) {
      // Midpoint of cell `cell` of [0.1, 1] split into `cells` equal parts.
      const double midpoint = 0.1 + 0.9 * (cell + 0.5) / cells;
      values.push_back(scale * midpoint);
      if (is_signed) values.push_back(-scale * midpoint);
    }
  }
  values.push_back(0.0);
  values.push_back(1.0);
  if (values.size() != 256) fail("dynamic code book: ", values.size(), " values instead of 256");
  std::sort(values.begin(), values.end());
  CodeBook book;
  for (size_t i = 0; i < book.size(); ++i) book[i] = static_cast<float>(values[i]);
  return book;
}

namespace {

std::array<float, 255> code_midpoints(const CodeBook& book) {
  std::array<float, 255> midpoints;
  for (int i = 0; i < 255; ++i) midpoints[i] = (book[i] + book[i + 1]) / 2;
  return midpoints;
}

}  // namespace

// The code is the number of midpoints below x: nearest, ties to the lower.
uint8_t nearest_code(const CodeBook& book, float x) {
  const std::array<float, 255> midpoints = code_midpoints(book);
  return static_cast<uint8_t>(std::lower_bound(midpoints.begin(), midpoints.end(), x) - midpoints.begin());
}

CodeBookEncoder::CodeBookEncoder(const CodeBook& book) : midpoints_(code_midpoints(book)), start_(65536) {
  for (uint32_t top = 0; top < 65536; ++top) {
    const float x = std::bit_cast<float>(top << 16);
    start_[top] = std::isnan(x) ? 0 : nearest_code(book, x);
  }
}

}  // namespace qft
