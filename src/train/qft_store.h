#pragma once
// QFT's training state (paper Section 3): every matrix (linear layers, token
// embedding, LM head) as a HybridMatrix — INT8 rows plus FP32 outliers —,
// norm weights and biases in FP32, Lion momentum INT8 per row, and weight
// gradients either consumed inside backward (fused, no gradient kept) or
// pushed on the INT8 gradient stack for accumulation over micro-batches.
// FP32 exists only for one layer (and the head) at a time, in workspace.
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
  int grad_accum = 1;  // 1: update each layer inside backward (fused)
  // Use the gradient stack even with one micro-batch (the paper's pipeline).
  bool stack_gradients = false;
};

// Bytes a QftStore allocates, computed before allocating anything.
struct QftMemory {
  size_t weights = 0;    // hybrid matrices, FP32 norms and biases
  size_t stack = 0;      // INT8 gradient stack (stacked mode only)
  size_t fp32_grads = 0; // one layer's and the head's FP32 gradients
  size_t momentum = 0;   // INT8 momentum
  size_t workspace = 0;  // one layer's and the head's de-quantized weights
  size_t transient = 0;  // extra at construction or a threshold refresh
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
  const HeadParams& head_weights() override;
  const LayerParams& layer_grads(int layer) override;
  void layer_grads_done(int layer) override;
  const HeadParams& head_grads() override;
  void head_grads_done() override;

 private:
  struct Param;
  struct Group;  // one layer's or the head's parameters, with FP32 views

  void build_groups();
  void build_stack();
  void load(Group& group, int unit);
  void open_grads(Group& group);
  void grads_done(Group& group, int unit);
  void invalidate_loaded_weights();
  void update(size_t index, const float* fp32_grad, const QuantizedRows* int8_grad);
  RoundingContext rounding(size_t index, int purpose, uint32_t step) const;

  ModelConfig config_;
  std::vector<ParamSpec> specs_;
  QftSettings settings_;
  std::vector<std::unique_ptr<Param>> params_;
  std::unique_ptr<Group> layer_group_;  // every layer, one at a time
  std::unique_ptr<Group> head_group_;   // embedding, final norm, LM head
  std::unique_ptr<GradientStack> stack_;

  int step_ = 0;
  int micro_batch_ = 0;
  float lr_ = 0.0f;
};

}  // namespace qft
