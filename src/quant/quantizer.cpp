#include "quant/quantizer.h"

#include <algorithm>
#include <cmath>
#include <vector>

#include "core/error.h"
#include "core/float16.h"
#include "core/parallel.h"
#include "quant/philox.h"

namespace qft {
namespace {

constexpr float kMaxCode = 255.0f;

// Uniforms of one row's stochastic rounding, per thread.
const float* row_uniforms(int n, const RoundingContext& rounding, uint32_t row) {
  thread_local std::vector<float> uniforms;
  uniforms.resize(static_cast<size_t>(n));
  philox_uniforms16(uniforms.data(), n, philox_key(rounding.seed),
                    row, rounding.stream, rounding.step);
  return uniforms.data();
}

// Codes of positions [begin, end) from t = (x − offset)/scale: nearest, or
// floor(t + u) with u uniform, whose mean is t.
void round_codes(uint8_t* __restrict codes, const float* __restrict values, int begin, int end, RowRange range,
                 const float* __restrict uniforms) {
  const float inverse = 1.0f / range.scale, offset = range.offset;
  if (!uniforms) {
#pragma omp simd
    for (int i = begin; i < end; ++i) {
      const float t = std::nearbyint((values[i] - offset) * inverse);
      codes[i] = static_cast<uint8_t>(std::min(std::max(t, 0.0f), kMaxCode));
    }
    return;
  }
  // The argument is ≥ u > 0 (offset is the row minimum), so truncation is floor.
#pragma omp simd
  for (int i = begin; i < end; ++i) {
    const int t = static_cast<int>((values[i] - offset) * inverse + uniforms[i]);
    codes[i] = static_cast<uint8_t>(std::min(std::max(t, 0), 255));
  }
}

}  // namespace

RowRange quantize_row(uint8_t* codes, const float* values, int n, const RoundingContext& rounding,
                      uint32_t row, const uint16_t* skip, int skip_count, const std::string& tensor) {
  float min = INFINITY, max = -INFINITY;
  float poison = 0.0f;  // becomes NaN when any value is NaN or Inf
  int begin = 0;
  for (int s = 0; s <= skip_count; ++s) {
    const int end = s < skip_count ? skip[s] : n;
#pragma omp simd reduction(min : min) reduction(max : max) reduction(+ : poison)
    for (int i = begin; i < end; ++i) {
      min = values[i] < min ? values[i] : min;
      max = values[i] > max ? values[i] : max;
      poison += values[i] * 0.0f;
    }
    begin = end + 1;
  }
  if (poison != 0.0f) fail(tensor, ": row ", row, " holds NaN or Inf");
  if (min > max) min = max = 0.0f;  // every position skipped
  RowRange range{min, (max - min) / kMaxCode};
  if (range.scale == 0.0f || !std::isfinite(range.scale)) {
    std::fill(codes, codes + n, 0);
    range.scale = 0.0f;
    if (max - min != 0.0f) fail(tensor, ": row ", row, " has a range too large for float");
    return range;
  }
  const float* uniforms = rounding.mode == Rounding::Stochastic ? row_uniforms(n, rounding, row) : nullptr;
  // Segments between skipped positions, so skipped codes stay 0.
  begin = 0;
  for (int s = 0; s <= skip_count; ++s) {
    const int end = s < skip_count ? skip[s] : n;
    round_codes(codes, values, begin, end, range, uniforms);
    if (s < skip_count) codes[end] = 0;
    begin = end + 1;
  }
  return range;
}

void dequantize_row(float* out, const uint8_t* codes, RowRange range, int n) {
#pragma omp simd
  for (int i = 0; i < n; ++i) out[i] = range.offset + range.scale * static_cast<float>(codes[i]);
}

void dequantize_row_bf16(uint16_t* out, const uint8_t* codes, RowRange range, int n) {
  constexpr int kBlock = 64;  // FP32 values live only in this block, in registers and L1
  float block[kBlock];
  for (int first = 0; first < n; first += kBlock) {
    const int count = std::min(kBlock, n - first);
    dequantize_row(block, codes + first, range, count);
    float_to_bf16_row(out + first, block, count);
  }
}

QuantizedRows::QuantizedRows(MemCategory category, int rows, int cols)
    : rows_(rows),
      cols_(cols),
      codes_(category, static_cast<size_t>(rows) * cols),
      ranges_(category, rows) {}

void quantize_rows(const QuantizedView& matrix, const float* values, const RoundingContext& rounding,
                   const std::string& tensor) {
  const int cols = matrix.cols;
  parallel_for(matrix.rows, [&](int64_t row) {
    matrix.ranges[row] = quantize_row(matrix.row_codes(row), values + row * cols, cols, rounding, row, nullptr, 0, tensor);
  });
}

void dequantize_rows(float* out, const QuantizedView& matrix) {
#pragma omp parallel for schedule(static)
  for (int row = 0; row < matrix.rows; ++row) {
    dequantize_row(out + static_cast<size_t>(row) * matrix.cols, matrix.row_codes(row), matrix.ranges[row], matrix.cols);
  }
}

void accumulate_rows(const QuantizedView& matrix, const float* values, const RoundingContext& rounding,
                     const std::string& tensor) {
  const int cols = matrix.cols;
  parallel_for(matrix.rows, [&](int64_t row) {
    thread_local std::vector<float> sum;
    sum.resize(cols);
    dequantize_row(sum.data(), matrix.row_codes(row), matrix.ranges[row], cols);
    for (int col = 0; col < cols; ++col) sum[col] += values[row * cols + col];
    matrix.ranges[row] = quantize_row(matrix.row_codes(row), sum.data(), cols, rounding, row, nullptr, 0, tensor);
  });
}

}  // namespace qft
