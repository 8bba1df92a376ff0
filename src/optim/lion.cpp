#include "optim/fp32_optimizers.h"

namespace qft {

Lion::Lion(const OptimizerSettings& settings, size_t numel)
    : settings_(settings), momentum_(MemCategory::OptimizerState, numel) {}

void Lion::step(ParamSet& weights, const ParamSet& grads, float lr) {
  const float beta1 = settings_.beta1, beta2 = settings_.beta2;
  const float decay = 1.0f - lr * settings_.weight_decay;
  float* w = weights.all();
  const float* g = grads.all();
  float* m = momentum_.data();
  const size_t n = weights.total_numel();
#pragma omp parallel for simd schedule(static)
  for (size_t i = 0; i < n; ++i) {
    const float c = beta1 * m[i] + (1.0f - beta1) * g[i];
    const float sign = static_cast<float>((c > 0.0f) - (c < 0.0f));
    w[i] = w[i] * decay - lr * sign;
    m[i] = beta2 * m[i] + (1.0f - beta2) * g[i];
  }
}

}  // namespace qft
