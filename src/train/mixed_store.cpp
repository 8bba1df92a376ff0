#include "train/mixed_store.h"

#include "core/error.h"
#include "kernels/kernels.h"
#include "optim/updates.h"

namespace qft {

struct MixedPrecisionStore::Param {
  size_t count = 0;
  int cols = 0;
  Buffer<uint16_t> bf16;      // matrices: the weights forward and backward use
  Buffer<float> vector;       // norms and biases: BF16 values held as FP32
  Buffer<uint16_t> grad;      // BF16 gradient, accumulated over micro-batches
  Buffer<float> master;       // FP32 weight copy
  Buffer<float> m, v;         // FP32 moments
};

MixedMemory MixedPrecisionStore::memory(const ModelConfig& config) {
  MixedMemory memory;
  for (const ParamSpec& spec : parameter_specs(config)) {
    const size_t count = static_cast<size_t>(shape_numel(spec.shape));
    memory.weights += count * (is_matrix(spec.role) ? sizeof(uint16_t) : sizeof(float));
    memory.grads += count * sizeof(uint16_t);
    memory.weight_copies += count * sizeof(float);
    memory.moments += 2 * count * sizeof(float);
  }
  const WorkingMemory working = working_memory(config);
  memory.grads += working.grads;
  memory.workspace = working.weights;
  return memory;
}

MixedPrecisionStore::MixedPrecisionStore(const ModelSource& source, const OptimizerSettings& adamw)
    : TensorStore(source.config(), source.specs()), adamw_(adamw) {
  for (size_t i = 0; i < specs_.size(); ++i) {
    auto param = std::make_unique<Param>();
    param->count = static_cast<size_t>(shape_numel(specs_[i].shape));
    param->cols = static_cast<int>(specs_[i].shape.back());
    param->master = Buffer<float>(MemCategory::WeightCopies, param->count);
    source.fill(i, param->master.data());
    if (is_matrix(specs_[i].role)) {
      param->bf16 = Buffer<uint16_t>(MemCategory::Weights, param->count);
    } else {
      param->vector = Buffer<float>(MemCategory::Weights, param->count);
    }
    param->grad = Buffer<uint16_t>(MemCategory::Gradients, param->count);
    param->m = Buffer<float>(MemCategory::OptimizerState, param->count);
    param->v = Buffer<float>(MemCategory::OptimizerState, param->count);
    params_.push_back(std::move(param));
  }
  for (size_t i = 0; i < params_.size(); ++i) round_from_master(i);
  bind_views();
}

void MixedPrecisionStore::round_from_master(size_t index) {
  Param& param = *params_[index];
  if (param.bf16.size()) {
    round_to_bf16(param.bf16.data(), param.master.data(), param.count);
  } else {
    round_through_bf16(param.vector.data(), param.master.data(), param.count);
  }
  invalidate(index);
}

void MixedPrecisionStore::save_state(StateWriter& writer) const {
  for (size_t i = 0; i < params_.size(); ++i) {
    const Param& param = *params_[i];
    const std::string& name = specs_[i].name;
    writer.add(name, DType::F32, specs_[i].shape, param.master.data());
    writer.add(name + ".adamw.m", DType::F32, specs_[i].shape, param.m.data());
    writer.add(name + ".adamw.v", DType::F32, specs_[i].shape, param.v.data());
  }
  writer.add_int64("optimizer.adamw.steps", steps_);
}

void MixedPrecisionStore::load_state(const StateReader& reader) {
  for (size_t i = 0; i < params_.size(); ++i) {
    Param& param = *params_[i];
    const std::string& name = specs_[i].name;
    reader.read(name, DType::F32, specs_[i].shape, param.master.data());
    reader.read(name + ".adamw.m", DType::F32, specs_[i].shape, param.m.data());
    reader.read(name + ".adamw.v", DType::F32, specs_[i].shape, param.v.data());
    kernels::zero(param.grad.data(), param.count * sizeof(uint16_t));
    round_from_master(i);
  }
  steps_ = reader.read_int64("optimizer.adamw.steps");
  if (steps_ < 0) fail(reader.path(), ": negative AdamW step count");
}

MixedPrecisionStore::~MixedPrecisionStore() = default;

void MixedPrecisionStore::load(size_t index, float* out, int first, int rows) const {
  const Param& param = *params_.at(index);
  widen_bf16(out, param.bf16.data() + static_cast<size_t>(first) * param.cols, static_cast<size_t>(rows) * param.cols);
}

void MixedPrecisionStore::load_bf16(size_t index, uint16_t* out, int first, int rows) const {
  const Param& param = *params_.at(index);
  kernels::copy(out, param.bf16.data() + static_cast<size_t>(first) * param.cols,
                static_cast<size_t>(rows) * param.cols * sizeof(uint16_t));
}

void MixedPrecisionStore::gather_rows(float* out, size_t index, const int* rows, int N) const {
  const Param& param = *params_.at(index);
  kernels::embedding_forward(out, rows, param.bf16.data(), N, param.cols);
}

float* MixedPrecisionStore::vector(size_t index) { return params_.at(index)->vector.data(); }

void MixedPrecisionStore::master(size_t index, float* out) const {
  kernels::copy(out, params_.at(index)->master.data(), params_.at(index)->count * sizeof(float));
}

void MixedPrecisionStore::consume(size_t index, const float* grad, int first, int rows) {
  Param& param = *params_[index];
  accumulate_bf16(param.grad.data() + static_cast<size_t>(first) * param.cols, grad,
                  static_cast<size_t>(rows) * param.cols);
}

void MixedPrecisionStore::end_step(float lr, bool apply) {
  if (passes_ == 0) fail("end_step without a backward pass");
  if (!apply) {
    for (const auto& param : params_) kernels::zero(param->grad.data(), param->count * sizeof(uint16_t));
    return;
  }
  const AdamWStep adam = AdamWStep::at(adamw_, ++steps_, lr);
  for (size_t i = 0; i < params_.size(); ++i) {
    Param& param = *params_[i];
    mixed_adamw_step(param.master.data(), param.m.data(), param.v.data(), param.grad.data(),
                     param.bf16.size() ? param.bf16.data() : nullptr, param.vector.data(), param.count, adam);
    invalidate(i);
  }
}

}  // namespace qft
