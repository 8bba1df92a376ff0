#pragma once
// Where the Transformer reads FP32 weights and hands over weight gradients.
// FP32 training keeps whole FP32 sets; QFT keeps INT8 state and de-quantizes
// one layer at a time, consuming each layer's gradient as soon as it is done.
#include "model/parameters.h"

namespace qft {

class ParameterStore {
 public:
  virtual ~ParameterStore() = default;

  // FP32 weights of one layer, valid until the next layer_weights() call.
  virtual const LayerParams& layer_weights(int layer) = 0;
  // FP32 embedding, final norm and LM head, valid until head_grads_done().
  virtual const HeadParams& head_weights() = 0;

  // Gradient buffers backward adds into (+=); a layer's are complete when
  // layer_grads_done(layer) is called, the head's at head_grads_done()
  // (after the embedding's backward, the last of a pass).
  virtual const LayerParams& layer_grads(int layer) = 0;
  virtual void layer_grads_done(int layer) = 0;
  virtual const HeadParams& head_grads() = 0;
  virtual void head_grads_done() = 0;
};

// Whole FP32 weight and gradient sets; gradients accumulate until the caller
// zeroes them.
class Fp32ParameterStore final : public ParameterStore {
 public:
  Fp32ParameterStore(const ModelConfig& config, ParamSet& weights, ParamSet* grads)
      : weights_(bind_model_params(config, weights)), grads_(grads ? bind_model_params(config, *grads) : ModelParams{}) {}

  const LayerParams& layer_weights(int layer) override { return weights_.layers[layer]; }
  const HeadParams& head_weights() override { return weights_.head; }
  const LayerParams& layer_grads(int layer) override { return grads_.layers.at(layer); }
  void layer_grads_done(int) override {}
  const HeadParams& head_grads() override { return grads_.head; }
  void head_grads_done() override {}

 private:
  ModelParams weights_;
  ModelParams grads_;
};

}  // namespace qft
