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

// A run of values that rank `rank` of `ranks` holds of parameter `param` and
// that rank `source` of another run of `source_ranks` held: `count` values at
// `source_offset` within the source's share of the parameter, `offset` within
// this rank's. Re-sharding an FP32 optimizer's state copies these runs.
struct ShareOverlap {
  size_t param;
  int source;
  int64_t source_offset, offset, count;
};

inline std::vector<ShareOverlap> share_overlaps(const std::vector<ParamSpec>& specs, int source_ranks, int ranks,
                                                int rank) {
  std::vector<ShareOverlap> overlaps;
  for (size_t p = 0; p < specs.size(); ++p) {
    const int64_t values = shape_numel(specs[p].shape);
    const Shares mine = fp32_shares(values, ranks), theirs = fp32_shares(values, source_ranks);
    const int64_t begin = mine.offsets[rank], end = begin + mine.counts[rank];
    for (int s = 0; s < source_ranks; ++s) {
      const int64_t from = std::max(begin, theirs.offsets[s]), to = std::min(end, theirs.offsets[s] + theirs.counts[s]);
      if (from < to) overlaps.push_back({p, s, from - theirs.offsets[s], from - begin, to - from});
    }
  }
  return overlaps;
}

}  // namespace qft::dist
