#pragma once
// QLion: the QFT paper's optimizer (Algorithm 2) — Lion on weights stored as
// INT8 rows plus FP32 outliers (quant/hybrid.h), with INT8 (or 4-bit) momentum, both
// written back with stochastic (or nearest) rounding. One operation over
// plain arrays, so a device can implement it beside this CPU one.
#include "optim/optimizer.h"
#include "quant/hybrid.h"

namespace qft {

// One parameter's state, as arrays. A matrix's rows are `weights`; a norm
// weight or bias is one FP32 row, `vector`, kept exact. The momentum and an
// FP32 gradient hold only the rows being updated (row r at r − row_begin);
// a stacked INT8 gradient holds every row.
struct QLionParameter {
  HybridView weights;              // matrices, else dense.codes is null
  float* vector = nullptr;         // (cols) a norm weight or bias
  QuantizedView momentum;          // (updated rows, cols), INT8 or 4-bit blocks
  const float* grad = nullptr;     // (updated rows, cols) FP32, or null
  QuantizedView stacked_grad;      // (rows, cols) INT8, when grad is null
  int cols = 0;
};

// The Philox streams of one update: the weights' and the momentum's writes.
struct QLionRounding {
  RoundingContext weights, momentum;
};

// Rows [row_begin, row_end) of `param`, each on its own (row-parallel):
// de-quantize weights, momentum and gradient; c = β1·m + (1−β1)·g,
// w ← w·(1 − lr·λ) − lr·sign(c), m ← β2·m + (1−β2)·g; store the outliers
// exactly and quantize the rest of the row and the momentum again. A vector
// is row 0 (updated only when row_begin is 0 < row_end). Throws naming
// `tensor` on NaN or Inf.
void qlion_update_rows(const QLionParameter& param, int row_begin, int row_end, float lr,
                       const OptimizerSettings& lion, const QLionRounding& rounding, const std::string& tensor);

}  // namespace qft
