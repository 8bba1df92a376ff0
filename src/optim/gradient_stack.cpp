#include "optim/gradient_stack.h"

#include "core/error.h"

namespace qft {

void GradientStack::push(size_t param, int rows, int cols, const float* grad, const RoundingContext& rounding,
                         const std::string& name) {
  if (top_ == slots_.size()) {
    params_.push_back(param);
    slots_.emplace_back(MemCategory::Gradients, rows, cols);
    if (slot_of_param_.size() <= param) slot_of_param_.resize(param + 1, SIZE_MAX);
    slot_of_param_[param] = top_;
  }
  if (params_[top_] != param || slots_[top_].rows() != rows || slots_[top_].cols() != cols) {
    fail("gradient stack: '", name, "' pushed out of order");
  }
  quantize_rows(slots_[top_++].view(), grad, rounding, name);
}

void GradientStack::accumulate(size_t param, const float* grad, const RoundingContext& rounding,
                               const std::string& name) {
  const size_t slot_index = param < slot_of_param_.size() ? slot_of_param_[param] : SIZE_MAX;
  if (slot_index >= top_) fail("gradient stack: '", name, "' was never pushed");
  accumulate_rows(slots_[slot_index].view(), grad, rounding, name);
}

GradientStack::Entry GradientStack::pop() {
  if (top_ == 0) fail("gradient stack: pop from an empty stack");
  --top_;
  return {params_[top_], &slots_[top_]};
}

}  // namespace qft
