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

// A (rows, cols) matrix of codes with one range per row, as plain arrays:
// what the passes below (and a device's implementation of them) work on.
struct QuantizedView {
  uint8_t* codes = nullptr;    // (rows, cols)
  RowRange* ranges = nullptr;  // (rows)
  int rows = 0, cols = 0;
  uint8_t* row_codes(int row) const { return codes + static_cast<size_t>(row) * cols; }
};

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

// A (rows, cols) matrix of codes with one range per row.
class QuantizedRows {
 public:
  QuantizedRows() = default;
  QuantizedRows(MemCategory category, int rows, int cols);

  int rows() const { return rows_; }
  int cols() const { return cols_; }
  uint8_t* row_codes(int row) { return codes_.data() + static_cast<size_t>(row) * cols_; }
  const uint8_t* row_codes(int row) const { return codes_.data() + static_cast<size_t>(row) * cols_; }
  RowRange& range(int row) { return ranges_[row]; }
  RowRange range(int row) const { return ranges_[row]; }
  // All codes (rows × cols) and ranges (rows), for checkpoints.
  uint8_t* codes() { return codes_.data(); }
  const uint8_t* codes() const { return codes_.data(); }
  RowRange* ranges() { return ranges_.data(); }
  const RowRange* ranges() const { return ranges_.data(); }

  QuantizedView view() { return {codes_.data(), ranges_.data(), rows_, cols_}; }
  QuantizedView view() const { return {const_cast<uint8_t*>(codes_.data()), const_cast<RowRange*>(ranges_.data()), rows_, cols_}; }
  static size_t bytes(int64_t rows, int64_t cols) {
    return static_cast<size_t>(rows * cols) + static_cast<size_t>(rows) * sizeof(RowRange);
  }

 private:
  int rows_ = 0, cols_ = 0;
  Buffer<uint8_t> codes_;
  Buffer<RowRange> ranges_;
};

}  // namespace qft
