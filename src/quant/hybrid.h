#pragma once
// Hybrid weight storage (paper Eq. 3): W = D + S. S holds the outliers — the
// values outside [t_min, t_max] — in FP32 CSR; D holds the rest as per-row
// INT8 (outlier positions carry code 0 and are overwritten by S).
//
// Thresholds are the outlier_fraction/2 and 1 − outlier_fraction/2 quantiles
// of the matrix, estimated from a strided sample of at most 2²⁰ values (exact
// for smaller matrices), chosen at assign() and refresh() only (once per
// epoch, as the paper's lazy update); neither holds a copy of the matrix. Between refreshes the membership is fixed: an
// outlier stays exact in S whatever its value becomes, and a dense value that
// crosses a threshold stays dense — every write re-ranges its row, so it is
// still represented, at a coarser step for that row until the next refresh.
#include <functional>
#include <cstdint>
#include <string>

#include "core/memory.h"
#include "quant/quantizer.h"

namespace qft {

// A hybrid matrix as plain arrays: the dense INT8 rows D and the outliers S in
// CSR — row r's are columns[row_start[r] … row_start[r + 1]) with their FP32
// values (their dense codes are 0 and ignored).
struct HybridView {
  QuantizedView dense;                 // (rows, cols)
  const int32_t* row_start = nullptr;  // (rows + 1)
  const uint16_t* columns = nullptr;   // (outliers)
  float* values = nullptr;             // (outliers)
};

// ---- one row: out (cols) = row `row` de-quantized, its outliers in place;
// and the row stored again from values (cols): the outliers exactly, the rest
// quantized with `rounding`. Throws naming `tensor` on NaN or Inf.
void dequantize_hybrid_row(float* out, const HybridView& matrix, int row);
void requantize_hybrid_row(const HybridView& matrix, int row, const float* values, const RoundingContext& rounding,
                           const std::string& tensor);
// ---- passes over rows [row_begin, row_end) (row-parallel), outputs first.
// out (row_end − row_begin, cols): the de-quantized rows; or rounded to BF16
// (nearest even) as they are made, with no FP32 copy of a row.
void dequantize_hybrid_rows(float* out, const HybridView& matrix, int row_begin, int row_end);
void dequantize_hybrid_rows_bf16(uint16_t* out, const HybridView& matrix, int row_begin, int row_end);
// out (N, cols) = rows (N) of the matrix de-quantized (an embedding lookup).
void gather_hybrid_rows(float* out, const HybridView& matrix, const int* rows, int N);

class HybridMatrix {
 public:
  HybridMatrix(std::string name, int rows, int cols);

  // Splits values (rows, cols) with about outlier_fraction of them in S
  // (half from each tail) and quantizes the dense part.
  void assign(const float* values, float outlier_fraction, const RoundingContext& rounding);
  // The same from `row_values(r, out)`, which writes row r (cols) and is
  // called several times per row, from several threads: a matrix too large
  // to stage whole is read from its source a row at a time.
  void assign(const std::function<void(int, float*)>& row_values, float outlier_fraction,
              const RoundingContext& rounding);
  // The largest number of columns a hybrid matrix holds (16-bit column indices).
  static constexpr int kMaxColumns = 65535;
  // Re-chooses the thresholds from the current values (the per-epoch refresh).
  void refresh(float outlier_fraction, const RoundingContext& rounding);

  // The arrays, for the passes above and QLion (optim/qlion.h).
  HybridView view() const {
    return {dense_.view(), row_start_.data(), outlier_columns_.data(), const_cast<float*>(outlier_values_.data())};
  }

  const std::string& name() const { return name_; }
  int rows() const { return dense_.rows(); }
  int cols() const { return dense_.cols(); }
  int64_t outlier_count() const { return static_cast<int64_t>(outlier_values_.size()); }
  float threshold_min() const { return threshold_min_; }
  float threshold_max() const { return threshold_max_; }

  // The stored state, for checkpoints: D (codes and per-row ranges), S in
  // CSR (row starts (rows + 1), columns and values (outliers)) and the thresholds.
  const QuantizedRows& dense() const { return dense_; }
  QuantizedRows& dense() { return dense_; }
  const int32_t* outlier_row_start() const { return row_start_.data(); }
  const uint16_t* outlier_columns() const { return outlier_columns_.data(); }
  const float* outlier_values() const { return outlier_values_.data(); }
  float* outlier_values() { return outlier_values_.data(); }
  // Replaces S and the thresholds with a checkpoint's (D is written through
  // dense()). Throws naming the matrix unless the CSR structure is one this
  // matrix can hold: starts from 0, non-decreasing, ending at `outliers`;
  // columns increasing within a row and below cols(); finite values.
  void restore_outliers(const int32_t* row_start, const uint16_t* columns, const float* values, int64_t outliers,
                        float threshold_min, float threshold_max);

  // Bytes of a (rows, cols) matrix with `outliers` entries in S.
  static size_t bytes(int64_t rows, int64_t cols, int64_t outliers);
  // Outliers assign() keeps for `count` values: exact up to ties for
  // matrices within the sample size, within sampling error beyond it.
  static int64_t outliers_for(int64_t count, float outlier_fraction);

 private:
  // Rebuilds S from the rows that row_values(row, out) produces.
  template <class RowValues>
  void split(RowValues&& row_values, float outlier_fraction, const RoundingContext& rounding);

  std::string name_;
  QuantizedRows dense_;
  Buffer<int32_t> row_start_;         // (rows + 1) into the two below
  Buffer<uint16_t> outlier_columns_;  // (outliers)
  Buffer<float> outlier_values_;      // (outliers)
  float threshold_min_ = 0.0f, threshold_max_ = 0.0f;
};

}  // namespace qft
