#include "optim/optimizer.h"

#include <cstring>

#include "core/error.h"
#include "io/state_file.h"
#include "optim/fp32_optimizers.h"

namespace qft {

OptimizerSettings default_optimizer_settings(const std::string& name) {
  OptimizerSettings settings;
  settings.name = name;
  if (name == "adamw" || name == "adamw8bit") settings.beta2 = 0.999f;
  return settings;
}

void load_resharded_values(const ShardReaders& shards, const std::string& name, const std::vector<ParamSpec>& specs,
                           int ranks, int rank, float* state) {
  const std::vector<size_t> mine = ParamSet::offsets(dist::fp32_shard_specs(specs, ranks, rank));
  for (const dist::ShareOverlap& run : dist::share_overlaps(specs, shards.ranks, ranks, rank)) {
    const std::vector<size_t> theirs = ParamSet::offsets(dist::fp32_shard_specs(specs, shards.ranks, run.source));
    const uint8_t* source = shards.files.at(run.source)->get(name, DType::F32, {static_cast<int64_t>(theirs.back())});
    std::memcpy(state + mine[run.param] + run.offset,
                source + (theirs[run.param] + run.source_offset) * sizeof(float), run.count * sizeof(float));
  }
}

std::unique_ptr<Optimizer> make_optimizer(const OptimizerSettings& settings, const std::vector<ParamSpec>& specs,
                                          size_t numel) {
  if (settings.name == "adamw") return std::make_unique<AdamW>(settings, numel);
  if (settings.name == "adamw8bit") return std::make_unique<AdamW8bit>(settings, specs);
  if (settings.name == "lion") return std::make_unique<Lion>(settings, numel);
  fail("unknown optimizer '", settings.name, "' (expected adamw, adamw8bit or lion)");
}

}  // namespace qft
