#pragma once
// QFT's training state (paper Section 3): every matrix (linear layers, token
// embedding, LM head) as a HybridMatrix — INT8 rows plus FP32 outliers —,
// norm weights and biases in FP32, Lion momentum INT8 per row, and weight
// gradients either consumed inside backward (fused: no gradient is kept) or
// pushed on the INT8 gradient stack for accumulation over micro-batches.
#include <memory>
#include <vector>

#include "dist/partition.h"
#include "dist/world.h"
#include "io/state_file.h"
#include "model/weights.h"
#include "optim/gradient_stack.h"
#include "quant/hybrid.h"
#include "train/settings.h"
#include "train/tensor_store.h"

namespace qft {

// This process's place in a data-parallel run: rank `rank` of `ranks`
// updates its share of every parameter's rows (dist/partition.h).
struct Placement {
  int ranks = 1, rank = 0;
  static Placement of_world() { return {dist::world().size(), dist::world().rank()}; }
};

// Bytes a QftStore allocates, computed before allocating anything.
struct QftMemory {
  size_t weights = 0;     // hybrid matrices, FP32 norms and biases
  size_t stack = 0;       // INT8 gradient stack (stacked mode only)
  size_t fp32_grads = 0;  // FP32 working gradients (TensorStore)
  size_t momentum = 0;    // INT8 momentum (this rank's rows)
  size_t exchange = 0;    // data-parallel: a local gradient in flight and this rank's rows of the global one
  size_t workspace = 0;   // one de-quantized matrix (TensorStore); the store is built through it too
};

class QftStore final : public TensorStore {
 public:
  static QftMemory memory(const ModelConfig& config, const TrainingSettings& settings, Placement placement = {});
  // Fused (the update inside backward): one micro-batch per step and no stack.
  static bool fused(const TrainingSettings& settings);
  // Fused, the LM head and the embedding come in blocks of vocabulary rows
  // no larger than the largest linear, each updated as it arrives.
  static int planned_head_block_rows(const ModelConfig& config, const TrainingSettings& settings);

  // QLion with settings.hyper, settings.qft and settings.seed; fused (an
  // update inside backward) with one micro-batch per step and no stack.
  // Data-parallel when the process is one of several ranks (dist::world()).
  QftStore(const ModelSource& source, const TrainingSettings& settings);
  ~QftStore() override;

  // Brackets one optimizer step (step counts from 1) of grad_accum
  // micro-batches; end_step() pops the stack and updates (stacked mode), or
  // with apply false (a non-finite step) drops the stack.
  void begin_step(int step, float lr);
  // Data-parallel: completes the gradient sum still in flight after backward,
  // so updates() counts every update of the step.
  void finish_backward() { finish_exchange(); }
  void end_step(bool apply);
  // Re-chooses every matrix's outlier thresholds (once per epoch).
  void refresh_thresholds();

  // Checkpoints (train/checkpoint.h): each matrix's INT8 codes, row ranges,
  // CSR outliers and thresholds, the FP32 norms and biases (the same on
  // every rank: `writer`); this rank's rows of the INT8 momentum (`shard`).
  // Only between steps: every step pops the gradient stack whole, so it holds
  // nothing then. The step's random numbers are keyed by (seed, step,
  // parameter, row), so no generator state exists to save. Loading takes the
  // momentum rows of this rank from whichever ranks of the writing run held
  // them, so a checkpoint resumes at any number of ranks.
  void save_state(StateWriter& writer, StateWriter& shard) const;
  void load_state(const StateReader& reader, const ShardReaders& shards);

  // Parameter `index` de-quantized to FP32, out (its numel).
  void dequantize(size_t index, float* out) const;
  int64_t outlier_count() const;
  // Updates (of a parameter, or of a block of its rows) this rank made in the current step.
  int updates() const { return updates_; }
  bool fused() const { return fused(settings_); }
  bool updates_in_backward() const override { return fused(); }

 private:
  struct Param;

  void load(size_t index, float* out, int first, int rows) const override;
  void load_bf16(size_t index, uint16_t* out, int first, int rows) const override;
  void gather_rows(float* out, size_t index, const int* rows, int N) const override;
  float* vector(size_t index) override;
  void consume(size_t index, const float* grad, int first, int rows) override;

  // Lion on `rows` of parameter `index`, all of them this rank's: from
  // their FP32 global gradient (rows.size(), cols), or from the whole INT8 one.
  void update(size_t index, const float* fp32_grad, const QuantizedRows* int8_grad, dist::Range rows);
  // Data-parallel: sums a local gradient (rows, cols) of rows [first, first +
  // rows) over the ranks, then updates this rank's of them and, after a
  // parameter's last rows, starts sending its rows to the others. The sum of
  // one gradient runs while backward computes the next.
  void exchange(size_t index, const float* grad, int first, int rows);
  void finish_exchange();
  bool hands_over_every_gradient() const override { return world_.distributed() && fused(); }
  RoundingContext rounding(size_t index, int purpose, uint32_t step) const;

  TrainingSettings settings_;
  std::vector<std::unique_ptr<Param>> params_;
  std::unique_ptr<GradientStack> stack_;
  const dist::World& world_;
  Buffer<float> in_flight_;    // (largest linear) a local gradient being summed
  Buffer<float> owned_grad_;   // (largest owned rows × cols) this rank's rows of the global gradient
  size_t in_flight_index_ = SIZE_MAX;
  dist::Range in_flight_rows_;  // of the parameter in flight
  dist::Request in_flight_sum_;
  std::vector<dist::Request> gathers_;  // this step's updated rows on their way to every rank
  std::vector<size_t> gathered_;
  bool skip_updates_ = false;  // a non-finite gradient was seen in this step
  int updates_ = 0;            // updates this rank made in this step
  int step_ = 0;
  float lr_ = 0.0f;
};

}  // namespace qft
