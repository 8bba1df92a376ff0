#include "optim/optimizer.h"

#include <cstring>

#include "core/error.h"
#include "io/state_file.h"
#include "optim/fp32_optimizers.h"

namespace qft {

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

}  // namespace qft
