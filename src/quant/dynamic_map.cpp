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

uint8_t nearest_code(const CodeBook& book, float x) {
  const auto upper = std::lower_bound(book.begin(), book.end(), x);
  if (upper == book.begin()) return 0;
  if (upper == book.end()) return 255;
  const auto lower = upper - 1;
  return static_cast<uint8_t>((x - *lower <= *upper - x ? lower : upper) - book.begin());
}

}  // namespace qft
