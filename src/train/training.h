#pragma once
// One interface over the ways qft trains a model: FP32 AdamW or Lion on
// whole FP32 sets, or QFT (INT8 state, QLion). A step takes the micro-batches
// of one global batch; its loss is the mean over all their predicted tokens.
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "data/batch.h"
#include "io/state_file.h"
#include "model/weights.h"
#include "train/nonfinite.h"
#include "train/settings.h"

namespace qft {

// What load_checkpoint restored besides the training state.
struct ResumePoint {
  int step = 0;                  // the last step taken; continue with step + 1
  nlohmann::json trainer_state;  // as given to save_checkpoint
  std::string directory;         // the one read: DIR, or DIR.old after an interrupted write
};

// The settings a checkpoint records and must agree on, as JSON.
nlohmann::json checkpoint_settings_json(const TrainingSettings& settings);

class Training {
 public:
  virtual ~Training() = default;
  // One optimizer step (step counts from 1); returns the mean loss. A loss
  // or gradient that is NaN or Inf cancels the update: nonfinite() then says
  // where it was found and whether the state changed anyway (fused QLion,
  // whose layers above the bad gradient were updated inside backward).
  virtual double step(int step, float lr, const std::vector<Batch>& micro_batches) = 0;
  // The last step's first non-finite value; nullopt when it was finite.
  const std::optional<NonFinite>& nonfinite() const { return nonfinite_; }
  // Called at each epoch boundary after the first.
  virtual void new_epoch() {}
  // Saves the model as an HF directory (FP32 safetensors).
  void save(const std::string& directory);
  // The mean loss over the batch's predicted tokens, without training.
  virtual double evaluate(const Batch& batch) = 0;
  // Parameter `index` (of parameter_specs) in FP32: what an export writes
  // (LoRA: with the adapter merged).
  virtual void parameter(size_t index, float* out) = 0;
  // LoRA only: the adapters as a PEFT directory (model/peft_adapter.h), and its bytes.
  virtual void export_adapter(const std::string& directory, const std::string& base_model) const;
  virtual uint64_t adapter_bytes() const;

  // Checkpoints (format in train/checkpoint.h), taken between steps:
  //   training->save_checkpoint(dir, {{"next_example", 123}});
  //   ... later, maybe in another process: make_training(source, same settings) ...
  //   const ResumePoint resume = training->load_checkpoint(dir);
  //   for (int step = resume.step + 1; ...) training->step(step, lr, ...);
  // A checkpoint holds every bit of state later steps read — weights,
  // optimizer state and step counts (QFT: INT8 codes, row ranges, CSR
  // outliers and thresholds, INT8 momentum) — so the continued run's losses
  // and weights equal an uninterrupted run's bit for bit, given the same
  // micro-batches, learning rates and new_epoch() calls. The caller keeps its
  // own position (data order, schedule) in `trainer_state`, a small JSON
  // value stored in the manifest and handed back by load_checkpoint. DIR is
  // replaced only by a complete checkpoint. Loading refuses a checkpoint of
  // another model configuration or other settings (optimizer, betas, eps,
  // weight decay, grad_accum; QFT's outlier fraction, rounding and seed —
  // only `checkpointing` may differ) and names the file and tensor when one
  // is truncated or corrupted; a failed load leaves the object unusable.
  void save_checkpoint(const std::string& directory, const nlohmann::json& trainer_state = nlohmann::json::object()) const;
  ResumePoint load_checkpoint(const std::string& directory);
  // The bytes of a checkpoint's state file (its manifest is small).
  uint64_t checkpoint_bytes() const;
  // The last step number given to step() (or restored by load_checkpoint).
  int last_step() const { return last_step_; }
  // Data-parallel debugging: fails unless every rank holds the same
  // replicated state (weights; QFT: every INT8 code, row range and outlier),
  // compared by XXH64 over all ranks.
  void check_replicas() const;

 protected:
  Training(const ModelConfig& config, const TrainingSettings& settings) : model_config_(config), settings_(settings) {}
  // Every tensor of the training state; load_state checks and restores them.
  // What every rank holds alike goes to `writer` (rank 0 writes it), this
  // rank's share of a sharded optimizer state to `shard` (alone: the same
  // writer); `shards` are the shares of the ranks that wrote the checkpoint.
  virtual void save_state(StateWriter& writer, StateWriter& shard) const = 0;
  virtual void load_state(const StateReader& reader, const ShardReaders& shards) = 0;
  // What a checkpoint must agree on (LoRA adds its frozen base's fingerprint).
  virtual nlohmann::json settings_json() const { return checkpoint_settings_json(settings_); }

  ModelConfig model_config_;
  TrainingSettings settings_;
  int last_step_ = 0;
  std::optional<NonFinite> nonfinite_;
};

// The training `settings` describe (its optimizer's, train/optimizers.h), after
// checking they can run here: --grad-accum, LoRA's optimizer, data-parallel ranks.
std::unique_ptr<Training> make_training(const ModelSource& source, const TrainingSettings& settings);

// The ways qft trains, which the optimizer table picks from: a whole FP32
// set and an FP32 optimizer (lion, adamw, adamw8bit); QFT's INT8 store with
// QLion; the BF16 store of mixed-precision AdamW; LoRA's adapters.
std::unique_ptr<Training> make_fp32_training(const ModelSource& source, const TrainingSettings& settings);
std::unique_ptr<Training> make_qft_training(const ModelSource& source, const TrainingSettings& settings);
std::unique_ptr<Training> make_mixed_training(const ModelSource& source, const TrainingSettings& settings);
std::unique_ptr<Training> make_lora_training(const ModelSource& source, const TrainingSettings& settings);

}  // namespace qft
