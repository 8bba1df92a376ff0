#pragma once
// Uniform asymmetric 8-bit quantization, one range per row (paper Eq. 1–2):
// x̂ = offset + scale·q with q ∈ [0, 255], offset = row min, scale = range/255.
// The offset is stored as a float rather than an integer zero-point, so
// one-signed, constant and all-zero rows round-trip within half a step.
#include <cstdint>
#include <string>

#include "core/memory.h"

namespace qft {

enum class Rounding { Nearest, Stochastic };

struct RowRange {
  float offset = 0.0f;
  float scale = 0.0f;  // 0 for a constant row
};

// Identifies the random numbers of one write of one tensor: the Philox key is
// the seed, the counter (column/4, row, stream, step). Distinct streams keep
// weights, momentum and gradients of one tensor independent.
struct RoundingContext {
  Rounding mode = Rounding::Stochastic;
  uint64_t seed = 0;
  uint32_t stream = 0;
  uint32_t step = 0;
};

// Quantizes values (n) into codes (n); positions listed in `skip` (sorted,
// may be null) are left out of the range and get code 0. Throws naming
// `tensor` on NaN or Inf.
RowRange quantize_row(uint8_t* codes, const float* values, int n, const RoundingContext& rounding,
                      uint32_t row, const uint16_t* skip, int skip_count, const std::string& tensor);
void dequantize_row(float* out, const uint8_t* codes, RowRange range, int n);
// The same values rounded to BF16 (nearest even) as they are computed: no
// FP32 copy of the row.
void dequantize_row_bf16(uint16_t* out, const uint8_t* codes, RowRange range, int n);

// 4-bit codes, two a byte (the even column in the low half), one range per
// block of `block` values along the row (block even): x̂ = offset + scale·q,
// q ∈ [0, 15], offset = the block's minimum, scale = its range/15. The row's
// random numbers are those of quantize_row (keyed by column), so a row
// rounds the same way at either width.
void quantize_row4(uint8_t* codes, RowRange* ranges, const float* values, int n, int block,
                   const RoundingContext& rounding, uint32_t row, const std::string& tensor);
void dequantize_row4(float* out, const uint8_t* codes, const RowRange* ranges, int n, int block);

// How a matrix's rows hold their codes: 8 bits with one range per row (the
// default), or 4 bits with one range per `block` values.
struct CodeLayout {
  int bits = 8;
  int block = 0;  // 4 bits: values per range along a row
  static CodeLayout int4(int block) { return {4, block}; }
  size_t row_bytes(int cols) const { return bits == 8 ? static_cast<size_t>(cols) : (static_cast<size_t>(cols) + 1) / 2; }
  int ranges_per_row(int cols) const { return bits == 8 ? 1 : (cols + block - 1) / block; }
};

// A (rows, cols) matrix of codes and ranges, as plain arrays: what the
// passes below (and a device's implementation of them) work on.
struct QuantizedView {
  uint8_t* codes = nullptr;    // (rows, layout.row_bytes(cols))
  RowRange* ranges = nullptr;  // (rows, layout.ranges_per_row(cols))
  int rows = 0, cols = 0;
  CodeLayout layout;
  uint8_t* row_codes(int row) const { return codes + static_cast<size_t>(row) * layout.row_bytes(cols); }
  RowRange* row_ranges(int row) const { return ranges + static_cast<size_t>(row) * layout.ranges_per_row(cols); }
};

// One row of a matrix in either layout: de-quantized into out (cols), or
// values (cols) quantized into it with the random numbers of `key_row`.
void dequantize_view_row(float* out, const QuantizedView& matrix, int row);
void quantize_view_row(const QuantizedView& matrix, int row, const float* values, const RoundingContext& rounding,
                       uint32_t key_row, const std::string& tensor);

// ---- passes over whole quantized matrices (row-parallel), outputs first.
// out (rows, cols) = the de-quantized matrix.
void dequantize_rows(float* out, const QuantizedView& matrix);
// matrix = values (rows, cols) quantized, row r rounded with `rounding` keyed
// by r. Throws naming `tensor` on NaN or Inf.
void quantize_rows(const QuantizedView& matrix, const float* values, const RoundingContext& rounding,
                   const std::string& tensor);
// matrix += values (rows, cols): each row de-quantized, added to and
// quantized again (an accumulated gradient).
void accumulate_rows(const QuantizedView& matrix, const float* values, const RoundingContext& rounding,
                     const std::string& tensor);

// A (rows, cols) matrix of codes and ranges that owns them.
class QuantizedRows {
 public:
  QuantizedRows() = default;
  QuantizedRows(MemCategory category, int rows, int cols, CodeLayout layout = {});

  int rows() const { return rows_; }
  int cols() const { return cols_; }
  size_t row_bytes() const { return layout_.row_bytes(cols_); }
  int ranges_per_row() const { return layout_.ranges_per_row(cols_); }
  uint8_t* row_codes(int row) { return codes_.data() + static_cast<size_t>(row) * row_bytes(); }
  const uint8_t* row_codes(int row) const { return codes_.data() + static_cast<size_t>(row) * row_bytes(); }
  RowRange& range(int row) { return ranges_[static_cast<size_t>(row) * ranges_per_row()]; }
  RowRange range(int row) const { return ranges_[static_cast<size_t>(row) * ranges_per_row()]; }
  // All codes (rows × row_bytes) and ranges (rows × ranges_per_row), for checkpoints.
  uint8_t* codes() { return codes_.data(); }
  const uint8_t* codes() const { return codes_.data(); }
  RowRange* ranges() { return ranges_.data(); }
  const RowRange* ranges() const { return ranges_.data(); }

  QuantizedView view() { return {codes_.data(), ranges_.data(), rows_, cols_, layout_}; }
  QuantizedView view() const {
    return {const_cast<uint8_t*>(codes_.data()), const_cast<RowRange*>(ranges_.data()), rows_, cols_, layout_};
  }
  static size_t bytes(int64_t rows, int64_t cols, CodeLayout layout = {}) {
    const int c = static_cast<int>(cols);
    return static_cast<size_t>(rows) * (layout.row_bytes(c) + layout.ranges_per_row(c) * sizeof(RowRange));
  }

 private:
  int rows_ = 0, cols_ = 0;
  CodeLayout layout_;
  Buffer<uint8_t> codes_;
  Buffer<RowRange> ranges_;
};

}  // namespace qft
