#include "quant/quantizer.h"

#include <algorithm>
#include <bit>
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

// Codes of positions [begin, end) from t = (x − offset)/scale, in [0,
// max_code]: nearest, or floor(t + u) with u uniform, whose mean is t.
void round_codes(uint8_t* __restrict codes, const float* __restrict values, int begin, int end, RowRange range,
                 const float* __restrict uniforms, int max_code = 255) {
  const float inverse = 1.0f / range.scale, offset = range.offset;
  if (!uniforms) {
#pragma omp simd
    for (int i = begin; i < end; ++i) {
      const float t = std::nearbyint((values[i] - offset) * inverse);
      codes[i] = static_cast<uint8_t>(std::min(std::max(t, 0.0f), static_cast<float>(max_code)));
    }
    return;
  }
  // The argument is ≥ u > 0 (offset is the row minimum), so truncation is floor.
#pragma omp simd
  for (int i = begin; i < end; ++i) {
    const int t = static_cast<int>((values[i] - offset) * inverse + uniforms[i]);
    codes[i] = static_cast<uint8_t>(std::min(std::max(t, 0), max_code));
  }
}

// x rounded to BF16 toward −∞ (with `up`, toward +∞); x is finite.
uint16_t bf16_directed(float x, bool up) {
  const uint16_t toward_zero = static_cast<uint16_t>(std::bit_cast<uint32_t>(x) >> 16);
  const bool exact = bf16_to_float(toward_zero) == x;
  const bool away_from_zero = up ? x > 0.0f : x < 0.0f;
  return exact || !away_from_zero ? toward_zero : static_cast<uint16_t>(toward_zero + 1);
}

// The range of one 4-bit block (n values); throws naming `tensor` on NaN or Inf.
BlockRange block_range(const float* values, int n, uint32_t row, const std::string& tensor) {
  float min = INFINITY, max = -INFINITY, poison = 0.0f;
#pragma omp simd reduction(min : min) reduction(max : max) reduction(+ : poison)
  for (int i = 0; i < n; ++i) {
    min = values[i] < min ? values[i] : min;
    max = values[i] > max ? values[i] : max;
    poison += values[i] * 0.0f;
  }
  if (poison != 0.0f) fail(tensor, ": row ", row, " holds NaN or Inf");
  BlockRange range;
  range.offset = bf16_directed(min, false);
  const float scale = (max - bf16_to_float(range.offset)) / 15.0f;
  if (!std::isfinite(scale) || !std::isfinite(bf16_to_float(range.offset))) {
    fail(tensor, ": row ", row, " has a range too large for BF16");
  }
  range.scale = bf16_directed(scale, true);
  if (!std::isfinite(bf16_to_float(range.scale))) fail(tensor, ": row ", row, " has a range too large for BF16");
  return range;
}

}  // namespace

// Not cloned: GCC 12's copy of it specialised for quantize_view_row's
// constant arguments (no skips) lost the vectorisation of its `omp simd`
// range loop, which made QLion's momentum pass 2.5× slower.
[[gnu::noclone]] RowRange quantize_row(uint8_t* codes, const float* values, int n, const RoundingContext& rounding,
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

void quantize_row4(uint8_t* codes, BlockRange* ranges, const float* values, int n, int block,
                   const RoundingContext& rounding, uint32_t row, const std::string& tensor) {
  const float* uniforms = rounding.mode == Rounding::Stochastic ? row_uniforms(n, rounding, row) : nullptr;
  thread_local std::vector<uint8_t> unpacked;
  unpacked.resize(static_cast<size_t>(block));
  for (int first = 0, b = 0; first < n; first += block, ++b) {
    const int count = std::min(block, n - first);
    ranges[b] = block_range(values + first, count, row, tensor);
    const RowRange range = ranges[b].values();
    if (range.scale == 0.0f) {
      std::fill(unpacked.begin(), unpacked.begin() + count, 0);
    } else {
      round_codes(unpacked.data(), values + first, 0, count, range, uniforms ? uniforms + first : nullptr, 15);
    }
    uint8_t* packed = codes + first / 2;
    for (int i = 0; i < count / 2; ++i) packed[i] = static_cast<uint8_t>(unpacked[2 * i] | unpacked[2 * i + 1] << 4);
    if (count % 2) packed[count / 2] = unpacked[count - 1];
  }
}

void dequantize_row4(float* out, const uint8_t* codes, const BlockRange* ranges, int n, int block) {
  for (int first = 0, b = 0; first < n; first += block, ++b) {
    const int count = std::min(block, n - first);
    const RowRange range = ranges[b].values();
    const uint8_t* packed = codes + first / 2;
#pragma omp simd
    for (int i = 0; i < count; ++i) {
      const int code = (packed[i / 2] >> (4 * (i % 2))) & 0xf;
      out[first + i] = range.offset + range.scale * static_cast<float>(code);
    }
  }
}

void dequantize_view_row(float* out, const QuantizedView& matrix, int row) {
  if (matrix.layout.bits == 8) return dequantize_row(out, matrix.row_codes(row), matrix.ranges[row], matrix.cols);
  dequantize_row4(out, matrix.row_codes(row), matrix.row_blocks(row), matrix.cols, matrix.layout.block);
}

void quantize_view_row(const QuantizedView& matrix, int row, const float* values, const RoundingContext& rounding,
                       uint32_t key_row, const std::string& tensor) {
  if (matrix.layout.bits == 8) {
    matrix.ranges[row] = quantize_row(matrix.row_codes(row), values, matrix.cols, rounding, key_row, nullptr, 0, tensor);
    return;
  }
  quantize_row4(matrix.row_codes(row), matrix.row_blocks(row), values, matrix.cols, matrix.layout.block, rounding,
                key_row, tensor);
}

QuantizedRows::QuantizedRows(MemCategory category, int rows, int cols, CodeLayout layout)
    : rows_(rows),
      cols_(cols),
      layout_(layout),
      codes_(category, static_cast<size_t>(rows) * layout.row_bytes(cols)) {
  const bool supported = layout.bits == 8 || (layout.bits == 4 && layout.block > 0 && layout.block % 2 == 0);
  if (!supported) fail("quantized rows: ", layout.bits, " bits in blocks of ", layout.block, " is not a layout");
  if (layout.bits == 8) {
    ranges_ = Buffer<RowRange>(category, static_cast<size_t>(rows));
  } else {
    blocks_ = Buffer<BlockRange>(category, static_cast<size_t>(rows) * layout.ranges_per_row(cols));
  }
}

void quantize_rows(const QuantizedView& matrix, const float* values, const RoundingContext& rounding,
                   const std::string& tensor) {
  const int cols = matrix.cols;
  parallel_for(matrix.rows, [&](int64_t row) {
    quantize_view_row(matrix, static_cast<int>(row), values + row * cols, rounding, static_cast<uint32_t>(row), tensor);
  });
}

void dequantize_rows(float* out, const QuantizedView& matrix) {
#pragma omp parallel for schedule(static)
  for (int row = 0; row < matrix.rows; ++row) {
    dequantize_view_row(out + static_cast<size_t>(row) * matrix.cols, matrix, row);
  }
}

void accumulate_rows(const QuantizedView& matrix, const float* values, const RoundingContext& rounding,
                     const std::string& tensor) {
  const int cols = matrix.cols;
  parallel_for(matrix.rows, [&](int64_t row) {
    thread_local std::vector<float> sum;
    sum.resize(cols);
    dequantize_view_row(sum.data(), matrix, static_cast<int>(row));
    for (int col = 0; col < cols; ++col) sum[col] += values[row * cols + col];
    quantize_view_row(matrix, static_cast<int>(row), sum.data(), rounding, static_cast<uint32_t>(row), tensor);
  });
}

}  // namespace qft
