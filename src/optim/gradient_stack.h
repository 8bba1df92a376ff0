#pragma once
// The INT8 gradient stack of Algorithms 1–2: backward pushes each parameter's
// gradient (quantized per row) as it completes — last layer first — and the
// optimizer pops them first layer first, O(1) each. The first step sizes one
// slot per push; later steps push in the same order into the same slots, so
// steady-state steps allocate nothing. Later micro-batches of an accumulated
// step add into the slots already pushed.
#include <cstddef>
#include <string>
#include <vector>

#include "quant/quantizer.h"

namespace qft {

class GradientStack {
 public:
  // grad (rows, cols).
  void push(size_t param, int rows, int cols, const float* grad, const RoundingContext& rounding,
            const std::string& name);
  // Adds grad into the parameter's pushed gradient, re-quantizing its rows.
  void accumulate(size_t param, const float* grad, const RoundingContext& rounding, const std::string& name);

  struct Entry {
    size_t param;
    const QuantizedRows* grad;
  };
  Entry pop();

  // Drops everything pushed (a step that is skipped); the slots stay.
  void clear() { top_ = 0; }
  bool empty() const { return top_ == 0; }
  size_t size() const { return top_; }

 private:
  std::vector<size_t> params_;  // which parameter each slot holds
  std::vector<QuantizedRows> slots_;
  std::vector<size_t> slot_of_param_;
  size_t top_ = 0;
};

}  // namespace qft
