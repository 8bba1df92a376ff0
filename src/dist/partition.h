#pragma once
// How a data-parallel run splits a parameter's update across ranks (ZeRO-1):
// `units` (QFT: rows; FP32 optimizers: 256-value blocks) in contiguous runs,
// rank r owning [units·r/N, units·(r+1)/N). A function of (units, N, r) only,
// so every rank, and a later run with another N, knows every rank's share.
#include <algorithm>
#include <cstdint>
#include <vector>

namespace qft::dist {

struct Range {
  int64_t begin = 0, end = 0;
  int64_t size() const { return end - begin; }
};

inline Range share(int64_t units, int ranks, int rank) {
  return {units * rank / ranks, units * (rank + 1) / ranks};
}

// Element counts (and offsets) of every rank's share when a unit is
// `unit_size` elements and the last unit may be short (`elements` in all).
struct Shares {
  std::vector<int64_t> counts, offsets;
};

inline Shares shares(int64_t elements, int64_t unit_size, int ranks) {
  const int64_t units = (elements + unit_size - 1) / unit_size;
  Shares result;
  for (int r = 0; r < ranks; ++r) {
    const Range range = share(units, ranks, r);
    const int64_t begin = std::min(elements, range.begin * unit_size), end = std::min(elements, range.end * unit_size);
    result.offsets.push_back(begin);
    result.counts.push_back(end - begin);
  }
  return result;
}

}  // namespace qft::dist
