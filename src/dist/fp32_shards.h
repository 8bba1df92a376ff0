#pragma once
// The FP32 optimizers' state sharding: each parameter's values in 256-value
// blocks (8-bit AdamW's blocks, so they are the same at any number of ranks),
// a run of blocks per rank (dist/partition.h). A rank's share of a parameter
// is one spec of shape (values) under the parameter's name.
#include <vector>

#include "dist/partition.h"
#include "model/parameters.h"

namespace qft::dist {

inline constexpr int64_t kFp32ShardUnit = 256;

inline Shares fp32_shares(int64_t values, int ranks) { return shares(values, kFp32ShardUnit, ranks); }

inline std::vector<ParamSpec> fp32_shard_specs(const std::vector<ParamSpec>& specs, int ranks, int rank) {
  std::vector<ParamSpec> shard;
  for (ParamSpec spec : specs) {
    spec.shape = {fp32_shares(shape_numel(spec.shape), ranks).counts[rank]};
    shard.push_back(std::move(spec));
  }
  return shard;
}

}  // namespace qft::dist
