#include <cmath>

#include "optim/fp32_optimizers.h"

namespace qft {

AdamW::AdamW(const OptimizerSettings& settings, size_t numel)
    : settings_(settings),
      momentum_(MemCategory::OptimizerState, numel),
      variance_(MemCategory::OptimizerState, numel) {}

void AdamW::step(ParamSet& weights, const ParamSet& grads, float lr) {
  ++steps_;
  const float beta1 = settings_.beta1, beta2 = settings_.beta2, eps = settings_.eps;
  // torch.optim.AdamW: bias corrections folded into the step and the denominator.
  const double correction1 = 1.0 - std::pow(static_cast<double>(beta1), steps_);
  const float sqrt_correction2 = static_cast<float>(std::sqrt(1.0 - std::pow(static_cast<double>(beta2), steps_)));
  const float step_size = static_cast<float>(lr / correction1);
  const float decay = 1.0f - lr * settings_.weight_decay;
  float* w = weights.all();
  const float* g = grads.all();
  float* m = momentum_.data();
  float* v = variance_.data();
  const size_t n = weights.total_numel();
#pragma omp parallel for simd schedule(static)
  for (size_t i = 0; i < n; ++i) {
    m[i] = beta1 * m[i] + (1.0f - beta1) * g[i];
    v[i] = beta2 * v[i] + (1.0f - beta2) * g[i] * g[i];
    const float denominator = std::sqrt(v[i]) / sqrt_correction2 + eps;
    w[i] = w[i] * decay - step_size * m[i] / denominator;
  }
}

}  // namespace qft
