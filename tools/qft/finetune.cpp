// qft finetune: the main job — instruction-tune a model and export it.
#include <unistd.h>

#include <cstdio>
#include <optional>
#include <nlohmann/json.hpp>

#include "build_info.h"
#include "commands.h"
#include "common.h"
#include "core/error.h"
#include "dist/world.h"
#include "train/finetune.h"
#include "train/optimizers.h"

namespace qft::cli {
namespace {

std::string duration(double seconds) {
  const int total = static_cast<int>(seconds);
  char text[32];
  std::snprintf(text, sizeof text, "%d:%02d:%02d", total / 3600, total / 60 % 60, total % 60);
  return text;
}

// A redrawn bar on a terminal, plain log lines otherwise.
class ProgressPrinter {
 public:
  explicit ProgressPrinter(int log_every) : tty_(isatty(STDERR_FILENO)), log_every_(log_every) {}
  void operator()(const FinetuneProgress& p) {
    if (p.eval_loss) {
      end_line();
      std::fprintf(stderr, "step %d/%d  eval loss %.4f\n", p.step, p.total_steps, *p.eval_loss);
      return;
    }
    char line[256];
    std::snprintf(line, sizeof line, "step %d/%d  epoch %d  loss %.4f  lr %.2e  %.0f tok/s  ETA %s  mem %.2f GiB",
                  p.step, p.total_steps, p.epoch, p.loss, p.lr, p.tokens_per_second, duration(p.seconds_left).c_str(),
                  p.memory_bytes / 1073741824.0);
    if (tty_) {
      const int width = 24, filled = width * p.step / std::max(1, p.total_steps);
      std::fprintf(stderr, "\r[%s%s] %s\x1b[K", std::string(filled, '#').c_str(), std::string(width - filled, '.').c_str(), line);
      open_line_ = true;
    } else if (p.step % log_every_ == 0 || p.step == p.total_steps || p.step == 1) {
      std::fprintf(stderr, "%s\n", line);
    }
    std::fflush(stderr);
  }
  void end_line() {
    if (open_line_) std::fputc('\n', stderr);
    open_line_ = false;
  }

 private:
  bool tty_;
  int log_every_;
  bool open_line_ = false;
};

// Data-parallel, rank 0 reports for all: notices and the progress on stderr.
FinetuneCallbacks reporting(ProgressPrinter& printer) {
  FinetuneCallbacks callbacks;
  const bool reports = dist::world().is_root();
  callbacks.log = [&printer, reports](const std::string& line) {
    if (reports) printer.end_line(), std::fprintf(stderr, "%s\n", line.c_str());
  };
  callbacks.progress = [&printer, reports](const FinetuneProgress& progress) {
    if (reports) printer(progress);
  };
  callbacks.stop_requested = [] { return StopSignals::received() != 0; };
  return callbacks;
}

// The result as one JSON line on stdout; a run a signal stopped exits 128 + signal.
int report_result(const FinetuneResult& result, int signal) {
  const auto path_or_null = [](const std::string& path) { return path.empty() ? nlohmann::json() : nlohmann::json(path); };
  if (result.stopped) {
    std::fprintf(stderr, "qft finetune: %s after step %d; checkpoint in %s (continue with the same command and --resume %s)\n",
                 StopSignals::name(signal), result.steps, result.checkpoint.c_str(), result.checkpoint.c_str());
    std::printf("%s\n", nlohmann::json{{"interrupted", true}, {"signal", StopSignals::name(signal)},
                                       {"step", result.steps}, {"checkpoint", result.checkpoint}}
                            .dump()
                            .c_str());
    return 128 + signal;
  }
  std::printf("%s\n", nlohmann::json{{"steps", result.steps},
                                     {"eval_loss_before", result.eval_loss_before},
                                     {"eval_loss_after", result.eval_loss_after},
                                     {"model", path_or_null(result.model_directory)},
                                     {"adapter", path_or_null(result.adapter_directory)},
                                     {"peak_rss_bytes", process_peak_rss_bytes()}}
                          .dump()
                          .c_str());
  return 0;
}

std::vector<OptionSpec> finetune_options() {
  std::vector<OptionSpec> options = {
             {"config", "FILE", "recipe (YAML map of these options by long name; paths relative to the working directory)", ""},
             {"model", "PATH", "HF model directory or GGUF file", ""},
             {"data", "FILE", "training data", ""},
             {"out", "DIR", "output directory", ""},
             {"data-format", "NAME", "alpaca | sharegpt | messages | text (default: detected)", ""},
             {"strict", "", "stop at the first malformed record instead of skipping it", ""},
             {"chat-template", "NAME|FILE", "chatml | llama2 | llama3 | alpaca | FILE.jinja (default: the model's own)", ""},
             {"train-on-prompt", "", "train on the prompt tokens too", ""},
             {"seq-len", "T", "longest sequence; longer conversations are split into segments", "2048"},
             {"pack", "", "fill micro-batches with short examples up to batch x seq-len tokens", ""},
             {"batch", "B", "examples per micro-batch", "1"},
             {"grad-accum", "N", "micro-batches per step (global batch = batch x grad-accum)", "1"},
             {"epochs", "E", "passes over the data", "3"},
             {"max-steps", "N", "stop after N steps (0: the epochs decide)", "0"},
             {"lr", "X", "peak learning rate", "2e-5"},
             {"warmup-ratio", "R", "share of the steps spent warming up", "0.03"},
             {"min-lr-ratio", "R", "final learning rate as a share of the peak", "0"},
             optimizer_option(),
             {"weight-decay", "W", "decoupled weight decay", "0"},
             {"eps", "E", "AdamW epsilon", "1e-8"},
             {"beta1", "B1", "first beta (default 0.9)", ""},
             {"beta2", "B2", "second beta (default 0.99 for Lion, 0.999 for AdamW)", ""},
             {"rounding", "MODE", "qlion re-quantization: stochastic | nearest", "stochastic"},
             {"outlier-fraction", "F", "qlion: fraction of each matrix kept as FP32 outliers", "0.01"},
             momentum_bits_option(),
             {"checkpointing", "", "recompute each layer's activations during backward", ""},
             {"stack-gradients", "", "qlion: put gradients on the INT8 stack and update after backward (the paper's pipeline) even with --grad-accum 1", ""},
             {"seed", "N", "data order, evaluation split and stochastic rounding", "0"},
             {"eval-split", "F", "share of the records held out for evaluation", "0"},
             {"eval-data", "FILE", "evaluation data (instead of --eval-split)", ""},
             {"eval-every", "N", "evaluate every N steps (also before and after training)", "0"},
             {"export-dtype", "TYPE", "bf16 | f16 | f32 (and q8_0 for GGUF)", "bf16"},
             {"export-gguf", "", "also write OUT/model.gguf", ""},
             {"export-lora", "FORM", "LoRA: merged (OUT/model) | adapter (OUT/adapter, PEFT's format) | both", "merged"},
             {"save-every", "N", "write a checkpoint every N steps (also on SIGINT/SIGTERM, then exit 130/143)", ""},
             {"checkpoint", "DIR", "where checkpoints go (default: OUT/checkpoint)", ""},
             {"resume", "DIR", "continue bit-exactly from a checkpoint: same model, data and settings", ""},
             {"max-memory", "SIZE", "refuse a plan whose peak exceeds this (default: physical RAM)", ""},
             {"log-every", "N", "log line interval when stderr is not a terminal", "10"},
             {"check-replicas", "", "data-parallel debugging: after every step, fail unless every rank holds the same weights (XXH64)", ""},
             nonfinite_options()[0], nonfinite_options()[1],
             compute_option(), threads_option()};
  for (const OptionSpec& option : lora_options()) options.push_back(option);
  return options;
}

// The options as the library's settings; OUT/settings.yaml gets them resolved.
FinetuneSettings finetune_settings(Args& args) {
  FinetuneSettings settings;
  settings.model = args.get("model");
  settings.data = args.get("data");
  settings.out = args.get("out");
  if (args.has("data-format")) settings.data_format = parse_data_format(args.get("data-format"));
  settings.strict = args.flag("strict");
  if (args.has("chat-template")) settings.chat_template = args.get("chat-template");
  settings.train_on_prompt = args.flag("train-on-prompt");
  settings.seq_len = args.get_int("seq-len");
  settings.pack = args.flag("pack");
  settings.batch = args.get_int("batch");
  settings.epochs = args.get_int("epochs");
  settings.max_steps = args.get_int("max-steps");
  settings.lr = args.get_float("lr");
  settings.warmup_ratio = args.get_float("warmup-ratio");
  settings.min_lr_ratio = args.get_float("min-lr-ratio");
  settings.eval_split = args.get_float("eval-split");
  if (args.has("eval-data")) settings.eval_data = args.get("eval-data");
  settings.eval_every = args.get_int("eval-every");
  settings.export_dtype = args.get("export-dtype");
  settings.export_gguf = args.flag("export-gguf");
  settings.export_lora = args.get("export-lora");
  settings.run = trainer_settings(args);
  args.resolve("optimizer", optimizer_name(settings.run.training.optimizer));
  settings.settings_file = args.resolved_recipe(
      "config", {"qft finetune settings: the recipe" + (args.has("config") ? " " + args.get("config") : std::string()) +
                     " and the command line, resolved",
                 std::string("by qft ") + QFT_VERSION + " (commit " + QFT_GIT_COMMIT + ")",
                 "repeat the run with: qft finetune --config settings.yaml --out NEW_DIR"});
  return settings;
}
}  // namespace

int run_finetune(int argc, char** argv) {
  Args args("finetune",
            "Fine-tunes every parameter of --model (an HF directory or a GGUF file) on instruction data\n"
            "(Alpaca, ShareGPT, messages or plain text; JSON or JSONL), with the loss on the assistant's\n"
            "tokens only, and exports the result to OUT/model (HF; OUT/model.gguf with --export-gguf).\n"
            "--method lora trains PEFT-style adapters on a frozen FP32 or INT8 base instead (--export-lora).\n"
            "Defaults follow the QFT paper: QLion with INT8 state, lr 2e-5, 3 epochs, cosine schedule\n"
            "with warm-up, segments of 2048 tokens. Writes OUT/metrics.jsonl and OUT/loss.svg as it goes.\n"
            "SIGINT/SIGTERM finish the step, write a checkpoint and exit 130/143; --resume continues it.\n"
            "Any option can come from a recipe file (--config FILE.yaml: `lr: 2e-5`, `pack: true`, ...);\n"
            "the command line overrides it, and OUT/settings.yaml records the resolved settings.",
            finetune_options());
  if (!args.parse(argc, argv)) return 0;
  if (args.has("config")) args.apply_recipe(read_recipe(args.get("config")), "config");
  args.require({"model", "data", "out"});
  apply_threads(args);
  const std::string compute = apply_compute(args);
  const FinetuneSettings settings = finetune_settings(args);
  const int log_every = args.get_int("log-every");
  if (log_every < 1) fail("--log-every must be at least 1");

  ProgressPrinter printer(log_every);
  const FinetuneCallbacks callbacks = reporting(printer);
  callbacks.log(compute);
  if (dist::world().distributed()) callbacks.log("data-parallel: " + std::to_string(dist::world().size()) + " ranks");
  std::optional<StopSignals> stop_signals(std::in_place);
  const FinetuneResult result = run_finetune(settings, callbacks);
  const int signal = static_cast<int>(dist::world().max(StopSignals::received()));  // one rank's stopped them all
  stop_signals.reset();
  printer.end_line();
  return report_result(result, signal);
}

}  // namespace qft::cli
