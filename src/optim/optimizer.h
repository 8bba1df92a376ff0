#pragma once
// FP32 optimizers over a whole parameter set, with decoupled weight decay
// applied uniformly to every parameter.
#include <memory>
#include <string>

#include "core/memory.h"
#include "model/parameters.h"

namespace qft {

class StateWriter;
class StateReader;
struct ShardReaders;

// The hyper-parameters of every optimizer: Lion reads the betas and the
// weight decay, AdamW all four (train/optimizers.h has each one's defaults).
struct OptimizerSettings {
  float beta1 = 0.9f;
  float beta2 = 0.99f;
  float eps = 1e-8f;
  float weight_decay = 0.0f;
};

class Optimizer {
 public:
  virtual ~Optimizer() = default;
  // One update of `weights` from `grads` at learning rate `lr`.
  virtual void step(ParamSet& weights, const ParamSet& grads, float lr) = 0;
  // Checkpoints: every tensor of the optimizer's state and its step count
  // (names start with "optimizer."); load checks sizes and restores exactly.
  virtual void save_state(StateWriter& writer) const = 0;
  virtual void load_state(const StateReader& reader) = 0;
  // Data-parallel resume at another number of ranks: this optimizer holds
  // share `rank` of `ranks` of `specs` (dist/fp32_shards.h) and restores it
  // from the shares the writing ranks saved (`shards`).
  virtual void load_resharded(const ShardReaders& shards, const std::vector<ParamSpec>& specs, int ranks, int rank) = 0;
};

}  // namespace qft
