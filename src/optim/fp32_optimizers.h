#pragma once
#include "dist/fp32_shards.h"
#include "optim/optimizer.h"
#include "quant/dynamic_map.h"

namespace qft {

// Per-value FP32 state laid out as a ParamSet of `specs` (AdamW's moments,
// Lion's momentum): the values this rank holds of tensor `name`, copied from
// the shares of the ranks that wrote it.
void load_resharded_values(const ShardReaders& shards, const std::string& name, const std::vector<ParamSpec>& specs,
                           int ranks, int rank, float* state);

// AdamW exactly as torch.optim.AdamW computes it.
class AdamW final : public Optimizer {
 public:
  AdamW(const OptimizerSettings& settings, size_t numel);
  void step(ParamSet& weights, const ParamSet& grads, float lr) override;
  void save_state(StateWriter& writer) const override;
  void load_state(const StateReader& reader) override;
  void load_resharded(const ShardReaders& shards, const std::vector<ParamSpec>& specs, int ranks, int rank) override;

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
  void save_state(StateWriter& writer) const override;
  void load_state(const StateReader& reader) override;
  void load_resharded(const ShardReaders& shards, const std::vector<ParamSpec>& specs, int ranks, int rank) override;

 private:
  OptimizerSettings settings_;
  Buffer<float> momentum_;
};

// AdamW with both moments stored 8-bit block-wise as bitsandbytes does: per
// 256-value block of each tensor an FP32 absmax, and per value a code of the
// dynamic code book (signed for the momentum, unsigned for the variance).
// Weights and gradients stay FP32. Each step de-quantizes a block, runs
// AdamW's FP32 update, and re-quantizes with the block's new absmax.
class AdamW8bit final : public Optimizer {
 public:
  AdamW8bit(const OptimizerSettings& settings, const std::vector<ParamSpec>& specs);
  void step(ParamSet& weights, const ParamSet& grads, float lr) override;
  void save_state(StateWriter& writer) const override;
  void load_state(const StateReader& reader) override;
  void load_resharded(const ShardReaders& shards, const std::vector<ParamSpec>& specs, int ranks, int rank) override;

 private:
  struct Tensor {
    size_t value_offset, block_offset, count;
  };
  OptimizerSettings settings_;
  CodeBook signed_book_, unsigned_book_;
  CodeBookEncoder signed_encoder_, unsigned_encoder_;
  std::vector<Tensor> tensors_;
  Buffer<uint8_t> momentum_, variance_;
  Buffer<float> momentum_absmax_, variance_absmax_;
  int64_t steps_ = 0;
};

}  // namespace qft
