#include "optim/qlion.h"

#include <vector>

#include "core/parallel.h"
#include "optim/updates.h"

namespace qft {
namespace {

// Per-thread rows: the weights, the gradient and the momentum of one row.
float* thread_row(int which, int cols) {
  thread_local std::vector<float> rows[3];
  rows[which].resize(cols);
  return rows[which].data();
}

// Lion on one row of weights (cols) in place, from the row's gradient and momentum.
void update_row(const QLionParameter& param, int row, int row_begin, float* weights, float lr,
                const OptimizerSettings& lion, const QLionRounding& rounding, const std::string& tensor) {
  const int cols = param.cols, local = row - row_begin;  // in the momentum's and FP32 gradient's rows
  const float* grad = param.grad ? param.grad + static_cast<size_t>(local) * cols : nullptr;
  if (!grad) {
    float* scratch = thread_row(1, cols);
    dequantize_row(scratch, param.stacked_grad.row_codes(row), param.stacked_grad.ranges[row], cols);
    grad = scratch;
  }
  float* momentum = thread_row(2, cols);
  dequantize_view_row(momentum, param.momentum, local);
  lion_update(weights, momentum, grad, cols, lr, lion);
  quantize_view_row(param.momentum, local, momentum, rounding.momentum, static_cast<uint32_t>(row), tensor);
}

}  // namespace

void qlion_update_rows(const QLionParameter& param, int row_begin, int row_end, float lr,
                       const OptimizerSettings& lion, const QLionRounding& rounding, const std::string& tensor) {
  if (!param.weights.dense.codes) {
    if (row_begin == 0 && row_end > 0) update_row(param, 0, 0, param.vector, lr, lion, rounding, tensor);
    return;
  }
  parallel_for(row_end - row_begin, [&](int64_t index) {
    const int row = row_begin + static_cast<int>(index);
    float* values = thread_row(0, param.cols);
    dequantize_hybrid_row(values, param.weights, row);
    update_row(param, row, row_begin, values, lr, lion, rounding, tensor);
    requantize_hybrid_row(param.weights, row, values, rounding.weights, tensor);
  });
}

}  // namespace qft
