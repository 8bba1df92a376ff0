#pragma once
#include "optim/optimizer.h"

namespace qft {

// AdamW exactly as torch.optim.AdamW computes it.
class AdamW final : public Optimizer {
 public:
  AdamW(const OptimizerSettings& settings, size_t numel);
  void step(ParamSet& weights, const ParamSet& grads, float lr) override;

 private:
  OptimizerSettings settings_;
  Buffer<float> momentum_, variance_;
  int64_t steps_ = 0;
};

// Lion (Chen et al. 2023): w ← w − lr·(sign(β1·m + (1−β1)·g) + λ·w); m ← β2·m + (1−β2)·g.
class Lion final : public Optimizer {
 public:
  Lion(const OptimizerSettings& settings, size_t numel);
  void step(ParamSet& weights, const ParamSet& grads, float lr) override;

 private:
  OptimizerSettings settings_;
  Buffer<float> momentum_;
};

}  // namespace qft
