#include "train/mixed_store.h"

#include <algorithm>
#include <cstring>

#include "core/error.h"
#include "core/float16.h"

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
  for (size_t j = 0; j < param.count; ++j) {
    const uint16_t rounded = float_to_bf16(param.master[j]);
    if (param.bf16.size()) param.bf16[j] = rounded;
    else param.vector[j] = bf16_to_float(rounded);
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
    std::fill(param.grad.data(), param.grad.data() + param.count, uint16_t{0});
    round_from_master(i);
  }
  steps_ = reader.read_int64("optimizer.adamw.steps");
  if (steps_ < 0) fail(reader.path(), ": negative AdamW step count");
}

MixedPrecisionStore::~MixedPrecisionStore() = default;

void MixedPrecisionStore::load(size_t index, float* out) const {
  const Param& param = *params_.at(index);
#pragma omp parallel for simd schedule(static)
  for (size_t j = 0; j < param.count; ++j) out[j] = bf16_to_float(param.bf16[j]);
}

void MixedPrecisionStore::load_bf16(size_t index, uint16_t* out) const {
  const Param& param = *params_.at(index);
  std::memcpy(out, param.bf16.data(), param.count * sizeof(uint16_t));
}

void MixedPrecisionStore::load_row(size_t index, int row, float* out) const {
  const Param& param = *params_.at(index);
  const uint16_t* codes = param.bf16.data() + static_cast<size_t>(row) * param.cols;
  for (int j = 0; j < param.cols; ++j) out[j] = bf16_to_float(codes[j]);
}

float* MixedPrecisionStore::vector(size_t index) { return params_.at(index)->vector.data(); }

void MixedPrecisionStore::master(size_t index, float* out) const {
  std::memcpy(out, params_.at(index)->master.data(), params_.at(index)->count * sizeof(float));
}

void MixedPrecisionStore::consume(size_t index, const float* grad) {
  Param& param = *params_[index];
#pragma omp parallel for simd schedule(static)
  for (size_t j = 0; j < param.count; ++j) param.grad[j] = float_to_bf16(bf16_to_float(param.grad[j]) + grad[j]);
}

void MixedPrecisionStore::end_step(float lr, bool apply) {
  if (passes_ == 0) fail("end_step without a backward pass");
  if (!apply) {
    for (const auto& param : params_) std::fill(param->grad.data(), param->grad.data() + param->count, uint16_t{0});
    return;
  }
  const AdamWStep adam = AdamWStep::at(adamw_, ++steps_, lr);
  for (size_t i = 0; i < params_.size(); ++i) {
    Param& param = *params_[i];
#pragma omp parallel for schedule(static)
    for (size_t j = 0; j < param.count; ++j) {
      const float w = adam.update(param.master[j], param.m[j], param.v[j], bf16_to_float(param.grad[j]));
      param.master[j] = w;
      param.grad[j] = 0;
      const uint16_t rounded = float_to_bf16(w);
      if (param.bf16.size()) param.bf16[j] = rounded;
      else param.vector[j] = bf16_to_float(rounded);
    }
    invalidate(i);
  }
}

}  // namespace qft
