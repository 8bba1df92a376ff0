#pragma once
// The one training loop of qft. A run is its settings, a source of
// micro-batches (TrainingData: qft train's token lines, qft finetune's
// instruction examples) and hooks for what a command does besides (report
// each step, evaluate, keep metrics). The trainer does the rest, once for
// every command: the memory plan and its budget, the checkpoint lock, the
// training state (train/training.h), resuming, the room on disk, steps of
// grad_accum micro-batches strided over the data-parallel ranks, the policy
// for NaN and Inf, checkpoints and stopping on request.
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "data/batch.h"
#include "io/atomic_file.h"
#include "io/run_lock.h"
#include "model/weights.h"
#include "train/memory_plan.h"
#include "train/nonfinite.h"
#include "train/settings.h"
#include "train/training.h"

namespace qft {

struct TrainerSettings {
  TrainingSettings training;
  int steps = 0;               // the last step; a resumed run continues to it
  size_t max_memory = 0;       // a plan whose peak exceeds it is refused (0: physical RAM)
  std::string checkpoint;      // where checkpoints go ("": none)
  int save_every = 0;          // steps between checkpoints (0: only when stopped)
  bool save_last_step = false;  // a checkpoint after the last step too
  std::string resume;          // a checkpoint to continue from ("": a new run)
  NonFinitePolicy on_nonfinite = NonFinitePolicy::Stop;
  int max_skips = 10;          // consecutive skipped steps before the run stops (policy skip)
  bool check_replicas = false;  // data-parallel debugging: Training::check_replicas after every step
  // The tail of the refusal of a plan over max_memory: what would make it fit.
  std::string memory_advice = "try --checkpointing, a smaller --batch or --optimizer qlion";
};

// Where a run's micro-batches come from, in a fixed order: a step takes the
// next ranks × grad_accum of them, and rank r trains on those at r,
// r + ranks, r + 2·ranks, … of the step.
class TrainingData {
 public:
  virtual ~TrainingData() = default;
  // The longest micro-batch it can make (seq_len, batch), for the memory plan.
  virtual PlanShape plan_shape() const = 0;
  // Moves on to the next step's `count` micro-batches; returns how many new
  // epochs (after the first) began on the way, so the training refreshes
  // what it refreshes per epoch that often.
  virtual int next_step(int count) = 0;
  // Micro-batch i (0 ≤ i < count) of the current step.
  virtual Batch micro_batch(int i) const = 0;
  // The epoch (from 1) the current step belongs to.
  virtual int epoch() const = 0;
  // Checkpoints: where the data stands after the current step (the
  // position and what identifies the data), and going back there, after
  // checking the checkpoint was taken on this data (errors start with `where`).
  virtual nlohmann::json position() const = 0;
  virtual void seek(const nlohmann::json& position, const std::string& where) = 0;
  // The command's name ("qft train"), and the key its trainer state is kept
  // under in a checkpoint's manifest ("": at the top).
  virtual const char* command() const = 0;
  virtual const char* state_key() const { return ""; }
};

// One step as the loop saw it.
struct StepReport {
  int step = 0, total_steps = 0, epoch = 0;
  double loss = 0;
  float lr = 0;
  int64_t tokens = 0;          // all ranks' micro-batches' rows
  double seconds = 0;          // of the step itself
  double seconds_left = 0;     // at the mean pace of this run's steps so far
  size_t memory_bytes = 0;     // accounted now
};

// What a command adds to the loop. Every member but learning_rate may stay empty.
struct TrainerHooks {
  std::function<void(const std::string& line)> log;
  std::function<void(const MemoryPlan& plan, const std::string& table, bool fits)> planned;
  std::function<float(int step)> learning_rate;
  std::function<void(const StepReport& step)> step_applied;
  // A step that met NaN or Inf: its metrics record; `stopping` when the run ends with it.
  std::function<void(const StepReport& step, const NonFinite& finding, const nlohmann::json& record, bool stopping)>
      step_skipped;
  std::function<void(int step)> after_step;  // evaluation, say
  std::function<bool()> stop_requested;     // asked after every step, on every rank
  // What the command keeps in a checkpoint's trainer state, and gets back on resuming.
  std::function<void(nlohmann::json& state)> save_state;
  std::function<void(const nlohmann::json& state, const std::string& where)> resumed;
  // What the run will write besides checkpoints, checked for room before the first step.
  std::function<std::vector<SpaceNeed>(const Training& training)> space_needs;
};

struct TrainerResult {
  int last_step = 0;       // the last step taken (or restored)
  bool stopped = false;    // stop_requested() said so; the checkpoint holds the run
  std::string checkpoint;  // the last checkpoint written, if any
  int skipped_steps = 0;   // steps dropped for NaN or Inf (policy skip)
};

class Trainer {
 public:
  // Plans the run and refuses a plan over budget before allocating
  // anything, then locks the checkpoint directory, builds the training
  // state, resumes, and checks the disk has room for a checkpoint and what
  // space_needs names.
  Trainer(const ModelSource& source, TrainerSettings settings, TrainingData& data, TrainerHooks hooks);
  ~Trainer();

  // Steps until settings.steps, a stop request (after a checkpoint), or a
  // NaN/Inf the policy stops at (throws, naming the step, the tensor and the
  // last checkpoint).
  TrainerResult run();

  Training& training() { return *training_; }
  // The step run() starts at: 1, or the one after a resumed checkpoint's.
  int first_step() const { return first_step_; }
  const MemoryPlan& plan() const { return plan_; }

 private:
  void check_plan(const ModelConfig& config);
  void resume();
  // This rank's micro-batches of the next step; tokens: all ranks' rows.
  std::vector<Batch> next_micro_batches(int64_t* tokens);
  // Reports the step just taken as applied or skipped, as the NaN/Inf
  // policy judges it, and stops the run when it says so.
  void judge(const StepReport& report);
  void save_checkpoint(int step);
  [[noreturn]] void stop_for_nonfinite() const;
  void log(const std::string& line) const;

  TrainerSettings settings_;
  TrainingData& data_;
  TrainerHooks hooks_;
  MemoryPlan plan_;
  std::optional<RunLock> checkpoint_lock_;
  std::unique_ptr<Training> training_;
  NonFiniteGuard guard_;
  int first_step_ = 1;
  int checkpoint_step_ = -1;  // of the last checkpoint written or read
  TrainerResult result_;
};

}  // namespace qft
