#include "quant/quantizer.h"

#include <algorithm>
#include <cmath>

#include "core/error.h"
#include "core/parallel.h"
#include "quant/philox.h"

namespace qft {
namespace {

constexpr float kMaxCode = 255.0f;

// Codes of positions [begin, end) from t = (x − offset)/scale.
void round_codes(uint8_t* codes, const float* values, int begin, int end, RowRange range,
                 const RoundingContext& rounding, uint32_t row) {
  const float inverse = 1.0f / range.scale;
  if (rounding.mode == Rounding::Nearest) {
    for (int i = begin; i < end; ++i) {
      const float t = std::nearbyint((values[i] - range.offset) * inverse);
      codes[i] = static_cast<uint8_t>(std::clamp(t, 0.0f, kMaxCode));
    }
    return;
  }
  const PhiloxKey key = {static_cast<uint32_t>(rounding.seed), static_cast<uint32_t>(rounding.seed >> 32)};
  for (int block = begin / 4 * 4; block < end; block += 4) {
    const PhiloxCounter bits = philox4x32_10({static_cast<uint32_t>(block / 4), row, rounding.stream, rounding.step}, key);
    for (int lane = 0; lane < 4; ++lane) {
      const int i = block + lane;
      if (i < begin || i >= end) continue;
      const float t = std::floor((values[i] - range.offset) * inverse + uniform_from_bits(bits[lane]));
      codes[i] = static_cast<uint8_t>(std::clamp(t, 0.0f, kMaxCode));
    }
  }
}

}  // namespace

RowRange quantize_row(uint8_t* codes, const float* values, int n, const RoundingContext& rounding,
                      uint32_t row, const int32_t* skip, int skip_count, const std::string& tensor) {
  float min = INFINITY, max = -INFINITY;
  bool finite = true;
  for (int i = 0, s = 0; i < n; ++i) {
    if (s < skip_count && skip[s] == i) {
      ++s;
      continue;
    }
    finite &= std::isfinite(values[i]);
    min = std::min(min, values[i]);
    max = std::max(max, values[i]);
  }
  if (!finite) fail(tensor, ": row ", row, " holds NaN or Inf");
  if (min > max) min = max = 0.0f;  // every position skipped
  RowRange range{min, (max - min) / kMaxCode};
  if (range.scale == 0.0f || !std::isfinite(range.scale)) {
    std::fill(codes, codes + n, 0);
    range.scale = 0.0f;
    if (max - min != 0.0f) fail(tensor, ": row ", row, " has a range too large for float");
    return range;
  }
  // Segments between skipped positions, so skipped codes stay 0.
  int begin = 0;
  for (int s = 0; s <= skip_count; ++s) {
    const int end = s < skip_count ? skip[s] : n;
    round_codes(codes, values, begin, end, range, rounding, row);
    if (s < skip_count) codes[end] = 0;
    begin = end + 1;
  }
  return range;
}

void dequantize_row(float* out, const uint8_t* codes, RowRange range, int n) {
#pragma omp simd
  for (int i = 0; i < n; ++i) out[i] = range.offset + range.scale * static_cast<float>(codes[i]);
}

QuantizedRows::QuantizedRows(MemCategory category, int rows, int cols)
    : rows_(rows),
      cols_(cols),
      codes_(category, static_cast<size_t>(rows) * cols),
      ranges_(category, rows) {}

void QuantizedRows::quantize(const float* values, const RoundingContext& rounding, const std::string& tensor) {
  parallel_for(rows_, [&](int64_t row) {
    ranges_[row] = quantize_row(row_codes(row), values + row * cols_, cols_, rounding, row, nullptr, 0, tensor);
  });
}

void QuantizedRows::dequantize(float* out) const {
#pragma omp parallel for schedule(static)
  for (int row = 0; row < rows_; ++row) {
    dequantize_row(out + static_cast<size_t>(row) * cols_, row_codes(row), ranges_[row], cols_);
  }
}

}  // namespace qft
