#pragma once
// Uniform asymmetric 8-bit quantization, one range per row (paper Eq. 1–2):
// x̂ = offset + scale·q with q ∈ [0, 255], offset = row min, scale = range/255.
// The offset is stored as a float rather than an integer zero-point, so
// one-signed, constant and all-zero rows round-trip within half a step.
#include <cstdint>
#include <string>

#include "core/float16.h"
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

// A 4-bit block's range in BF16 (4 bytes): the offset is the block's
// minimum rounded down, the scale its range / 15 rounded up, so the codes
// still span the block; a constant block whose value BF16 holds is exact.
struct BlockRange {
  uint16_t offset = 0, scale = 0;  // BF16 bits
  RowRange values() const { return {bf16_to_float(offset), bf16_to_float(scale)}; }
};

// 4-bit codes, two a byte (the even column in the low half), one BlockRange
// per block of `block` values along the row (block even): x̂ = offset +
// scale·q, q ∈ [0, 15]. The row's random numbers are those of quantize_row
// (keyed by column), so a row rounds the same way at either width.
void quantize_row4(uint8_t* codes, BlockRange* ranges, const float* values, int n, int block,
                   const RoundingContext& rounding, uint32_t row, const std::string& tensor);
void dequantize_row4(float* out, const uint8_t* codes, const BlockRange* ranges, int n, int block);

// How a matrix's rows hold their codes: 8 bits with one range per row (the
// default), or 4 bits with one range per `block` values.
struct CodeLayout {
  int bits = 8;
  int block = 0;  // 4 bits: values per range along a row
  static CodeLayout int4(int block) { return {4, block}; }
  size_t row_bytes(int cols) const { return bits == 8 ? static_cast<size_t>(cols) : (static_cast<size_t>(cols) + 1) / 2; }
  int ranges_per_row(int cols) const { return bits == 8 ? 1 : (cols + block - 1) / block; }
  // Bytes of a row's ranges: a RowRange, or a BlockRange per block.
  size_t range_bytes(int cols) const { return bits == 8 ? sizeof(RowRange) : ranges_per_row(cols) * sizeof(BlockRange); }
};

// A (rows, cols) matrix of codes and ranges, as plain arrays: what the
// passes below (and a device's implementation of them) work on.
struct QuantizedView {
  uint8_t* codes = nullptr;      // (rows, layout.row_bytes(cols))
  RowRange* ranges = nullptr;    // (rows) 8 bits
  BlockRange* blocks = nullptr;  // (rows, layout.ranges_per_row(cols)) 4 bits
  int rows = 0, cols = 0;
  CodeLayout layout;
  uint8_t* row_codes(int row) const { return codes + static_cast<size_t>(row) * layout.row_bytes(cols); }
  BlockRange* row_blocks(int row) const { return blocks + static_cast<size_t>(row) * layout.ranges_per_row(cols); }
  // The rows from `first` on.
  QuantizedView rows_from(int first) const {
    return {row_codes(first), ranges ? ranges + first : nullptr, blocks ? row_blocks(first) : nullptr, rows - first,
            cols, layout};
  }
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
  const CodeLayout& layout() const { return layout_; }
  RowRange& range(int row) { return ranges_[static_cast<size_t>(row)]; }  // 8 bits
  RowRange range(int row) const { return ranges_[static_cast<size_t>(row)]; }
  // All codes (rows × row_bytes) and the ranges (8 bits: rows) or blocks'
  // ranges (4 bits: rows × ranges_per_row), for checkpoints.
  uint8_t* codes() { return codes_.data(); }
  const uint8_t* codes() const { return codes_.data(); }
  RowRange* ranges() { return ranges_.data(); }
  const RowRange* ranges() const { return ranges_.data(); }
  BlockRange* blocks() { return blocks_.data(); }
  const BlockRange* blocks() const { return blocks_.data(); }

  QuantizedView view() { return {codes_.data(), ranges_.data(), blocks_.data(), rows_, cols_, layout_}; }
  QuantizedView view() const { return const_cast<QuantizedRows*>(this)->view(); }
  static size_t bytes(int64_t rows, int64_t cols, CodeLayout layout = {}) {
    const int c = static_cast<int>(cols);
    return static_cast<size_t>(rows) * (layout.row_bytes(c) + layout.range_bytes(c));
  }

 private:
  int rows_ = 0, cols_ = 0;
  CodeLayout layout_;
  Buffer<uint8_t> codes_;
  Buffer<RowRange> ranges_;    // 8 bits
  Buffer<BlockRange> blocks_;  // 4 bits
};

}  // namespace qft
