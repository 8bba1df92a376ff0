#include "dist/gather.h"

#include "dist/partition.h"

namespace qft::dist {
namespace {

// Byte counts and offsets of every rank's rows when row r starts at
// starts(r) units of `unit_bytes` each.
template <class Start>
std::pair<std::vector<int64_t>, std::vector<int64_t>> row_bytes(int rows, int64_t unit_bytes, Start&& starts) {
  const World& ranks = world();
  std::vector<int64_t> counts, offsets;
  for (int r = 0; r < ranks.size(); ++r) {
    const Range range = share(rows, ranks.size(), r);
    offsets.push_back(starts(range.begin) * unit_bytes);
    counts.push_back((starts(range.end) - starts(range.begin)) * unit_bytes);
  }
  return {counts, offsets};
}

}  // namespace

std::vector<Request> gather_rows(HybridMatrix& matrix) {
  std::vector<Request> requests;
  const World& ranks = world();
  if (!ranks.distributed()) return requests;
  const int rows = matrix.rows();
  const int64_t cols = matrix.cols();
  const auto linear = [](int64_t row) { return row; };
  const auto outliers = [&](int64_t row) { return static_cast<int64_t>(matrix.outlier_row_start()[row]); };
  const auto [code_counts, code_offsets] = row_bytes(rows, cols, linear);
  requests.push_back(ranks.all_gather(matrix.dense().codes(), code_counts, code_offsets));
  const auto [range_counts, range_offsets] = row_bytes(rows, sizeof(RowRange), linear);
  requests.push_back(ranks.all_gather(matrix.dense().ranges(), range_counts, range_offsets));
  const auto [outlier_counts, outlier_offsets] = row_bytes(rows, sizeof(float), outliers);
  requests.push_back(ranks.all_gather(matrix.outlier_values(), outlier_counts, outlier_offsets));
  return requests;
}

Request gather_values(float* values, int64_t count, int64_t unit) {
  const World& ranks = world();
  if (!ranks.distributed()) return Request();
  Shares parts = shares(count, unit, ranks.size());
  for (int64_t& c : parts.counts) c *= sizeof(float);
  for (int64_t& o : parts.offsets) o *= sizeof(float);
  return ranks.all_gather(values, parts.counts, parts.offsets);
}

}  // namespace qft::dist
