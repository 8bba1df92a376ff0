#pragma once
// qft finetune's pipeline: instruction data → masked examples → shuffled
// micro-batches → the trainer (train/trainer.h) with a warm-up + cosine
// schedule, periodic evaluation, a metrics log and a loss-curve plot → the
// model exported.
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "data/instruction_data.h"
#include "train/trainer.h"

namespace qft {

struct FinetuneSettings {
  std::string model, data, out;
  std::optional<DataFormat> data_format;
  bool strict = false;
  std::string chat_template;  // a name, or "" for the model's own
  bool train_on_prompt = false;
  int seq_len = 2048;         // the paper's segment length
  bool pack = false;          // fill micro-batches by tokens (batch × seq_len) instead of by count
  int batch = 1;
  int epochs = 3;
  int max_steps = 0;          // 0: the epochs decide
  float lr = 2e-5f;
  float warmup_ratio = 0.03f;
  float min_lr_ratio = 0.0f;
  float eval_split = 0.0f;    // held out by run.training.seed, which also orders the data
  std::string eval_data;
  int eval_every = 0;         // steps; 0: before training and at the end only
  std::string export_dtype = "bf16";
  bool export_gguf = false;
  // LoRA: OUT/model holds the merged model (merged), OUT/adapter the PEFT adapter (adapter), or both.
  std::string export_lora = "merged";
  std::string settings_file;  // the resolved settings as a recipe: OUT/settings.yaml ("": none)
  // The trainer's settings; its steps come from the data (or max_steps), its
  // checkpoints go to OUT/checkpoint unless run.checkpoint says where.
  TrainerSettings run;
};

// What the pipeline reports as it goes; the CLI draws it.
struct FinetuneProgress {
  int step = 0, total_steps = 0, epoch = 0;
  double loss = 0, lr = 0, tokens_per_second = 0, seconds_left = 0;
  size_t memory_bytes = 0;
  std::optional<double> eval_loss;
};

struct FinetuneResult {
  double eval_loss_before = 0, eval_loss_after = 0;
  int steps = 0;                // the last step taken
  std::string model_directory;  // "" when stopped, or with only the adapter exported
  std::string adapter_directory;  // LoRA with --export-lora adapter or both
  bool stopped = false;         // stop_requested() said so; the checkpoint holds the run
  std::string checkpoint;       // the last checkpoint written, if any
  int skipped_steps = 0;        // steps dropped for a non-finite loss or gradient (policy skip)
};

struct FinetuneCallbacks {
  std::function<void(const std::string&)> log;             // plan, notices, summaries: a line each
  std::function<void(const FinetuneProgress&)> progress;   // after every step and evaluation
  std::function<bool()> stop_requested = [] { return false; };  // asked after every step
};

// OUT is created only once the model, the data and the memory plan have
// passed their checks, so a run refused for bad input leaves nothing behind.
// OUT and the checkpoint directory are locked (io/run_lock.h) for the run: a
// second run on either is refused with the first one's PID.
// Checkpoints are taken between steps, every save_every steps and when
// stop_requested() turns true (the run then returns, stopped, without
// exporting). The checkpoint's trainer state holds the data position (epoch
// and micro-batch), the schedule and the metrics so far, so resuming gives
// the losses and the model of an uninterrupted run bit for bit. Resuming
// refuses other training data or data settings (the tokenized examples'
// checksum, --batch, --pack, --seq-len, --seed, --grad-accum, optimizer
// settings); a changed schedule (--max-steps, --epochs, --lr, ...) is
// allowed, with a notice, for extending a run.
// A step whose loss or gradient is NaN or Inf changes nothing and goes in the
// metrics log as {"step", "nonfinite": tensor, "layer", "action", "skipped_steps"};
// policy stop (or a step that could not be undone, or max_skips skips in a
// row) then throws, naming the step, the tensor and the last checkpoint.
FinetuneResult run_finetune(const FinetuneSettings& settings, const FinetuneCallbacks& callbacks);

}  // namespace qft
