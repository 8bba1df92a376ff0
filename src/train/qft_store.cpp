#include "train/qft_store.h"

#include <omp.h>

#include <algorithm>
#include <cstring>
#include <tuple>

#include "core/carver.h"
#include "core/error.h"

namespace qft {
namespace {

// Random streams of one parameter: its weights, momentum and gradient
// writes draw independent numbers.
enum Purpose : uint32_t { kWeight = 0, kMomentum = 1, kGradient = 2, kPurposes = 4 };

bool is_matrix(ParamRole role) { return role == ParamRole::Embedding || role == ParamRole::LmHead || role == ParamRole::Linear; }

// Per-thread rows for de-quantized gradients and momentum during updates.
float* thread_row(int which, int cols) {
  thread_local std::vector<float> rows[2];
  rows[which].resize(cols);
  return rows[which].data();
}

int layer_of(const std::string& name) {
  static const std::string prefix = "model.layers.";
  if (name.rfind(prefix, 0) != 0) return -1;
  return std::stoi(name.substr(prefix.size()));
}

// (rows, cols) of a parameter as QFT stores it: vectors are one row.
std::pair<int, int> stored_shape(const ParamSpec& spec) {
  const int rows = is_matrix(spec.role) ? static_cast<int>(spec.shape[0]) : 1;
  return {rows, static_cast<int>(shape_numel(spec.shape) / rows)};
}

size_t padded_floats(const ParamSpec& spec) { return (static_cast<size_t>(shape_numel(spec.shape)) + 15) / 16 * 16; }

}  // namespace

struct QftStore::Param {
  const ParamSpec* spec = nullptr;
  int rows = 0, cols = 0;
  std::unique_ptr<HybridMatrix> matrix;  // matrices
  Buffer<float> vector;                  // norm weights and biases, FP32
  QuantizedRows momentum;
};

// Parameters de-quantized together: members[unit] lists the parameter
// indices of one layer (or of the head); every unit has the same layout, so
// one FP32 weight buffer and one gradient buffer serve them all.
struct QftStore::Group {
  std::vector<std::vector<size_t>> members;
  std::vector<size_t> offsets;  // of each member within the buffers
  Buffer<float> weights;        // de-quantized weights of the loaded unit
  Buffer<float> grads;          // FP32 gradients of the unit in backward
  int loaded = -1;              // the unit in `weights`, or -1
  bool grads_open = false;      // `grads` zeroed for the current pass
  LayerParams layer_weights, layer_grads;
  HeadParams head_weights, head_grads;

  void lay_out(const std::vector<ParamSpec>& specs) {
    size_t used = 0;
    for (size_t index : members[0]) {
      offsets.push_back(used);
      used += padded_floats(specs[index]);
    }
    weights = Buffer<float>(MemCategory::Workspace, used);
    grads = Buffer<float>(MemCategory::Gradients, used);
  }

  // A view lookup by HF name, for bind_layer_params / bind_head_params.
  auto lookup(Buffer<float>& buffer, const std::vector<ParamSpec>& specs) {
    return [this, &buffer, &specs](const std::string& name) -> float* {
      for (size_t k = 0; k < members[0].size(); ++k) {
        if (specs[members[0][k]].name == name) return buffer.data() + offsets[k];
      }
      return nullptr;
    };
  }
};

QftStore::QftStore(const ModelSource& source, const QftSettings& settings)
    : config_(source.config()), specs_(source.specs()), settings_(settings) {
  if (settings_.grad_accum < 1) fail("--grad-accum must be at least 1");
  size_t largest = 0;
  for (const ParamSpec& spec : specs_) largest = std::max(largest, static_cast<size_t>(shape_numel(spec.shape)));
  Buffer<float> staging(MemCategory::Workspace, largest);  // one tensor at a time, never the model
  for (size_t i = 0; i < specs_.size(); ++i) {
    auto param = std::make_unique<Param>();
    param->spec = &specs_[i];
    const bool matrix = is_matrix(specs_[i].role);
    std::tie(param->rows, param->cols) = stored_shape(specs_[i]);
    source.fill(i, staging.data());
    if (matrix) {
      param->matrix = std::make_unique<HybridMatrix>(specs_[i].name, param->rows, param->cols);
      param->matrix->assign(staging.data(), settings_.outlier_fraction, rounding(i, kWeight, 0));
    } else {
      param->vector = Buffer<float>(MemCategory::Weights, param->cols);
      std::memcpy(param->vector.data(), staging.data(), param->cols * sizeof(float));
    }
    param->momentum = QuantizedRows(MemCategory::OptimizerState, param->rows, param->cols);
    params_.push_back(std::move(param));
  }
  build_groups();
  if (!fused()) build_stack();
}

void QftStore::build_groups() {
  layer_group_ = std::make_unique<Group>();
  head_group_ = std::make_unique<Group>();
  layer_group_->members.resize(config_.num_layers);
  head_group_->members.resize(1);
  for (size_t i = 0; i < specs_.size(); ++i) {
    const int layer = layer_of(specs_[i].name);
    (layer >= 0 ? layer_group_->members[layer] : head_group_->members[0]).push_back(i);
  }
  Group& layers = *layer_group_;
  layers.lay_out(specs_);
  layers.layer_weights = bind_layer_params(0, layers.lookup(layers.weights, specs_));
  layers.layer_grads = bind_layer_params(0, layers.lookup(layers.grads, specs_));
  Group& head = *head_group_;
  head.lay_out(specs_);
  head.head_weights = bind_head_params(config_, head.lookup(head.weights, specs_));
  head.head_grads = bind_head_params(config_, head.lookup(head.grads, specs_));
}

// Push order: last layer first, each unit's parameters last to first, the
// head (whose embedding gradient completes last) on top.
void QftStore::build_stack() {
  std::vector<GradientStack::Slot> order;
  const auto push_unit = [&](const std::vector<size_t>& members) {
    for (auto it = members.rbegin(); it != members.rend(); ++it) order.push_back({*it, params_[*it]->rows, params_[*it]->cols});
  };
  for (int layer = config_.num_layers - 1; layer >= 0; --layer) push_unit(layer_group_->members[layer]);
  push_unit(head_group_->members[0]);
  stack_ = std::make_unique<GradientStack>(order);
}

QftStore::~QftStore() = default;

QftMemory QftStore::memory(const ModelConfig& config, const QftSettings& settings) {
  QftMemory memory;
  size_t largest = 0, largest_matrix = 0, layer_floats = 0, head_floats = 0;
  std::vector<GradientStack::Slot> slots;
  const std::vector<ParamSpec> specs = parameter_specs(config);
  for (size_t i = 0; i < specs.size(); ++i) {
    const ParamSpec& spec = specs[i];
    const auto [rows, cols] = stored_shape(spec);
    const int64_t count = shape_numel(spec.shape);
    largest = std::max(largest, static_cast<size_t>(count));
    if (is_matrix(spec.role)) {
      memory.weights += HybridMatrix::bytes(rows, cols, HybridMatrix::outliers_for(count, settings.outlier_fraction));
      largest_matrix = std::max(largest_matrix, static_cast<size_t>(count));
    } else {
      memory.weights += static_cast<size_t>(count) * sizeof(float);
    }
    memory.momentum += QuantizedRows::bytes(rows, cols);
    slots.push_back({i, rows, cols});
    const int layer = layer_of(spec.name);
    if (layer < 0) head_floats += padded_floats(spec);
    if (layer == 0) layer_floats += padded_floats(spec);
  }
  const bool stacked = settings.grad_accum > 1 || settings.stack_gradients;
  memory.stack = stacked ? GradientStack::bytes(slots) : 0;
  memory.fp32_grads = (layer_floats + head_floats) * sizeof(float);
  memory.workspace = memory.fp32_grads;
  // Construction stages one FP32 tensor; a refresh holds a matrix's values
  // and a sorted copy of them.
  memory.transient = std::max(largest, 2 * largest_matrix) * sizeof(float);
  return memory;
}

RoundingContext QftStore::rounding(size_t index, int purpose, uint32_t step) const {
  // The initial split and the per-epoch refresh change nothing on average,
  // so they round to nearest; updates use the configured rounding.
  const Rounding mode = purpose == kWeight && step == 0 ? Rounding::Nearest : settings_.rounding;
  return {mode, settings_.seed, static_cast<uint32_t>(index) * kPurposes + purpose, step};
}

void QftStore::invalidate_loaded_weights() {
  layer_group_->loaded = -1;
  head_group_->loaded = -1;
}

void QftStore::begin_step(int step, float lr) {
  if (step < 1) fail("steps count from 1");
  step_ = step;
  lr_ = lr;
  micro_batch_ = 0;
}

void QftStore::end_step() {
  if (micro_batch_ != settings_.grad_accum) {
    fail("a step needs ", settings_.grad_accum, " micro-batches, got ", micro_batch_);
  }
  if (fused()) return;
  // Algorithm 2: the first layer's gradients are on top.
  while (!stack_->empty()) {
    const GradientStack::Entry entry = stack_->pop();
    update(entry.param, nullptr, entry.grad);
  }
  invalidate_loaded_weights();
}

void QftStore::refresh_thresholds() {
  for (size_t i = 0; i < params_.size(); ++i) {
    if (params_[i]->matrix) params_[i]->matrix->refresh(settings_.outlier_fraction, rounding(i, kWeight, 0));
  }
  invalidate_loaded_weights();
}

void QftStore::dequantize(size_t index, float* out) const {
  const Param& param = *params_.at(index);
  if (param.matrix) {
    param.matrix->dequantize_rows(out, 0, param.rows);
  } else {
    std::memcpy(out, param.vector.data(), param.cols * sizeof(float));
  }
}

int64_t QftStore::outlier_count() const {
  int64_t total = 0;
  for (const auto& param : params_) total += param->matrix ? param->matrix->outlier_count() : 0;
  return total;
}

void QftStore::load(Group& group, int unit) {
  if (group.loaded == unit) return;
  for (size_t k = 0; k < group.members[unit].size(); ++k) {
    dequantize(group.members[unit][k], group.weights.data() + group.offsets[k]);
  }
  group.loaded = unit;
}

void QftStore::open_grads(Group& group) {
  if (group.grads_open) return;
  std::memset(group.grads.data(), 0, group.grads.size() * sizeof(float));
  group.grads_open = true;
}

const LayerParams& QftStore::layer_weights(int layer) {
  load(*layer_group_, layer);
  return layer_group_->layer_weights;
}

const HeadParams& QftStore::head_weights() {
  load(*head_group_, 0);
  return head_group_->head_weights;
}

const LayerParams& QftStore::layer_grads(int layer) {
  open_grads(*layer_group_);
  return layer_group_->layer_grads;
}

const HeadParams& QftStore::head_grads() {
  open_grads(*head_group_);
  return head_group_->head_grads;
}

void QftStore::layer_grads_done(int layer) { grads_done(*layer_group_, layer); }

void QftStore::head_grads_done() {
  grads_done(*head_group_, 0);
  ++micro_batch_;  // the embedding's gradient is the last of a backward pass
}

// Fused: update each parameter now. Stacked: quantize its gradient onto the
// stack (first micro-batch) or into its slot (later ones).
void QftStore::grads_done(Group& group, int unit) {
  const std::vector<size_t>& members = group.members[unit];
  for (size_t k = members.size(); k-- > 0;) {
    const size_t index = members[k];
    const float* grad = group.grads.data() + group.offsets[k];
    if (fused()) {
      update(index, grad, nullptr);
      continue;
    }
    const RoundingContext context = rounding(index, kGradient, static_cast<uint32_t>(step_ * settings_.grad_accum + micro_batch_));
    if (micro_batch_ == 0) {
      stack_->push(index, grad, context, specs_[index].name);
    } else {
      stack_->accumulate(index, grad, context, specs_[index].name);
    }
  }
  group.grads_open = false;
  if (fused()) group.loaded = -1;
}

// Algorithm 2 for one parameter, row by row: de-quantize weights, momentum
// and gradient, apply Lion, re-quantize weights and momentum.
void QftStore::update(size_t index, const float* fp32_grad, const QuantizedRows* int8_grad) {
  Param& param = *params_[index];
  const int cols = param.cols;
  const RoundingContext momentum_rounding = rounding(index, kMomentum, step_);
  const auto update_row = [&](int row, float* weights) {
    const float* grad = fp32_grad ? fp32_grad + static_cast<size_t>(row) * cols : nullptr;
    if (!grad) {
      float* scratch = thread_row(0, cols);
      dequantize_row(scratch, int8_grad->row_codes(row), int8_grad->range(row), cols);
      grad = scratch;
    }
    float* momentum = thread_row(1, cols);
    dequantize_row(momentum, param.momentum.row_codes(row), param.momentum.range(row), cols);
    lion_update(weights, momentum, grad, cols, lr_, settings_.lion);
    param.momentum.range(row) = quantize_row(param.momentum.row_codes(row), momentum, cols, momentum_rounding,
                                             static_cast<uint32_t>(row), nullptr, 0, param.spec->name);
  };
  if (param.matrix) {
    param.matrix->update_rows(update_row, rounding(index, kWeight, step_));
  } else {
    update_row(0, param.vector.data());
  }
}

}  // namespace qft
