#pragma once
// QFT's training state (paper Section 3): every matrix (linear layers, token
// embedding, LM head) as a HybridMatrix — INT8 rows plus FP32 outliers —,
// norm weights and biases in FP32, Lion momentum INT8 per row, and weight
// gradients either consumed inside backward (fused: no gradient is kept) or
// pushed on the INT8 gradient stack for accumulation over micro-batches.
// FP32 exists for one linear weight, the LM head and their gradients only.
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "core/memory.h"
#include "model/parameter_store.h"
#include "model/weights.h"
#include "optim/gradient_stack.h"
#include "optim/optimizer.h"
#include "quant/hybrid.h"

namespace qft {

struct QftSettings {
  float outlier_fraction = 0.01f;  // paper, Appendix C
  Rounding rounding = Rounding::Stochastic;
  uint64_t seed = 0;
  OptimizerSettings lion = default_optimizer_settings("lion");
  int grad_accum = 1;  // 1: update each tensor inside backward (fused)
  // Use the gradient stack even with one micro-batch (the paper's pipeline).
  bool stack_gradients = false;
};

// Bytes a QftStore allocates, computed before allocating anything.
struct QftMemory {
  size_t weights = 0;     // hybrid matrices, FP32 norms and biases
  size_t stack = 0;       // INT8 gradient stack (stacked mode only)
  size_t fp32_grads = 0;  // FP32 gradients: one linear's or the LM head's, one layer's vectors
  size_t momentum = 0;    // INT8 momentum
  size_t workspace = 0;   // one de-quantized linear weight or the LM head
  size_t staging = 0;     // one FP32 tensor, while the store is built
};

class QftStore final : public ParameterStore {
 public:
  static QftMemory memory(const ModelConfig& config, const QftSettings& settings);

  QftStore(const ModelSource& source, const QftSettings& settings);
  ~QftStore() override;

  // Brackets one optimizer step (step counts from 1) of grad_accum
  // micro-batches; end_step() pops the stack and updates (stacked mode).
  void begin_step(int step, float lr);
  void end_step();
  // Re-chooses every matrix's outlier thresholds (once per epoch).
  void refresh_thresholds();

  // Parameter `index` de-quantized to FP32, out (its numel).
  void dequantize(size_t index, float* out) const;
  const std::vector<ParamSpec>& specs() const { return specs_; }
  int64_t outlier_count() const;
  bool fused() const { return settings_.grad_accum == 1 && !settings_.stack_gradients; }

  const LayerParams& layer_weights(int layer) override;
  const float* linear_weight(int layer, Linear which) override;
  void embed(float* out, const int* tokens, int N) override;
  const HeadParams& head_weights() override;
  const LayerParams& layer_grads(int layer) override;
  float* linear_grad(int layer, Linear which) override;
  void linear_grad_done(int layer, Linear which) override;
  void layer_grads_done(int layer) override;
  const HeadParams& head_grads() override;
  void head_grads_done() override;
  float* embedding_grad() override;
  void embedding_grad_done() override;

 private:
  struct Param;
  struct Layout;

  size_t index_of(const std::string& name) const;
  void consume(size_t index, const float* grad);
  void update(size_t index, const float* fp32_grad, const QuantizedRows* int8_grad);
  RoundingContext rounding(size_t index, int purpose, uint32_t step) const;
  void zero_once(Buffer<float>& buffer, bool& open);

  ModelConfig config_;
  std::vector<ParamSpec> specs_;
  std::map<std::string, size_t> index_;
  QftSettings settings_;
  std::vector<std::unique_ptr<Param>> params_;
  std::unique_ptr<GradientStack> stack_;

  const float* load_weight(size_t index);

  // FP32 working copies. One buffer holds the de-quantized linear weight in
  // use or the LM head, never both. Untied, the LM head's gradient is
  // consumed before the layers' and the embedding's begin, so one buffer
  // serves them all; tied, the LM head's gradient waits for the embedding's
  // and the linear gradients get their own buffer.
  Buffer<float> weight_buffer_;  // (max(largest linear, V·C))
  size_t weight_holder_ = SIZE_MAX;  // the parameter in weight_buffer_
  Buffer<float> head_grad_;      // (V, C) the LM head's, then the embedding's gradient
  bool head_grad_open_ = false;
  Buffer<float> own_linear_grad_;  // tied models only
  float* linear_grad_ = nullptr;   // (largest linear)
  Buffer<float> vector_grads_;     // one layer's norms and biases, or the final norm
  bool vector_grads_open_ = false;

  std::vector<LayerParams> layer_vectors_;  // FP32 norms and biases, per layer
  LayerParams layer_vector_grads_;          // views into vector_grads_
  std::vector<size_t> vector_offsets_;      // of layer 0's vectors in vector_grads_
  std::vector<std::vector<size_t>> layer_vector_params_;
  HeadParams head_weights_, head_grads_;

  int step_ = 0;
  int micro_batch_ = 0;
  float lr_ = 0.0f;
};

}  // namespace qft
