#pragma once
// Where the Transformer reads weights and hands over FP32 weight gradients,
// one tensor at a time. FP32 training keeps whole FP32 sets; QFT keeps INT8
// state, materialises one matrix at a time and consumes each gradient the
// moment it is complete.
//
// Order within a backward pass: the LM head's gradient block by block
// (lm_head_grad(first, rows) … lm_head_grad_done(first, rows)), then
// head_grads() … head_grads_done() for the final norm — or, with the head
// in one block, lm_head_grad(0, V), the final norm's, then
// lm_head_grad_done(0, V); then per layer, last to first: linear_grad(l, ·)
// … linear_grad_done(l, ·) for each linear, layer_grads_done(l) for its
// norms and biases; finally the embedding's gradient block by block
// (embedding_grad(first, rows) … embedding_grad_done(first, rows)).
//
// The LM head and the embedding are read and their gradients returned in
// blocks of vocabulary rows, at most head_block_rows() at a time: the whole
// vocabulary at once unless the store keeps no whole copy of them (a
// gradient or a de-quantized head the size of the vocabulary).
//
// A frozen parameter's gradient is nullptr (LoRA's base): backward then
// skips that product. A linear may carry a LoRA adapter beside its weight.
#include <limits>

#include "kernels/kernels.h"
#include "model/config.h"
#include "model/parameters.h"

namespace qft {

// A linear's low-rank adapter (PEFT's LoRA): the layer computes
// W·x + scale · B·A·dropout(x); backward adds into grad_a and grad_b.
struct LoraAdapter {
  const float* a = nullptr;  // (R, IC)
  const float* b = nullptr;  // (OC, R)
  float* grad_a = nullptr;   // (R, IC)
  float* grad_b = nullptr;   // (OC, R)
  int rank = 0;
  float scale = 0.0f;               // alpha / rank
  kernels::DropoutMask dropout;     // on the adapter's input, in training only
};

class ParameterStore {
 public:
  virtual ~ParameterStore() = default;

  // A layer's norm weights and biases (its linear weights may be null).
  virtual const LayerParams& layer_weights(int layer) = 0;
  // One linear weight (out, in), valid until the next weight is asked for:
  // FP32, or BF16 where the store rounds the weights it materialises.
  virtual kernels::Operand linear_weight(int layer, Linear which) = 0;
  // out (N, C): the embedding rows of tokens (N).
  virtual void embed(float* out, const int* tokens, int N) = 0;
  // The final norm weight; `embed` and `lm_head` may be null (then the LM
  // head comes from lm_head_rows()).
  virtual const HeadParams& head_weights() = 0;
  // The most vocabulary rows of the LM head and the embedding handled at once.
  virtual int head_block_rows() { return std::numeric_limits<int>::max(); }
  // Rows [first, first + rows) of the LM head (rows, C), as linear_weight.
  virtual kernels::Operand lm_head_rows(int first, int rows) = 0;

  // Gradient buffers backward adds into (+=).
  virtual const LayerParams& layer_grads(int layer) = 0;  // norms and biases
  virtual float* linear_grad(int layer, Linear which) = 0;
  virtual void linear_grad_done(int layer, Linear which) = 0;
  virtual void layer_grads_done(int layer) = 0;
  virtual const HeadParams& head_grads() = 0;  // the final norm's
  virtual void head_grads_done() = 0;
  // Rows [first, first + rows) of the LM head's and the embedding's gradients (rows, C).
  virtual float* lm_head_grad(int first, int rows) = 0;
  virtual void lm_head_grad_done(int first, int rows) = 0;
  virtual float* embedding_grad(int first, int rows) = 0;
  virtual void embedding_grad_done(int first, int rows) = 0;

  // The adapter on a linear, or nullptr (the weight alone).
  virtual const LoraAdapter* adapter(int /*layer*/, Linear /*which*/) { return nullptr; }
};

// Whole FP32 weight and gradient sets; gradients accumulate until the caller
// zeroes them. Without a gradient set every weight is frozen.
class Fp32ParameterStore final : public ParameterStore {
 public:
  Fp32ParameterStore(const ModelConfig& config, ParamSet& weights, ParamSet* grads);

  const LayerParams& layer_weights(int layer) override { return weights_.layers[layer]; }
  kernels::Operand linear_weight(int layer, Linear which) override {
    return linear_of(weights_.layers[layer], which).weight;
  }
  void embed(float* out, const int* tokens, int N) override;
  const HeadParams& head_weights() override { return weights_.head; }
  kernels::Operand lm_head_rows(int first, int) override { return row_of(weights_.head.lm_head, first); }

  const LayerParams& layer_grads(int layer) override { return frozen_ ? frozen_layer_ : grads_.layers.at(layer); }
  float* linear_grad(int layer, Linear which) override { return frozen_ ? nullptr : linear_of(grads_.layers.at(layer), which).weight; }
  void linear_grad_done(int, Linear) override {}
  void layer_grads_done(int) override {}
  const HeadParams& head_grads() override { return grads_.head; }
  void head_grads_done() override {}
  // nullptr when frozen
  float* lm_head_grad(int first, int) override { return row_of(grads_.head.lm_head, first); }
  void lm_head_grad_done(int, int) override {}
  float* embedding_grad(int first, int) override { return row_of(grads_.head.embed, first); }
  void embedding_grad_done(int, int) override {}

 private:
  float* row_of(float* matrix, int row) const {
    return matrix ? matrix + static_cast<size_t>(row) * hidden_size_ : nullptr;
  }

  int hidden_size_;
  ModelParams weights_;
  ModelParams grads_;  // empty views when frozen
  bool frozen_;
  LayerParams frozen_layer_;
};

}  // namespace qft
