#pragma once
// The INT8 gradient stack of Algorithm 1–2: backward pushes each parameter's
// gradient (quantized per row) in the order it completes — last layer first —
// and the optimizer pops them first layer first, O(1) each. Slots are sized
// once for the fixed push order, so a step allocates nothing. Later
// micro-batches of an accumulated step add into the slots already pushed.
#include <cstddef>
#include <string>
#include <vector>

#include "quant/quantizer.h"

namespace qft {

class GradientStack {
 public:
  struct Slot {
    size_t param;  // which parameter's gradient the slot holds
    int rows, cols;
  };
  explicit GradientStack(const std::vector<Slot>& push_order);

  // grad (rows, cols) of the parameter next in push order.
  void push(size_t param, const float* grad, const RoundingContext& rounding, const std::string& name);
  // Adds grad into the parameter's pushed gradient, re-quantizing its rows.
  void accumulate(size_t param, const float* grad, const RoundingContext& rounding, const std::string& name);
  struct Entry {
    size_t param;
    const QuantizedRows* grad;
  };
  Entry pop();

  bool empty() const { return top_ == 0; }
  size_t size() const { return top_; }
  static size_t bytes(const std::vector<Slot>& push_order);

 private:
  std::vector<Slot> order_;
  std::vector<QuantizedRows> slots_;
  std::vector<size_t> slot_of_param_;
  size_t top_ = 0;
};

}  // namespace qft
