#include <algorithm>

#include "io/state_file.h"
#include "optim/fp32_optimizers.h"

namespace qft {

Lion::Lion(const OptimizerSettings& settings, size_t numel)
    : settings_(settings), momentum_(MemCategory::OptimizerState, numel) {}

void lion_update(float* w, float* m, const float* g, size_t n, float lr, const OptimizerSettings& settings) {
  const float beta1 = settings.beta1, beta2 = settings.beta2;
  const float decay = 1.0f - lr * settings.weight_decay;
#pragma omp simd
  for (size_t i = 0; i < n; ++i) {
    const float c = beta1 * m[i] + (1.0f - beta1) * g[i];
    const float sign = static_cast<float>((c > 0.0f) - (c < 0.0f));
    w[i] = w[i] * decay - lr * sign;
    m[i] = beta2 * m[i] + (1.0f - beta2) * g[i];
  }
}

// Parameter by parameter (a set may be a view), the state laid out as the set's storage.
void Lion::step(ParamSet& weights, const ParamSet& grads, float lr) {
  constexpr size_t kChunk = 1 << 16;
  for (size_t p = 0; p < weights.specs().size(); ++p) {
    const size_t n = weights.numel(p);
    float* momentum = momentum_.data() + weights.offset(p);
    const int64_t chunks = static_cast<int64_t>((n + kChunk - 1) / kChunk);
#pragma omp parallel for schedule(static)
    for (int64_t chunk = 0; chunk < chunks; ++chunk) {
      const size_t begin = static_cast<size_t>(chunk) * kChunk;
      lion_update(weights.data(p) + begin, momentum + begin, grads.data(p) + begin, std::min(kChunk, n - begin), lr,
                  settings_);
    }
  }
}

// Lion keeps no step count: its update does not depend on the step.
void Lion::save_state(StateWriter& writer) const {
  writer.add("optimizer.lion.m", DType::F32, {static_cast<int64_t>(momentum_.size())}, momentum_.data());
}

void Lion::load_state(const StateReader& reader) {
  reader.read("optimizer.lion.m", DType::F32, {static_cast<int64_t>(momentum_.size())}, momentum_.data());
}

void Lion::load_resharded(const ShardReaders& shards, const std::vector<ParamSpec>& specs, int ranks, int rank) {
  load_resharded_values(shards, "optimizer.lion.m", specs, ranks, rank, momentum_.data());
}

}  // namespace qft
