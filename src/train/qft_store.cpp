#include "train/qft_store.h"

#include <omp.h>

#include <algorithm>
#include <cstring>
#include <tuple>

#include "core/error.h"

namespace qft {
namespace {

// Random streams of one parameter: its weights, momentum and gradient
// writes draw independent numbers.
enum Purpose : uint32_t { kWeight = 0, kMomentum = 1, kGradient = 2, kPurposes = 4 };

bool is_matrix(ParamRole role) {
  return role == ParamRole::Embedding || role == ParamRole::LmHead || role == ParamRole::Linear;
}

// (rows, cols) of a parameter as QFT stores it: vectors are one row.
std::pair<int, int> stored_shape(const ParamSpec& spec) {
  const int rows = is_matrix(spec.role) ? static_cast<int>(spec.shape[0]) : 1;
  return {rows, static_cast<int>(shape_numel(spec.shape) / rows)};
}

size_t padded(size_t floats) { return (floats + 15) / 16 * 16; }

// Per-thread rows for de-quantized gradients and momentum during updates.
float* thread_row(int which, int cols) {
  thread_local std::vector<float> rows[2];
  rows[which].resize(cols);
  return rows[which].data();
}

}  // namespace

struct QftStore::Param {
  const ParamSpec* spec = nullptr;
  int rows = 0, cols = 0;
  std::unique_ptr<HybridMatrix> matrix;  // matrices
  Buffer<float> vector;                  // norm weights and biases, FP32
  QuantizedRows momentum;
};

// Sizes of the FP32 working buffers, shared by memory() and the constructor.
struct QftStore::Layout {
  size_t largest_linear = 0;         // floats of the largest linear weight
  size_t head = 0;                   // V·C
  std::vector<size_t> layer_vector_offsets;  // layer 0's norms and biases, spec order
  size_t vector_floats = 0;

  explicit Layout(const ModelConfig& config, const std::vector<ParamSpec>& specs) {
    head = static_cast<size_t>(config.vocab_size) * config.hidden_size;
    const std::string layer0 = layer_param_name(0, "");
    for (const ParamSpec& spec : specs) {
      const size_t count = static_cast<size_t>(shape_numel(spec.shape));
      if (spec.role == ParamRole::Linear) largest_linear = std::max(largest_linear, count);
      if (!is_matrix(spec.role) && spec.name.rfind(layer0, 0) == 0) {
        layer_vector_offsets.push_back(vector_floats);
        vector_floats += padded(count);
      }
    }
    vector_floats = std::max(vector_floats, padded(config.hidden_size));  // or the final norm
  }
};

QftMemory QftStore::memory(const ModelConfig& config, const QftSettings& settings) {
  const std::vector<ParamSpec> specs = parameter_specs(config);
  const Layout layout(config, specs);
  QftMemory memory;
  for (const ParamSpec& spec : specs) {
    memory.staging = std::max(memory.staging, static_cast<size_t>(shape_numel(spec.shape)) * sizeof(float));
    const auto [rows, cols] = stored_shape(spec);
    const int64_t count = shape_numel(spec.shape);
    memory.weights += is_matrix(spec.role)
                          ? HybridMatrix::bytes(rows, cols, HybridMatrix::outliers_for(count, settings.outlier_fraction))
                          : static_cast<size_t>(count) * sizeof(float);
    memory.momentum += QuantizedRows::bytes(rows, cols);
  }
  const bool stacked = settings.grad_accum > 1 || settings.stack_gradients;
  memory.stack = stacked ? memory.momentum : 0;  // the same per-row INT8 layout
  const size_t shared = std::max(layout.largest_linear, layout.head);
  const size_t matrix_grads = config.tie_word_embeddings ? layout.largest_linear + layout.head : shared;
  memory.fp32_grads = (matrix_grads + layout.vector_floats) * sizeof(float);
  memory.workspace = shared * sizeof(float);
  return memory;
}

QftStore::QftStore(const ModelSource& source, const QftSettings& settings)
    : config_(source.config()), specs_(source.specs()), settings_(settings) {
  if (settings_.grad_accum < 1) fail("--grad-accum must be at least 1");
  size_t largest = 0;
  for (size_t i = 0; i < specs_.size(); ++i) {
    index_[specs_[i].name] = i;
    largest = std::max(largest, static_cast<size_t>(shape_numel(specs_[i].shape)));
  }
  {
    Buffer<float> staging(MemCategory::Workspace, largest);  // one tensor at a time, never the model
    for (size_t i = 0; i < specs_.size(); ++i) {
      auto param = std::make_unique<Param>();
      param->spec = &specs_[i];
      std::tie(param->rows, param->cols) = stored_shape(specs_[i]);
      source.fill(i, staging.data());
      if (is_matrix(specs_[i].role)) {
        param->matrix = std::make_unique<HybridMatrix>(specs_[i].name, param->rows, param->cols);
        param->matrix->assign(staging.data(), settings_.outlier_fraction, rounding(i, kWeight, 0));
      } else {
        param->vector = Buffer<float>(MemCategory::Weights, param->cols);
        std::memcpy(param->vector.data(), staging.data(), param->cols * sizeof(float));
      }
      param->momentum = QuantizedRows(MemCategory::OptimizerState, param->rows, param->cols);
      params_.push_back(std::move(param));
    }
  }
  if (!fused()) stack_ = std::make_unique<GradientStack>();

  const Layout layout(config_, specs_);
  const size_t shared = std::max(layout.largest_linear, layout.head);
  weight_buffer_ = Buffer<float>(MemCategory::Workspace, shared);
  if (config_.tie_word_embeddings) {
    head_grad_ = Buffer<float>(MemCategory::Gradients, layout.head);
    own_linear_grad_ = Buffer<float>(MemCategory::Gradients, layout.largest_linear);
    linear_grad_ = own_linear_grad_.data();
  } else {
    head_grad_ = Buffer<float>(MemCategory::Gradients, shared);
    linear_grad_ = head_grad_.data();
  }
  vector_grads_ = Buffer<float>(MemCategory::Gradients, layout.vector_floats);

  const auto vector_of = [this](const std::string& name) -> float* {
    const auto found = index_.find(name);
    return found == index_.end() || params_[found->second]->matrix ? nullptr : params_[found->second]->vector.data();
  };
  const std::string layer0 = layer_param_name(0, "");
  std::vector<std::string> layer0_vectors;
  for (const ParamSpec& spec : specs_) {
    if (!is_matrix(spec.role) && spec.name.rfind(layer0, 0) == 0) layer0_vectors.push_back(spec.name.substr(layer0.size()));
  }
  layer_vector_grads_ = bind_layer_params(0, [&](const std::string& name) -> float* {
    for (size_t k = 0; k < layer0_vectors.size(); ++k) {
      if (name == layer0 + layer0_vectors[k]) return vector_grads_.data() + layout.layer_vector_offsets[k];
    }
    return nullptr;
  });
  for (int layer = 0; layer < config_.num_layers; ++layer) {
    layer_vectors_.push_back(bind_layer_params(layer, vector_of));
    layer_vector_params_.emplace_back();
    for (const std::string& suffix : layer0_vectors) layer_vector_params_.back().push_back(index_of(layer_param_name(layer, suffix)));
  }
  vector_offsets_ = layout.layer_vector_offsets;
  head_weights_ = {nullptr, vector_of("model.norm.weight"), weight_buffer_.data()};
  head_grads_ = {nullptr, vector_grads_.data(), head_grad_.data()};
}

QftStore::~QftStore() = default;

size_t QftStore::index_of(const std::string& name) const {
  const auto found = index_.find(name);
  if (found == index_.end()) fail("no parameter named '", name, "'");
  return found->second;
}

RoundingContext QftStore::rounding(size_t index, int purpose, uint32_t step) const {
  // The initial split and the per-epoch refresh change nothing on average,
  // so they round to nearest; updates use the configured rounding.
  const Rounding mode = purpose == kWeight && step == 0 ? Rounding::Nearest : settings_.rounding;
  return {mode, settings_.seed, static_cast<uint32_t>(index) * kPurposes + purpose, step};
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
}

void QftStore::refresh_thresholds() {
  for (size_t i = 0; i < params_.size(); ++i) {
    if (params_[i]->matrix) params_[i]->matrix->refresh(settings_.outlier_fraction, rounding(i, kWeight, 0));
  }
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

void QftStore::zero_once(Buffer<float>& buffer, bool& open) {
  if (open) return;
  std::memset(buffer.data(), 0, buffer.size() * sizeof(float));
  open = true;
}

const LayerParams& QftStore::layer_weights(int layer) { return layer_vectors_.at(layer); }

const float* QftStore::load_weight(size_t index) {
  if (weight_holder_ != index) {
    dequantize(index, weight_buffer_.data());
    weight_holder_ = index;
  }
  return weight_buffer_.data();
}

const float* QftStore::linear_weight(int layer, Linear which) {
  return load_weight(index_of(layer_param_name(layer, std::string(linear_module(which)) + ".weight")));
}

void QftStore::embed(float* out, const int* tokens, int N) {
  const HybridMatrix& table = *params_[index_of("model.embed_tokens.weight")]->matrix;
#pragma omp parallel for schedule(static)
  for (int n = 0; n < N; ++n) table.dequantize_row(out + static_cast<size_t>(n) * table.cols(), tokens[n]);
}

const HeadParams& QftStore::head_weights() {
  load_weight(index_of(config_.tie_word_embeddings ? "model.embed_tokens.weight" : "lm_head.weight"));
  return head_weights_;
}

const LayerParams& QftStore::layer_grads(int) {
  zero_once(vector_grads_, vector_grads_open_);
  return layer_vector_grads_;
}

float* QftStore::linear_grad(int layer, Linear which) {
  const size_t index = index_of(layer_param_name(layer, std::string(linear_module(which)) + ".weight"));
  std::memset(linear_grad_, 0, params_[index]->rows * static_cast<size_t>(params_[index]->cols) * sizeof(float));
  return linear_grad_;
}

void QftStore::linear_grad_done(int layer, Linear which) {
  consume(index_of(layer_param_name(layer, std::string(linear_module(which)) + ".weight")), linear_grad_);
}

void QftStore::layer_grads_done(int layer) {
  const std::vector<size_t>& members = layer_vector_params_.at(layer);
  for (size_t k = members.size(); k-- > 0;) consume(members[k], vector_grads_.data() + vector_offsets_[k]);
  vector_grads_open_ = false;
}

const HeadParams& QftStore::head_grads() {
  zero_once(vector_grads_, vector_grads_open_);
  zero_once(head_grad_, head_grad_open_);
  return head_grads_;
}

void QftStore::head_grads_done() {
  consume(index_of("model.norm.weight"), vector_grads_.data());
  vector_grads_open_ = false;
  if (config_.tie_word_embeddings) return;  // the embedding's gradient adds to the same matrix
  consume(index_of("lm_head.weight"), head_grad_.data());
  head_grad_open_ = false;
}

float* QftStore::embedding_grad() {
  zero_once(head_grad_, head_grad_open_);
  return head_grad_.data();
}

void QftStore::embedding_grad_done() {
  consume(index_of("model.embed_tokens.weight"), head_grad_.data());
  head_grad_open_ = false;
  ++micro_batch_;  // the embedding's gradient is the last of a backward pass
}

// Fused: update the parameter now. Stacked: quantize its gradient onto the
// stack (first micro-batch) or into its slot (later ones).
void QftStore::consume(size_t index, const float* grad) {
  if (fused()) {
    update(index, grad, nullptr);
    return;
  }
  const Param& param = *params_[index];
  const RoundingContext context =
      rounding(index, kGradient, static_cast<uint32_t>(step_ * settings_.grad_accum + micro_batch_));
  if (micro_batch_ == 0) {
    stack_->push(index, param.rows, param.cols, grad, context, param.spec->name);
  } else {
    stack_->accumulate(index, grad, context, param.spec->name);
  }
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
  if (weight_holder_ == index) weight_holder_ = SIZE_MAX;  // its FP32 copy is stale now
}

}  // namespace qft
