// qft train: training on token sequences, B lines per micro-batch, through
// the library's trainer (train/trainer.h); this file parses and prints.
#include <cstdio>
#include <filesystem>
#include <optional>

#include <nlohmann/json.hpp>

#include "commands.h"
#include "common.h"
#include "core/error.h"
#include "dist/world.h"
#include "model/hf_export.h"
#include "train/token_lines.h"

namespace qft::cli {
namespace {

std::vector<OptionSpec> train_options() {
  std::vector<OptionSpec> options = model_options();
  for (OptionSpec option : std::vector<OptionSpec>{
           {"tokens", "FILE", "one sequence per line, whitespace-separated token ids", ""},
           {"batch", "B", "lines per micro-batch (taken in file order, wrapping around)", "1"},
           {"grad-accum", "N", "micro-batches per optimizer step (qlion: 1 updates inside backward)", "1"},
           {"steps", "N", "optimizer steps", ""},
           {"lr", "X", "learning rate (constant)", ""},
           optimizer_option(),
           {"weight-decay", "W", "decoupled weight decay, applied to every parameter", "0"},
           {"beta1", "B1", "first beta (default: 0.9)", ""},
           {"beta2", "B2", "second beta (default: 0.999 for adamw and adamw8bit, 0.99 for lion and qlion)", ""},
           {"eps", "E", "AdamW epsilon", "1e-8"},
           {"rounding", "MODE", "qlion re-quantization: stochastic | nearest", "stochastic"},
           {"outlier-fraction", "F", "qlion: fraction of each matrix kept as FP32 outliers", "0.01"},
           momentum_bits_option(),
           {"checkpointing", "", "recompute each layer's activations during backward", ""},
           {"stack-gradients", "", "qlion: put gradients on the INT8 stack and update after backward (the paper's pipeline) even with --grad-accum 1", ""},
           nonfinite_options()[0], nonfinite_options()[1],
           {"json", "", "print one JSON object per step and a final memory report", ""},
           {"check-replicas", "", "data-parallel debugging: after every step, fail unless every rank holds the same weights (XXH64)", ""},
           {"max-memory", "SIZE", "refuse a plan whose peak exceeds this (e.g. 16G; default: physical RAM)", ""},
           {"out", "DIR", "save the trained model there as an HF directory (must not exist)", ""},
           {"checkpoint", "DIR", "write checkpoints there: every --save-every steps, at the end, and on SIGINT/SIGTERM (then exit 130/143)", ""},
           {"save-every", "N", "steps between checkpoints (needs --checkpoint)", ""},
           {"resume", "DIR", "continue from this checkpoint: same model, --tokens, --batch and settings; --steps is the total (default --checkpoint: DIR)", ""},
           compute_option(), threads_option()}) {
    options.push_back(option);
  }
  for (const OptionSpec& option : lora_options()) options.push_back(option);
  return options;
}

// The trainer's settings: --steps to the end, a checkpoint after the last
// step too, --resume's directory the checkpoint's unless --checkpoint says.
TrainerSettings run_settings(const Args& args) {
  TrainerSettings run = trainer_settings(args);
  run.steps = args.get_int("steps");
  if (run.steps < 1) fail("--batch and --steps must be at least 1");
  run.save_last_step = true;
  if (run.checkpoint.empty()) run.checkpoint = run.resume;
  if (run.save_every && run.checkpoint.empty()) fail("--save-every needs --checkpoint DIR");
  return run;
}

nlohmann::json memory_report() {
  const MemoryStats stats = memory_stats();
  nlohmann::json peaks;
  for (int i = 0; i < kMemCategoryCount; ++i) peaks[category_name(static_cast<MemCategory>(i))] = stats.peak[i];
  return {{"device", device_name(Device::Host)}, {"peak_bytes", peaks}, {"peak_total_bytes", stats.total_peak},
          {"peak_rss_bytes", process_peak_rss_bytes()}};
}

// One line, or one JSON object, per step.
TrainerHooks printing_hooks(bool json, float lr, const std::string& compute, const std::optional<std::string>& out,
                            const ModelConfig& config) {
  TrainerHooks hooks;
  hooks.log = [](const std::string& line) { std::fprintf(stderr, "qft train: %s\n", line.c_str()); };
  hooks.planned = [=](const MemoryPlan&, const std::string& table, bool fits) {
    if (!fits) std::fputs(table.c_str(), stderr);
    else if (!json) std::printf("%s\n%s", compute.c_str(), table.c_str());
  };
  hooks.learning_rate = [lr](int) { return lr; };
  hooks.step_applied = [json](const StepReport& s) {
    if (json) {
      std::printf("%s\n", nlohmann::json{{"step", s.step}, {"loss", s.loss}, {"lr", s.lr}, {"tokens", s.tokens},
                                         {"seconds", s.seconds}, {"tokens_per_second", s.tokens / s.seconds}}
                              .dump()
                              .c_str());
    } else {
      std::printf("step %d/%d  loss %.6f  lr %.3g  %.1f tokens/s\n", s.step, s.total_steps, s.loss, s.lr, s.tokens / s.seconds);
    }
    std::fflush(stdout);
  };
  hooks.step_skipped = [json](const StepReport& s, const NonFinite& finding, const nlohmann::json& record, bool) {
    if (json) std::printf("%s\n", record.dump().c_str());
    else std::printf("step %d/%d  skipped: %s is NaN or Inf\n", s.step, s.total_steps, finding.describe().c_str());
    std::fflush(stdout);
  };
  hooks.stop_requested = [] { return StopSignals::received() != 0; };
  hooks.space_needs = [out, config](const Training&) {
    HfExport model;
    model.dtype = DType::F32;  // as Training::save writes it
    if (!out) return std::vector<SpaceNeed>{};
    return std::vector<SpaceNeed>{{std::filesystem::path(*out).parent_path().string(), export_hf_bytes(config, model),
                                   "the model (--out)"}};
  };
  return hooks;
}

// A signal stopped the run after a checkpoint (if there is a --checkpoint).
int report_interrupted(int signal, const TrainerResult& result, const std::string& checkpoint, bool json) {
  const char* name = StopSignals::name(signal);
  if (json) {
    std::printf("%s\n", nlohmann::json{{"interrupted", true}, {"signal", name}, {"step", result.last_step},
                                       {"checkpoint", checkpoint.empty() ? nlohmann::json() : nlohmann::json(checkpoint)}}
                            .dump()
                            .c_str());
    std::fflush(stdout);
  }
  if (!checkpoint.empty()) {
    std::fprintf(stderr, "qft train: %s after step %d; checkpoint in %s (continue with --resume %s)\n", name,
                 result.last_step, checkpoint.c_str(), checkpoint.c_str());
  } else {
    std::fprintf(stderr, "qft train: %s after step %d; no --checkpoint given, nothing saved\n", name, result.last_step);
  }
  return 128 + signal;
}

// The memory the run used next to its plan; data-parallel, every rank's.
void report_final(const Trainer& trainer, int steps, const std::string& compute, bool json) {
  const nlohmann::json report = memory_report();
  if (!json) return static_cast<void>(std::printf("memory peak: %s\n", report.dump().c_str()));
  nlohmann::json final = {{"final", true}, {"steps", steps}, {"compute", compute}, {"memory", report},
                          {"plan", plan_to_json(trainer.plan())}};
  const dist::World& world = dist::world();
  if (world.distributed()) {  // rank 0's collectives over the run; every rank's plan and peaks
    final["ranks"] = world.size();
    final["traffic"] = {{"bytes_sent", world.traffic().bytes_sent}, {"wait_seconds", world.traffic().wait_seconds}};
    const nlohmann::json mine = {{"plan", plan_to_json(trainer.plan())}, {"memory", report}};
    final["per_rank"] = nlohmann::json::array();
    for (const std::string& text : world.all_strings(mine.dump())) final["per_rank"].push_back(nlohmann::json::parse(text));
  }
  std::printf("%s\n", final.dump().c_str());
}

}  // namespace

int run_train(int argc, char** argv) {
  Args args("train",
            "Trains every parameter on the sequences of --tokens. The loss of a step is the mean\n"
            "next-token cross-entropy over the predicted positions of its B x N lines. With\n"
            "--optimizer qlion (the default) weights, gradients and momentum are stored in INT8 (QFT).\n"
            "--method lora trains PEFT-style adapters on a frozen base instead; --out then holds the\n"
            "merged model.",
            train_options());
  if (!args.parse(argc, argv)) return 0;
  args.require({"tokens", "steps", "lr"});
  apply_threads(args);
  const std::string compute = apply_compute(args);
  const float lr = args.get_float("lr");
  if (!(lr > 0)) fail("--lr must be positive");
  const bool json = args.flag("json");
  const auto out = args.find("out");
  if (out && std::filesystem::exists(*out)) fail(*out, ": already exists; choose a new --out directory");
  const TrainerSettings run = run_settings(args);

  const ModelSource source = model_source_from_args(args);
  TokenLines data(read_token_file(args.get("tokens"), source.config().vocab_size), args.get_int("batch"));
  Trainer trainer(source, run, data, printing_hooks(json, lr, compute, out, source.config()));
  std::optional<StopSignals> stop_signals(std::in_place);
  const TrainerResult result = trainer.run();
  const int signal = static_cast<int>(dist::world().max(StopSignals::received()));  // one rank's stops them all
  stop_signals.reset();
  if (result.stopped) return report_interrupted(signal, result, run.checkpoint, json);
  if (out && dist::world().is_root()) trainer.training().save(*out);
  report_final(trainer, run.steps, compute, json);
  return 0;
}

}  // namespace qft::cli
