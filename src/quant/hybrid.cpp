#include "quant/hybrid.h"

#include <omp.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <tuple>
#include <vector>

#include "core/error.h"
#include "core/float16.h"
#include "core/parallel.h"

namespace qft {

HybridMatrix::HybridMatrix(std::string name, int rows, int cols)
    : name_(std::move(name)),
      dense_(MemCategory::Weights, rows, cols),
      row_start_(MemCategory::Weights, static_cast<size_t>(rows) + 1) {
  if (cols > kMaxColumns) fail(name_, ": ", cols, " columns exceed the ", kMaxColumns, " a hybrid matrix holds");
}

namespace {

constexpr int64_t kThresholdSample = int64_t{1} << 20;

// The thresholds from a strided sample of the values (all of them when
// few): below the tail-th smallest or above the tail-th largest sample value
// is an outlier.
template <class Value>
std::pair<float, float> sampled_thresholds(int64_t count, float outlier_fraction, Value&& value) {
  const int64_t stride = (count + kThresholdSample - 1) / kThresholdSample;
  const int64_t samples = (count + stride - 1) / stride;
  const int64_t tail = HybridMatrix::outliers_for(samples, outlier_fraction) / 2;
  if (tail == 0) return {-INFINITY, INFINITY};
  std::vector<float> sample(samples);
  for (int64_t i = 0; i < samples; ++i) sample[i] = value(i * stride);
  std::nth_element(sample.begin(), sample.begin() + tail, sample.end());
  const float low = sample[tail];
  std::nth_element(sample.begin() + tail, sample.end() - 1 - tail, sample.end());
  return {low, sample[samples - 1 - tail]};
}

}  // namespace

int64_t HybridMatrix::outliers_for(int64_t count, float outlier_fraction) {
  // The small epsilon keeps a float fraction such as 0.01f (0.00999…) from
  // losing a whole outlier to the floor.
  return 2 * static_cast<int64_t>(std::floor(static_cast<double>(count) * outlier_fraction / 2.0 + 1e-4));
}

size_t HybridMatrix::bytes(int64_t rows, int64_t cols, int64_t outliers) {
  return QuantizedRows::bytes(rows, cols) + static_cast<size_t>(rows + 1) * sizeof(int32_t) +
         static_cast<size_t>(outliers) * (sizeof(uint16_t) + sizeof(float));
}

// Rows are read (row_values) and rewritten one at a time, so a refresh can
// read the old S while the new one is built beside it.
template <class RowValues>
void HybridMatrix::split(RowValues&& row_values, float outlier_fraction, const RoundingContext& rounding) {
  if (!(outlier_fraction >= 0.0f && outlier_fraction < 1.0f)) {
    fail(name_, ": outlier fraction must be in [0, 1), got ", outlier_fraction);
  }
  const int cols = this->cols();
  std::vector<float> row(cols);
  int cached_row = -1;
  const auto sample_value = [&](int64_t index) {
    const int r = static_cast<int>(index / cols);
    if (r != cached_row) {
      row_values(r, row.data());
      cached_row = r;
    }
    const float value = row[index % cols];
    if (!std::isfinite(value)) fail(name_, ": row ", r, " holds NaN or Inf");
    return value;
  };
  std::tie(threshold_min_, threshold_max_) =
      sampled_thresholds(static_cast<int64_t>(rows()) * cols, outlier_fraction, sample_value);
  const auto is_outlier = [this](float v) { return v < threshold_min_ || v > threshold_max_; };

  Buffer<int32_t> row_start(MemCategory::Weights, static_cast<size_t>(rows()) + 1);
  for (int r = 0; r < rows(); ++r) {
    row_values(r, row.data());
    row_start[r + 1] = row_start[r] + static_cast<int32_t>(std::count_if(row.begin(), row.end(), is_outlier));
  }
  Buffer<uint16_t> columns(MemCategory::Weights, static_cast<size_t>(row_start[rows()]));
  Buffer<float> values(MemCategory::Weights, static_cast<size_t>(row_start[rows()]));
  std::vector<std::vector<float>> scratch(omp_get_max_threads(), std::vector<float>(cols));
  parallel_for(rows(), [&](int64_t r) {
    float* v = scratch[omp_get_thread_num()].data();
    row_values(static_cast<int>(r), v);
    const int32_t first = row_start[r];
    int32_t next = first;
    for (int col = 0; col < cols; ++col) {
      if (!is_outlier(v[col])) continue;
      if (!std::isfinite(v[col])) fail(name_, ": row ", r, " holds NaN or Inf");
      columns[next] = static_cast<uint16_t>(col);
      values[next++] = v[col];
    }
    dense_.range(static_cast<int>(r)) = quantize_row(dense_.row_codes(static_cast<int>(r)), v, cols, rounding,
                                                     static_cast<uint32_t>(r), columns.data() + first, next - first, name_);
  });
  row_start_ = std::move(row_start);
  outlier_columns_ = std::move(columns);
  outlier_values_ = std::move(values);
}

void HybridMatrix::assign(const float* values, float outlier_fraction, const RoundingContext& rounding) {
  const int cols = this->cols();
  assign([&](int row, float* out) { std::memcpy(out, values + static_cast<size_t>(row) * cols, cols * sizeof(float)); },
         outlier_fraction, rounding);
}

void HybridMatrix::assign(const std::function<void(int, float*)>& row_values, float outlier_fraction,
                          const RoundingContext& rounding) {
  // The new S is built from the values, not from the old one: free the old
  // first, so the peak is one S, as the memory plan counts it.
  row_start_ = Buffer<int32_t>();
  outlier_columns_ = Buffer<uint16_t>();
  outlier_values_ = Buffer<float>();
  split(row_values, outlier_fraction, rounding);
}

void HybridMatrix::refresh(float outlier_fraction, const RoundingContext& rounding) {
  split([this](int row, float* out) { dequantize_hybrid_row(out, view(), row); }, outlier_fraction, rounding);
}

void HybridMatrix::restore_outliers(const int32_t* row_start, const uint16_t* columns, const float* values,
                                    int64_t outliers, float threshold_min, float threshold_max) {
  if (outliers < 0 || outliers > static_cast<int64_t>(rows()) * cols()) fail(name_, ": ", outliers, " outliers do not fit");
  if (row_start[0] != 0 || row_start[rows()] != outliers) fail(name_, ": outlier row starts do not span the outliers");
  // Every start first: a later decrease would let an earlier row index past the arrays.
  for (int r = 0; r < rows(); ++r) {
    if (row_start[r + 1] < row_start[r]) fail(name_, ": outlier row starts decrease at row ", r);
  }
  for (int r = 0; r < rows(); ++r) {
    for (int32_t i = row_start[r]; i < row_start[r + 1]; ++i) {
      if (columns[i] >= cols() || (i > row_start[r] && columns[i] <= columns[i - 1])) {
        fail(name_, ": outlier columns of row ", r, " are out of order or out of range");
      }
      if (!std::isfinite(values[i])) fail(name_, ": outlier in row ", r, " is NaN or Inf");
    }
  }
  if (std::isnan(threshold_min) || std::isnan(threshold_max) || threshold_min > threshold_max) {
    fail(name_, ": invalid outlier thresholds [", threshold_min, ", ", threshold_max, "]");
  }
  Buffer<int32_t> starts(MemCategory::Weights, static_cast<size_t>(rows()) + 1);
  Buffer<uint16_t> new_columns(MemCategory::Weights, static_cast<size_t>(outliers));
  Buffer<float> new_values(MemCategory::Weights, static_cast<size_t>(outliers));
  std::memcpy(starts.data(), row_start, starts.size() * sizeof(int32_t));
  if (outliers > 0) {
    std::memcpy(new_columns.data(), columns, new_columns.size() * sizeof(uint16_t));
    std::memcpy(new_values.data(), values, new_values.size() * sizeof(float));
  }
  row_start_ = std::move(starts);
  outlier_columns_ = std::move(new_columns);
  outlier_values_ = std::move(new_values);
  threshold_min_ = threshold_min;
  threshold_max_ = threshold_max;
}

void dequantize_hybrid_row(float* out, const HybridView& matrix, int row) {
  const int cols = matrix.dense.cols;
  dequantize_row(out, matrix.dense.row_codes(row), matrix.dense.ranges[row], cols);
  for (int32_t i = matrix.row_start[row]; i < matrix.row_start[row + 1]; ++i) out[matrix.columns[i]] = matrix.values[i];
}

void requantize_hybrid_row(const HybridView& matrix, int row, const float* values, const RoundingContext& rounding,
                           const std::string& tensor) {
  const int32_t first = matrix.row_start[row], end = matrix.row_start[row + 1];
  for (int32_t i = first; i < end; ++i) {
    matrix.values[i] = values[matrix.columns[i]];
    if (!std::isfinite(matrix.values[i])) fail(tensor, ": row ", row, " holds NaN or Inf");
  }
  matrix.dense.ranges[row] = quantize_row(matrix.dense.row_codes(row), values, matrix.dense.cols, rounding,
                                          static_cast<uint32_t>(row), matrix.columns + first, end - first, tensor);
}

void dequantize_hybrid_rows(float* out, const HybridView& matrix, int row_begin, int row_end) {
#pragma omp parallel for schedule(static)
  for (int row = row_begin; row < row_end; ++row) {
    dequantize_hybrid_row(out + static_cast<size_t>(row - row_begin) * matrix.dense.cols, matrix, row);
  }
}

void dequantize_hybrid_rows_bf16(uint16_t* out, const HybridView& matrix, int row_begin, int row_end) {
  const int cols = matrix.dense.cols;
#pragma omp parallel for schedule(static)
  for (int row = row_begin; row < row_end; ++row) {
    uint16_t* values = out + static_cast<size_t>(row - row_begin) * cols;
    dequantize_row_bf16(values, matrix.dense.row_codes(row), matrix.dense.ranges[row], cols);
    for (int32_t i = matrix.row_start[row]; i < matrix.row_start[row + 1]; ++i) {
      values[matrix.columns[i]] = float_to_bf16(matrix.values[i]);
    }
  }
}

void gather_hybrid_rows(float* out, const HybridView& matrix, const int* rows, int N) {
#pragma omp parallel for schedule(static)
  for (int n = 0; n < N; ++n) dequantize_hybrid_row(out + static_cast<size_t>(n) * matrix.dense.cols, matrix, rows[n]);
}

}  // namespace qft
