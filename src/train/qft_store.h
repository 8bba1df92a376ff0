#pragma once
// QFT's training state (paper Section 3): every matrix (linear layers, token
// embedding, LM head) as a HybridMatrix — INT8 rows plus FP32 outliers —,
// norm weights and biases in FP32, Lion momentum INT8 per row, and weight
// gradients either consumed inside backward (fused: no gradient is kept) or
// pushed on the INT8 gradient stack for accumulation over micro-batches.
#include <memory>
#include <vector>

#include "io/state_file.h"
#include "model/weights.h"
#include "optim/gradient_stack.h"
#include "optim/optimizer.h"
#include "quant/hybrid.h"
#include "train/tensor_store.h"

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
  size_t fp32_grads = 0;  // FP32 working gradients (TensorStore)
  size_t momentum = 0;    // INT8 momentum
  size_t workspace = 0;   // one de-quantized matrix (TensorStore); the store is built through it too
};

class QftStore final : public TensorStore {
 public:
  static QftMemory memory(const ModelConfig& config, const QftSettings& settings);

  QftStore(const ModelSource& source, const QftSettings& settings);
  ~QftStore() override;

  // Brackets one optimizer step (step counts from 1) of grad_accum
  // micro-batches; end_step() pops the stack and updates (stacked mode), or
  // with apply false (a non-finite step) drops the stack.
  void begin_step(int step, float lr);
  void end_step(bool apply);
  // Re-chooses every matrix's outlier thresholds (once per epoch).
  void refresh_thresholds();

  // Checkpoints (train/checkpoint.h): each matrix's INT8 codes, row ranges,
  // CSR outliers and thresholds, the FP32 norms and biases, the INT8
  // momentum. Only between steps: every step pops the gradient stack whole,
  // so it holds nothing then. The step's random numbers are keyed by (seed,
  // step, parameter, row), so no generator state exists to save.
  void save_state(StateWriter& writer) const;
  void load_state(const StateReader& reader);

  // Parameter `index` de-quantized to FP32, out (its numel).
  void dequantize(size_t index, float* out) const { load(index, out); }
  int64_t outlier_count() const;
  bool fused() const { return settings_.grad_accum == 1 && !settings_.stack_gradients; }
  bool updates_in_backward() const override { return fused(); }

 private:
  struct Param;

  void load(size_t index, float* out) const override;
  void load_row(size_t index, int row, float* out) const override;
  float* vector(size_t index) override;
  void consume(size_t index, const float* grad) override;

  void update(size_t index, const float* fp32_grad, const QuantizedRows* int8_grad);
  RoundingContext rounding(size_t index, int purpose, uint32_t step) const;

  QftSettings settings_;
  std::vector<std::unique_ptr<Param>> params_;
  std::unique_ptr<GradientStack> stack_;
  int step_ = 0;
  float lr_ = 0.0f;
};

}  // namespace qft
