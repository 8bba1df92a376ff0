// qft memory: the memory plan of a training configuration, before anything is allocated.
#include <cstdio>

#include <nlohmann/json.hpp>

#include "commands.h"
#include "common.h"
#include "core/error.h"
#include "model/weights.h"
#include "train/memory_plan.h"

namespace qft::cli {

int run_memory(int argc, char** argv) {
  std::vector<OptionSpec> options = {{"model", "PATH", "HF model directory (its config.json)", ""},
             {"config", "FILE", "HF config.json", ""},
             optimizer_option(),
             {"grad-accum", "N", "micro-batches per step (qlion: 1 is fused, more use the INT8 stack)", "1"},
             {"seq-len", "T", "tokens per sequence", "2048"},
             {"batch", "B", "sequences per micro-batch", "1"},
             {"checkpointing", "", "recompute each layer's activations during backward", ""},
             {"stack-gradients", "", "qlion: the INT8 gradient stack even with --grad-accum 1 (the paper's pipeline)", ""},
             {"outlier-fraction", "F", "qlion and the INT8 LoRA base: fraction of each matrix kept as FP32 outliers", "0.01"},
             momentum_bits_option(),
             {"json", "", "print one JSON object with integer byte counts", ""},
             {"ranks", "N", "data-parallel over N ranks (mpirun -np N): the plan of the rank that needs the most", "1"},
             threads_option(), compute_option()};
  for (const OptionSpec& option : lora_options(false)) options.push_back(option);
  Args args("memory",
            "Prints the memory a training run needs, by Table 1 column of the QFT paper (weights,\n"
            "grads, weight copies, momentum, variances, activations, total) plus workspace and peak,\n"
            "in GiB and bytes per parameter. Nothing is allocated; --model reads only the configuration.",
            options);

  if (!args.parse(argc, argv)) return 0;
  apply_threads(args);
  apply_compute(args);  // BF16 compute stages rounded operands and halves QFT's weight buffer
  if (args.has("model") == args.has("config")) fail("give exactly one of --model DIR or --config FILE");
  const ModelConfig config = args.has("model") ? ModelSource::open(args.get("model")).config()
                                                : load_model_config(args.get("config"));
  const TrainingSettings settings = training_settings(args);  // as train and finetune read them
  PlanShape shape;
  shape.seq_len = args.get_int("seq-len");
  shape.batch = args.get_int("batch");
  shape.ranks = args.get_int("ranks");
  if (shape.ranks < 1) fail("--ranks must be at least 1");
  const MemoryPlan plan = plan_memory(config, settings, shape);
  if (args.flag("json")) {
    std::printf("%s\n", plan_to_json(plan).dump().c_str());
  } else {
    std::fputs(plan_table(plan, config, settings, shape).c_str(), stdout);
  }
  return 0;
}

}  // namespace qft::cli
