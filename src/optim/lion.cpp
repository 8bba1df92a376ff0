#include "io/state_file.h"
#include "optim/fp32_optimizers.h"
#include "optim/updates.h"

namespace qft {

Lion::Lion(const OptimizerSettings& settings, size_t numel)
    : settings_(settings), momentum_(MemCategory::OptimizerState, numel) {}

// Parameter by parameter (a set may be a view), the state laid out as the set's storage.
void Lion::step(ParamSet& weights, const ParamSet& grads, float lr) {
  for (size_t p = 0; p < weights.specs().size(); ++p) {
    lion_step(weights.data(p), momentum_.data() + weights.offset(p), grads.data(p), weights.numel(p), lr, settings_);
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
