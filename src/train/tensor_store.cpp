#include "train/tensor_store.h"

#include <algorithm>

#include "core/error.h"

namespace qft {
namespace {

size_t padded(size_t floats) { return (floats + 15) / 16 * 16; }

// Layer 0's norms and biases (as suffixes after "model.layers.0."), in spec order.
std::vector<std::string> layer_vector_suffixes(const std::vector<ParamSpec>& specs) {
  const std::string prefix = layer_param_name(0, "");
  std::vector<std::string> suffixes;
  for (const ParamSpec& spec : specs) {
    if (!TensorStore::is_matrix(spec.role) && spec.name.rfind(prefix, 0) == 0) suffixes.push_back(spec.name.substr(prefix.size()));
  }
  return suffixes;
}

struct Layout {
  size_t largest_linear = 0, head = 0, vector_floats = 0;
  int head_rows = 0;
  std::vector<size_t> vector_offsets;

  Layout(const ModelConfig& config, bool head_in_blocks) {
    const std::vector<ParamSpec> specs = parameter_specs(config);
    largest_linear = TensorStore::largest_linear(config);
    head_rows = TensorStore::planned_head_block_rows(config, head_in_blocks);
    head = static_cast<size_t>(head_rows) * config.hidden_size;
    for (const std::string& suffix : layer_vector_suffixes(specs)) {
      for (const ParamSpec& spec : specs) {
        if (spec.name == layer_param_name(0, suffix)) {
          vector_offsets.push_back(vector_floats);
          vector_floats += padded(static_cast<size_t>(shape_numel(spec.shape)));
        }
      }
    }
    vector_floats = std::max(vector_floats, padded(config.hidden_size));  // or the final norm
  }
};

}  // namespace

bool TensorStore::bf16_weights(bool frozen) { return !frozen && kernels::compute() == kernels::Compute::BF16; }

size_t TensorStore::largest_linear(const ModelConfig& config) {
  size_t largest = 0;
  for (const ParamSpec& spec : parameter_specs(config)) {
    if (spec.role == ParamRole::Linear) largest = std::max(largest, static_cast<size_t>(shape_numel(spec.shape)));
  }
  return largest;
}

int TensorStore::planned_head_block_rows(const ModelConfig& config, bool head_in_blocks) {
  const int V = config.vocab_size;
  if (!head_in_blocks || config.tie_word_embeddings) return V;
  return static_cast<int>(std::clamp<size_t>(largest_linear(config) / config.hidden_size, 1, V));
}

TensorStore::WorkingMemory TensorStore::working_memory(const ModelConfig& config, bool frozen, bool head_in_blocks) {
  const Layout layout(config, head_in_blocks);
  const size_t shared = std::max(layout.largest_linear, layout.head);
  const size_t weights = shared * (bf16_weights(frozen) ? sizeof(uint16_t) : sizeof(float));
  if (frozen) return {0, weights};
  const size_t matrix_grads = config.tie_word_embeddings ? layout.largest_linear + layout.head : shared;
  return {(matrix_grads + layout.vector_floats) * sizeof(float), weights};
}

TensorStore::TensorStore(const ModelConfig& config, std::vector<ParamSpec> specs, bool frozen, bool head_in_blocks)
    : config_(config), specs_(std::move(specs)), frozen_(frozen), bf16_weights_(bf16_weights(frozen)) {
  for (size_t i = 0; i < specs_.size(); ++i) index_[specs_[i].name] = i;
  const Layout layout(config_, head_in_blocks);
  head_rows_ = layout.head_rows;
  const size_t shared = std::max(layout.largest_linear, layout.head);
  if (bf16_weights_) {
    bf16_weight_buffer_ = Buffer<uint16_t>(MemCategory::Workspace, shared);
  } else {
    weight_buffer_ = Buffer<float>(MemCategory::Workspace, shared);
  }
  if (frozen_) return;
  if (config_.tie_word_embeddings) {
    head_grad_ = Buffer<float>(MemCategory::Gradients, layout.head);
    own_linear_grad_ = Buffer<float>(MemCategory::Gradients, layout.largest_linear);
    linear_grad_ = own_linear_grad_.data();
  } else {
    head_grad_ = Buffer<float>(MemCategory::Gradients, shared);
    linear_grad_ = head_grad_.data();
  }
  vector_grads_ = Buffer<float>(MemCategory::Gradients, layout.vector_floats);
  vector_offsets_ = layout.vector_offsets;
}

void TensorStore::bind_views() {
  const auto resident = [this](const std::string& name) -> float* {
    const auto found = index_.find(name);
    return found == index_.end() || is_matrix(specs_[found->second].role) ? nullptr : vector(found->second);
  };
  const std::vector<std::string> suffixes = layer_vector_suffixes(specs_);
  if (!frozen_) {
    layer_vector_grads_ = bind_layer_params(0, [&](const std::string& name) -> float* {
      for (size_t k = 0; k < suffixes.size(); ++k) {
        if (name == layer_param_name(0, suffixes[k])) return vector_grads_.data() + vector_offsets_[k];
      }
      return nullptr;
    });
  }
  for (int layer = 0; layer < config_.num_layers; ++layer) {
    layer_vectors_.push_back(bind_layer_params(layer, resident));
    layer_vector_params_.emplace_back();
    for (const std::string& suffix : suffixes) layer_vector_params_.back().push_back(index_of(layer_param_name(layer, suffix)));
  }
  head_weights_ = {nullptr, resident("model.norm.weight"), nullptr};
  if (!frozen_) head_grads_ = {nullptr, vector_grads_.data(), nullptr};
}

size_t TensorStore::index_of(const std::string& name) const {
  const auto found = index_.find(name);
  if (found == index_.end()) fail("no parameter named '", name, "'");
  return found->second;
}

size_t TensorStore::linear_index(int layer, Linear which) const {
  return index_of(layer_param_name(layer, std::string(linear_module(which)) + ".weight"));
}

float* TensorStore::borrow_fp32_buffer() {
  weight_holder_ = SIZE_MAX;
  if (!bf16_weights_) return weight_buffer_.data();
  return head_grad_.size() >= own_linear_grad_.size() ? head_grad_.data() : own_linear_grad_.data();
}

size_t TensorStore::lm_head_index() const {
  return index_of(config_.tie_word_embeddings ? "model.embed_tokens.weight" : "lm_head.weight");
}

int TensorStore::rows_of(size_t index) const {
  return is_matrix(specs_[index].role) ? static_cast<int>(specs_[index].shape[0]) : 1;
}

kernels::Operand TensorStore::load_weight(size_t index, int first, int rows) {
  if (weight_holder_ != index || weight_holder_first_ != first || weight_holder_rows_ != rows) {
    if (bf16_weights_) {
      load_bf16(index, bf16_weight_buffer_.data(), first, rows);
    } else {
      load(index, weight_buffer_.data(), first, rows);
    }
    weight_holder_ = index;
    weight_holder_first_ = first;
    weight_holder_rows_ = rows;
  }
  if (bf16_weights_) return bf16_weight_buffer_.data();
  return weight_buffer_.data();
}

kernels::Operand TensorStore::linear_weight(int layer, Linear which) {
  const size_t index = linear_index(layer, which);
  return load_weight(index, 0, rows_of(index));
}

void TensorStore::embed(float* out, const int* tokens, int N) {
  gather_rows(out, index_of("model.embed_tokens.weight"), tokens, N);
}

kernels::Operand TensorStore::lm_head_rows(int first, int rows) {
  if (rows > head_rows_) throw std::logic_error("an LM head block larger than the store's");
  return load_weight(lm_head_index(), first, rows);
}

// Zeroes a gradient buffer at its first use in a pass.
static void open_buffer(Buffer<float>& buffer, bool& open) {
  if (open) return;
  kernels::zero(buffer.data(), buffer.size() * sizeof(float));
  open = true;
}

const LayerParams& TensorStore::layer_grads(int) {
  if (frozen_) return layer_vector_grads_;
  open_buffer(vector_grads_, vector_grads_open_);
  return layer_vector_grads_;
}

float* TensorStore::linear_grad(int layer, Linear which) {
  if (frozen_) return nullptr;
  kernels::zero(linear_grad_, shape_numel(specs_[linear_index(layer, which)].shape) * sizeof(float));
  return linear_grad_;
}

void TensorStore::start_step(int step) {
  step_ = step;
  passes_ = 0;
  consumed_ = 0;
  nonfinite_.reset();
}

void TensorStore::hand_over(size_t index, float* grad, int first, int rows) {
  if (!nonfinite_) {
    const size_t cols = static_cast<size_t>(shape_numel(specs_[index].shape) / rows_of(index));
    nonfinite_ = check_gradient(step_, specs_[index].name, grad, rows * cols, first * cols);
    if (nonfinite_) nonfinite_->state_changed = consumed_ > 0 && updates_in_backward();
  }
  if (nonfinite_ && !hands_over_every_gradient()) return;
  consume(index, grad, first, rows);
  ++consumed_;
}

void TensorStore::linear_grad_done(int layer, Linear which) {
  if (frozen_) return;
  const size_t index = linear_index(layer, which);
  hand_over(index, linear_grad_, 0, rows_of(index));
}

void TensorStore::layer_grads_done(int layer) {
  if (frozen_) return;
  const std::vector<size_t>& members = layer_vector_params_.at(layer);
  for (size_t k = members.size(); k-- > 0;) hand_over(members[k], vector_grads_.data() + vector_offsets_[k], 0, 1);
  vector_grads_open_ = false;
}

const HeadParams& TensorStore::head_grads() {
  if (frozen_) return head_grads_;
  open_buffer(vector_grads_, vector_grads_open_);
  return head_grads_;
}

void TensorStore::head_grads_done() {
  if (frozen_) return;
  hand_over(index_of("model.norm.weight"), vector_grads_.data(), 0, 1);
  vector_grads_open_ = false;
}

// A block of the LM head's or (untied) the embedding's gradient, zeroed; tied,
// the embedding adds to the head's whole gradient.
float* TensorStore::lm_head_grad(int first, int rows) {
  if (frozen_) return nullptr;
  if (rows > head_rows_) throw std::logic_error("an LM head block larger than the store's");
  kernels::zero(head_grad_.data(), static_cast<size_t>(rows) * config_.hidden_size * sizeof(float));
  return head_grad_.data();
}

void TensorStore::lm_head_grad_done(int first, int rows) {
  if (!frozen_ && !config_.tie_word_embeddings) hand_over(lm_head_index(), head_grad_.data(), first, rows);
}

float* TensorStore::embedding_grad(int first, int rows) {
  if (frozen_) return nullptr;
  if (config_.tie_word_embeddings) return head_grad_.data();  // holding the LM head's
  return lm_head_grad(first, rows);
}

void TensorStore::embedding_grad_done(int first, int rows) {
  if (!frozen_) hand_over(index_of("model.embed_tokens.weight"), head_grad_.data(), first, rows);
  if (first + rows == config_.vocab_size) ++passes_;  // the embedding's gradient is the last of a backward pass
}

}  // namespace qft
