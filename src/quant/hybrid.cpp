#include "quant/hybrid.h"

#include <algorithm>
#include <cmath>
#include <cstring>

#include "core/error.h"

namespace qft {

HybridMatrix::HybridMatrix(std::string name, int rows, int cols)
    : name_(std::move(name)),
      dense_(MemCategory::Weights, rows, cols),
      row_start_(MemCategory::Weights, static_cast<size_t>(rows) + 1) {}

int64_t HybridMatrix::outliers_for(int64_t count, float outlier_fraction) {
  // The small epsilon keeps a float fraction such as 0.01f (0.00999…) from
  // losing a whole outlier to the floor.
  return 2 * static_cast<int64_t>(std::floor(static_cast<double>(count) * outlier_fraction / 2.0 + 1e-4));
}

size_t HybridMatrix::bytes(int64_t rows, int64_t cols, int64_t outliers) {
  return QuantizedRows::bytes(rows, cols) + static_cast<size_t>(rows + 1) * sizeof(int32_t) +
         static_cast<size_t>(outliers) * (sizeof(int32_t) + sizeof(float));
}

void HybridMatrix::assign(const float* values, float outlier_fraction, const RoundingContext& rounding) {
  const int64_t count = static_cast<int64_t>(rows()) * cols();
  if (!(outlier_fraction >= 0.0f && outlier_fraction < 1.0f)) {
    fail(name_, ": outlier fraction must be in [0, 1), got ", outlier_fraction);
  }
  for (int64_t i = 0; i < count; ++i) {
    if (!std::isfinite(values[i])) fail(name_, ": element ", i, " is NaN or Inf");
  }
  const int64_t tail = outliers_for(count, outlier_fraction) / 2;
  threshold_min_ = -INFINITY;
  threshold_max_ = INFINITY;
  if (tail > 0) {
    // The tails' boundaries: everything below the tail-th smallest or above
    // the tail-th largest value is an outlier.
    Buffer<float> sorted(MemCategory::Workspace, count);
    std::memcpy(sorted.data(), values, count * sizeof(float));
    float* begin = sorted.data();
    std::nth_element(begin, begin + tail, begin + count);
    threshold_min_ = begin[tail];
    std::nth_element(begin + tail, begin + count - 1 - tail, begin + count);
    threshold_max_ = begin[count - 1 - tail];
  }
  const auto is_outlier = [&](float value) { return value < threshold_min_ || value > threshold_max_; };

  const int cols = this->cols();
  row_start_[0] = 0;
  for (int row = 0; row < rows(); ++row) {
    const float* row_values = values + static_cast<size_t>(row) * cols;
    row_start_[row + 1] = row_start_[row] + static_cast<int32_t>(std::count_if(row_values, row_values + cols, is_outlier));
  }
  const size_t outliers = static_cast<size_t>(row_start_[rows()]);
  outlier_columns_ = Buffer<int32_t>(MemCategory::Weights, outliers);
  outlier_values_ = Buffer<float>(MemCategory::Weights, outliers);
  parallel_for(rows(), [&](int64_t row) {
    const float* row_values = values + row * cols;
    int32_t next = row_start_[row];
    for (int col = 0; col < cols; ++col) {
      if (is_outlier(row_values[col])) {
        outlier_columns_[next] = col;
        outlier_values_[next++] = row_values[col];
      }
    }
    requantize_row(static_cast<int>(row), row_values, rounding);
  });
}

void HybridMatrix::refresh(float outlier_fraction, const RoundingContext& rounding) {
  Buffer<float> values(MemCategory::Workspace, static_cast<size_t>(rows()) * cols());
  dequantize_rows(values.data(), 0, rows());
  assign(values.data(), outlier_fraction, rounding);
}

void HybridMatrix::dequantize_row(float* out, int row) const {
  qft::dequantize_row(out, dense_.row_codes(row), dense_.range(row), cols());
  for (int32_t i = row_start_[row]; i < row_start_[row + 1]; ++i) out[outlier_columns_[i]] = outlier_values_[i];
}

void HybridMatrix::dequantize_rows(float* out, int row_begin, int row_end) const {
#pragma omp parallel for schedule(static)
  for (int row = row_begin; row < row_end; ++row) {
    dequantize_row(out + static_cast<size_t>(row - row_begin) * cols(), row);
  }
}

void HybridMatrix::requantize_row(int row, const float* values, const RoundingContext& rounding) {
  const int32_t first = row_start_[row], end = row_start_[row + 1];
  for (int32_t i = first; i < end; ++i) {
    outlier_values_[i] = values[outlier_columns_[i]];
    if (!std::isfinite(outlier_values_[i])) fail(name_, ": row ", row, " holds NaN or Inf");
  }
  dense_.range(row) = quantize_row(dense_.row_codes(row), values, cols(), rounding, static_cast<uint32_t>(row),
                                   outlier_columns_.data() + first, end - first, name_);
}

}  // namespace qft
