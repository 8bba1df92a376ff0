#include "core/error.h"
#include "io/state_file.h"
#include "optim/fp32_optimizers.h"
#include "optim/updates.h"

namespace qft {

AdamW::AdamW(const OptimizerSettings& settings, size_t numel)
    : settings_(settings),
      momentum_(MemCategory::OptimizerState, numel),
      variance_(MemCategory::OptimizerState, numel) {}

// Parameter by parameter (a set may be a view), the state laid out as the set's storage.
void AdamW::step(ParamSet& weights, const ParamSet& grads, float lr) {
  const AdamWStep adam = AdamWStep::at(settings_, ++steps_, lr);
  for (size_t p = 0; p < weights.specs().size(); ++p) {
    adamw_step(weights.data(p), momentum_.data() + weights.offset(p), variance_.data() + weights.offset(p),
               grads.data(p), weights.numel(p), adam);
  }
}

void AdamW::save_state(StateWriter& writer) const {
  const Shape shape = {static_cast<int64_t>(momentum_.size())};
  writer.add("optimizer.adamw.m", DType::F32, shape, momentum_.data());
  writer.add("optimizer.adamw.v", DType::F32, shape, variance_.data());
  writer.add_int64("optimizer.adamw.steps", steps_);
}

void AdamW::load_state(const StateReader& reader) {
  const Shape shape = {static_cast<int64_t>(momentum_.size())};
  reader.read("optimizer.adamw.m", DType::F32, shape, momentum_.data());
  reader.read("optimizer.adamw.v", DType::F32, shape, variance_.data());
  steps_ = reader.read_int64("optimizer.adamw.steps");
  if (steps_ < 0) fail(reader.path(), ": negative AdamW step count");
}

void AdamW::load_resharded(const ShardReaders& shards, const std::vector<ParamSpec>& specs, int ranks, int rank) {
  load_resharded_values(shards, "optimizer.adamw.m", specs, ranks, rank, momentum_.data());
  load_resharded_values(shards, "optimizer.adamw.v", specs, ranks, rank, variance_.data());
  steps_ = shards.files.at(0)->read_int64("optimizer.adamw.steps");
  if (steps_ < 0) fail(shards.files.at(0)->path(), ": negative AdamW step count");
}

}  // namespace qft
