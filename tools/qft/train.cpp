// qft train: FP32 training on token sequences, B lines per step.
#include <chrono>
#include <cstdio>
#include <filesystem>

#include <nlohmann/json.hpp>

#include "commands.h"
#include "common.h"
#include "core/error.h"
#include "model/transformer.h"
#include "optim/optimizer.h"

namespace qft::cli {
namespace {

nlohmann::json memory_report() {
  const MemoryStats stats = memory_stats();
  nlohmann::json peaks;
  for (int i = 0; i < kMemCategoryCount; ++i) peaks[category_name(static_cast<MemCategory>(i))] = stats.peak[i];
  return {{"peak_bytes", peaks}, {"peak_total_bytes", stats.total_peak},
          {"peak_rss_bytes", process_peak_rss_bytes()}};
}

OptimizerSettings optimizer_settings(const Args& args) {
  OptimizerSettings settings = default_optimizer_settings(args.get("optimizer"));
  if (args.has("beta1")) settings.beta1 = args.get_float("beta1");
  if (args.has("beta2")) settings.beta2 = args.get_float("beta2");
  settings.eps = args.get_float("eps");
  settings.weight_decay = args.get_float("weight-decay");
  return settings;
}

}  // namespace

int run_train(int argc, char** argv) {
  std::vector<OptionSpec> options = model_options();
  for (OptionSpec option : std::vector<OptionSpec>{
           {"tokens", "FILE", "one sequence per line, whitespace-separated token ids", ""},
           {"batch", "B", "lines per step (taken in file order, wrapping around)", "1"},
           {"steps", "N", "optimizer steps", ""},
           {"lr", "X", "learning rate (constant)", ""},
           {"optimizer", "NAME", "adamw | lion (FP32 state)", "lion"},
           {"weight-decay", "W", "decoupled weight decay, applied to every parameter", "0"},
           {"beta1", "B1", "first beta (default: 0.9)", ""},
           {"beta2", "B2", "second beta (default: 0.999 for adamw, 0.99 for lion)", ""},
           {"eps", "E", "AdamW epsilon", "1e-8"},
           {"checkpointing", "", "recompute each layer's activations during backward", ""},
           {"json", "", "print one JSON object per step and a final memory report", ""},
           {"out", "DIR", "save the trained model there as an HF directory (must not exist)", ""},
           threads_option()}) {
    options.push_back(option);
  }
  Args args("train",
            "Trains every parameter with an FP32 optimizer on the sequences of --tokens. The loss of a\n"
            "step is the mean next-token cross-entropy over the predicted positions of its B lines.",
            options);
  if (!args.parse(argc, argv)) return 0;
  args.require({"tokens", "steps", "lr"});
  apply_threads(args);
  const int batch_lines = args.get_int("batch");
  const int steps = args.get_int("steps");
  const float lr = args.get_float("lr");
  if (batch_lines < 1 || steps < 1) fail("--batch and --steps must be at least 1");
  if (!(lr > 0)) fail("--lr must be positive");
  const bool json = args.flag("json");
  const auto out = args.find("out");
  if (out && std::filesystem::exists(*out)) fail(*out, ": already exists; choose a new --out directory");
  const OptimizerSettings settings = optimizer_settings(args);

  LoadedModel model = load_model_from_args(args);
  const auto sequences = read_token_file(args.get("tokens"), model.config.vocab_size);
  ParamSet grads(MemCategory::Gradients, model.weights->specs());
  Transformer transformer(model.config, *model.weights, &grads, {.checkpointing = args.flag("checkpointing")});
  auto optimizer = make_optimizer(settings, model.weights->total_numel());

  size_t next_line = 0;
  for (int step = 1; step <= steps; ++step) {
    std::vector<TokenSequence> lines;
    for (int i = 0; i < batch_lines; ++i) lines.push_back(sequences[next_line++ % sequences.size()]);
    const Batch batch = make_batch(lines);
    const auto start = std::chrono::steady_clock::now();
    grads.zero();
    const double loss = transformer.forward_backward(batch);
    optimizer->step(*model.weights, grads, lr);
    const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    if (json) {
      const nlohmann::json record = {{"step", step}, {"loss", loss}, {"lr", lr}, {"tokens", batch.size()},
                                     {"seconds", seconds}, {"tokens_per_second", batch.size() / seconds}};
      std::printf("%s\n", record.dump().c_str());
    } else {
      std::printf("step %d/%d  loss %.6f  lr %.3g  %.1f tokens/s\n", step, steps, loss, lr, batch.size() / seconds);
    }
    std::fflush(stdout);
  }
  if (out) save_hf_model(*out, model.config, *model.weights);
  const nlohmann::json report = memory_report();
  if (json) {
    std::printf("%s\n", nlohmann::json{{"final", true}, {"steps", steps}, {"memory", report}}.dump().c_str());
  } else {
    std::printf("memory peak: %s\n", report.dump().c_str());
  }
  return 0;
}

}  // namespace qft::cli
