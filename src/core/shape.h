#pragma once
#include <cstdint>
#include <vector>

namespace qft {

using Shape = std::vector<int64_t>;

inline int64_t shape_numel(const Shape& shape) {
  int64_t count = 1;
  for (int64_t dim : shape) count *= dim;
  return count;
}

}  // namespace qft
