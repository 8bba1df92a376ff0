#pragma once
// Where the Transformer reads weights and hands over FP32 weight gradients,
// one tensor at a time. FP32 training keeps whole FP32 sets; QFT keeps INT8
// state, materialises one matrix at a time and consumes each gradient the
// moment it is complete.
//
// Order within a backward pass: head_grads() … head_grads_done(); then per
// layer, last to first: linear_grad(l, ·) … linear_grad_done(l, ·) for each
// linear, layer_grads_done(l) for its norms and biases; finally
// embedding_grad() … embedding_grad_done().
//
// A frozen parameter's gradient is nullptr (LoRA's base): backward then
// skips that product. A linear may carry a LoRA adapter beside its weight.
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
  // head comes from lm_head_weight()).
  virtual const HeadParams& head_weights() = 0;
  // The LM head (V, C), as linear_weight.
  virtual kernels::Operand lm_head_weight() { return head_weights().lm_head; }

  // Gradient buffers backward adds into (+=).
  virtual const LayerParams& layer_grads(int layer) = 0;  // norms and biases
  virtual float* linear_grad(int layer, Linear which) = 0;
  virtual void linear_grad_done(int layer, Linear which) = 0;
  virtual void layer_grads_done(int layer) = 0;
  virtual const HeadParams& head_grads() = 0;  // final norm and LM head
  virtual void head_grads_done() = 0;
  virtual float* embedding_grad() = 0;  // (V, C)
  virtual void embedding_grad_done() = 0;

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

  const LayerParams& layer_grads(int layer) override { return frozen_ ? frozen_layer_ : grads_.layers.at(layer); }
  float* linear_grad(int layer, Linear which) override { return frozen_ ? nullptr : linear_of(grads_.layers.at(layer), which).weight; }
  void linear_grad_done(int, Linear) override {}
  void layer_grads_done(int) override {}
  const HeadParams& head_grads() override { return grads_.head; }
  void head_grads_done() override {}
  float* embedding_grad() override { return grads_.head.embed; }  // nullptr when frozen
  void embedding_grad_done() override {}

 private:
  int hidden_size_;
  ModelParams weights_;
  ModelParams grads_;  // empty views when frozen
  bool frozen_;
  LayerParams frozen_layer_;
};

}  // namespace qft
