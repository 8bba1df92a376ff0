#pragma once
// A ParameterStore for compressed training state (QFT's INT8, mixed
// precision's BF16): matrices are materialised one at a time — in FP32, or
// in BF16 compute straight in BF16, the precision every product uses — and
// each gradient is handed to the subclass the moment it is complete. Norm
// weights and biases stay FP32 and resident. The working buffers:
//   - one weight buffer holds the linear weight in use or the LM head;
//   - untied, one gradient buffer serves the LM head, each linear and then
//     the embedding, since each is consumed before the next begins; tied,
//     the LM head's gradient waits for the embedding's, so the linear
//     gradients get their own buffer;
//   - a store that takes the LM head and the embedding in blocks of rows
//     (untied only) sizes both buffers by the largest linear: a block of the
//     vocabulary is at most that large, and each block is consumed before
//     the next;
//   - one small buffer holds a layer's (or the final norm's) vector gradients.
// Gradients are FP32. A frozen store (LoRA's base) has no gradient buffers:
// every gradient is nullptr, so backward computes input gradients only, and
// its weights stay FP32 (building it stages each tensor in the weight buffer).
#include <map>
#include <stdexcept>
#include <string>
#include <vector>

#include "core/memory.h"
#include "model/parameter_store.h"
#include "train/nonfinite.h"

namespace qft {

class TensorStore : public ParameterStore {
 public:
  // Bytes of the working buffers.
  struct WorkingMemory {
    size_t grads = 0;
    size_t weights = 0;
  };
  static WorkingMemory working_memory(const ModelConfig& config, bool frozen = false, bool head_in_blocks = false);
  // The vocabulary rows of a block of the LM head and the embedding: fewer
  // than the vocabulary only in blocks, untied, where the head is larger
  // than the largest linear.
  static int planned_head_block_rows(const ModelConfig& config, bool head_in_blocks);
  // Values of the largest linear weight.
  static size_t largest_linear(const ModelConfig& config);
  // Whether such a store materialises its weights in BF16 (under the compute set now).
  static bool bf16_weights(bool frozen);
  static bool is_matrix(ParamRole role) {
    return role == ParamRole::Embedding || role == ParamRole::LmHead || role == ParamRole::Linear;
  }

  const std::vector<ParamSpec>& specs() const { return specs_; }
  // The first non-finite gradient of this step; gradients after it are not
  // handed to the subclass.
  const std::optional<NonFinite>& nonfinite() const { return nonfinite_; }

  const LayerParams& layer_weights(int layer) override { return layer_vectors_.at(layer); }
  kernels::Operand linear_weight(int layer, Linear which) override;
  void embed(float* out, const int* tokens, int N) override;
  const HeadParams& head_weights() override { return head_weights_; }
  int head_block_rows() override { return head_rows_; }
  kernels::Operand lm_head_rows(int first, int rows) override;
  const LayerParams& layer_grads(int layer) override;
  float* linear_grad(int layer, Linear which) override;
  void linear_grad_done(int layer, Linear which) override;
  void layer_grads_done(int layer) override;
  const HeadParams& head_grads() override;
  void head_grads_done() override;
  float* lm_head_grad(int first, int rows) override;
  void lm_head_grad_done(int first, int rows) override;
  float* embedding_grad(int first, int rows) override;
  void embedding_grad_done(int first, int rows) override;

 protected:
  TensorStore(const ModelConfig& config, std::vector<ParamSpec> specs, bool frozen = false, bool head_in_blocks = false);
  // Builds the views once the subclass's vectors exist.
  void bind_views();
  // FP32 room for the largest matrix parameter (but the LM head and the
  // embedding taken in blocks, which a subclass builds a row at a time),
  // for other use while no weight or gradient is: where a subclass stages the source's tensors
  // while it builds its state, or a gradient after backward, so neither
  // needs a buffer of its own. The FP32 weight buffer, or with BF16 weights
  // the larger gradient buffer; a weight it held is loaded again at its next use.
  float* borrow_fp32_buffer();

  // Rows [first, first + rows) of a matrix parameter, out (rows, cols):
  // FP32, or rounded to BF16 (nearest even) as they are made — only stores
  // with BF16 weights (not frozen) are asked for those; FP32 values of some
  // of its rows, out (N, cols).
  virtual void load(size_t index, float* out, int first, int rows) const = 0;
  virtual void load_bf16(size_t /*index*/, uint16_t* /*out*/, int /*first*/, int /*rows*/) const {
    throw std::logic_error("a store with FP32 weights was asked for BF16 ones");
  }
  virtual void gather_rows(float* out, size_t index, const int* rows, int N) const = 0;
  // The resident FP32 values of a norm weight or bias.
  virtual float* vector(size_t index) = 0;
  // grad (rows, cols): rows [first, first + rows) of parameter `index`'s
  // gradient are complete and finite (a norm weight or bias is one row).
  // Only the LM head and the embedding come in blocks of rows.
  virtual void consume(size_t index, const float* grad, int first, int rows) = 0;
  // Starts checking the gradients of step `step`.
  void start_step(int step);
  // Whether consume() changes the training state (an update inside backward).
  virtual bool updates_in_backward() const { return false; }
  // Whether consume() sees every gradient even after a non-finite one (a
  // data-parallel rank: the other ranks wait for its part of every sum).
  virtual bool hands_over_every_gradient() const { return false; }

  // The FP32 copy of a parameter that was just changed is stale.
  void invalidate(size_t index) {
    if (weight_holder_ == index) weight_holder_ = SIZE_MAX;
  }
  size_t index_of(const std::string& name) const;
  // Backward passes completed (one per micro-batch) since the last reset.
  int passes_ = 0;
  // Gradients handed to consume() since start_step.
  int consumed_ = 0;

  ModelConfig config_;
  std::vector<ParamSpec> specs_;

 private:
  // Rows [first, first + rows) of parameter `index` in the weight buffer (loaded unless they are there).
  kernels::Operand load_weight(size_t index, int first, int rows);
  // Checks grad (rows, cols), then consumes it unless this or an earlier one is non-finite.
  void hand_over(size_t index, float* grad, int first, int rows);
  // Rows of parameter `index` as stored: a matrix's first dimension, a vector's 1.
  int rows_of(size_t index) const;
  size_t lm_head_index() const;
  size_t linear_index(int layer, Linear which) const;

  std::map<std::string, size_t> index_;
  bool frozen_;
  bool bf16_weights_;
  int head_rows_;                          // rows of a block of the LM head and the embedding
  Buffer<float> weight_buffer_;            // (max(largest linear, head_rows·C)), FP32 weights
  Buffer<uint16_t> bf16_weight_buffer_;    // the same, BF16 weights
  size_t weight_holder_ = SIZE_MAX;        // the parameter in the weight buffer
  int weight_holder_first_ = 0, weight_holder_rows_ = 0;  // its rows there
  Buffer<float> head_grad_;          // (head_rows, C), or shared with the linears when untied
  Buffer<float> own_linear_grad_;    // tied models only
  float* linear_grad_ = nullptr;     // (largest linear)
  Buffer<float> vector_grads_;
  bool vector_grads_open_ = false;

  std::vector<LayerParams> layer_vectors_;  // resident FP32 norms and biases, per layer
  LayerParams layer_vector_grads_;          // views into vector_grads_ (the same for every layer)
  std::vector<size_t> vector_offsets_;      // of a layer's vectors in vector_grads_
  std::vector<std::vector<size_t>> layer_vector_params_;
  HeadParams head_weights_, head_grads_;
  int step_ = 0;
  std::optional<NonFinite> nonfinite_;
};

}  // namespace qft
