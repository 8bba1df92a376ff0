#include "common.h"

#include <omp.h>
#include <signal.h>

#include <atomic>
#include <cstdlib>
#include <thread>

#include "core/cpu_features.h"
#include "core/error.h"
#include "kernels/kernels.h"
#include "quant/quantizer.h"
#include "train/memory_plan.h"
#include "train/lora_store.h"
#include "train/optimizers.h"

namespace qft::cli {

namespace {

std::atomic<int> stop_signal{0};
std::atomic<bool> stop_requests_accepted{false};  // a StopSignals exists

sigset_t stop_signal_set() {
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGINT);
  sigaddset(&set, SIGTERM);
  return set;
}

// The only thread that takes SIGINT/SIGTERM. The first one during a run asks
// it to stop; any other ends the process as the default action would.
[[noreturn]] void watch_stop_signals() {
  const sigset_t set = stop_signal_set();
  for (;;) {
    int number = 0;
    if (sigwait(&set, &number) != 0) continue;
    int none = 0;
    if (stop_requests_accepted.load() && stop_signal.compare_exchange_strong(none, number)) continue;
    signal(number, SIG_DFL);
    pthread_sigmask(SIG_UNBLOCK, &set, nullptr);
    raise(number);  // delivered to this thread, now unblocked: the process ends
  }
}

}  // namespace

void start_stop_signal_watcher() {
  const sigset_t set = stop_signal_set();
  pthread_sigmask(SIG_BLOCK, &set, nullptr);  // inherited by every thread created after this
  std::thread(watch_stop_signals).detach();
}

StopSignals::StopSignals() { stop_requests_accepted = true; }
StopSignals::~StopSignals() { stop_requests_accepted = false; }
int StopSignals::received() { return stop_signal.load(); }
const char* StopSignals::name(int signal) { return signal == SIGINT ? "SIGINT" : "SIGTERM"; }

OptionSpec momentum_bits_option() {
  return {"momentum-bits", "BITS", "qlion: momentum as 8-bit codes with one range per row, or 4-bit codes with one BF16 range per 64 values", "8"};
}

OptionSpec threads_option() {
  return {"threads", "N", "worker threads for kernels and GEMMs (default: all cores)", ""};
}

namespace {

// bf16 where it is faster: oneDNN's BF16 matmul on AVX512-BF16 measured
// 2–2.5× its FP32 sgemm on this project's shapes (docs/results.md).
bool bf16_is_native() {
  const CpuFeatures& cpu = cpu_features();
  return (cpu.avx512_bf16 || cpu.amx_bf16) && kernels::native_bf16_matmul();
}

std::string default_compute(Products products) {
  if (const char* forced = std::getenv("QFT_COMPUTE"); forced && *forced) return forced;
  return bf16_is_native() && products == Products::Batched ? "bf16" : "fp32";
}

}  // namespace

OptionSpec compute_option(Products products) {
  return {"compute", "PRECISION",
          std::string("matrix products: bf16 (BF16 operands, FP32 accumulation) | fp32 (default: ") +
              (products == Products::Batched ? "bf16 where the CPU multiplies BF16 natively, else fp32"
                                             : "fp32: decoding one token at a time is memory-bound") +
              "; $QFT_COMPUTE sets the default)",
          ""};
}

std::string default_compute_description() {
  if (const char* forced = std::getenv("QFT_COMPUTE"); forced && *forced) return std::string(forced) + " (from $QFT_COMPUTE)";
  return bf16_is_native() ? "bf16 (oneDNN multiplies BF16 natively here)" : "fp32 (no native BF16 matmul here)";
}

std::string apply_compute(const Args& args, Products products) {
  const std::string name = args.has("compute") ? args.get("compute") : default_compute(products);
  if (name != "bf16" && name != "fp32") fail("--compute must be bf16 or fp32, got '", name, "'");
  kernels::set_compute(name == "bf16" ? kernels::Compute::BF16 : kernels::Compute::FP32);
  if (name == "fp32") return "compute: fp32";
  return std::string("compute: bf16 (") + (kernels::native_bf16_matmul() ? "oneDNN BF16 matmul" : "BF16-rounded operands through sgemm, no native BF16 matmul here") + ")";
}

void apply_threads(const Args& args) {
  if (!args.has("threads")) return;
  const int threads = args.get_int("threads");
  if (threads < 1) fail("--threads must be at least 1");
  omp_set_num_threads(threads);
}

std::vector<OptionSpec> model_options() {
  return {
      {"model", "PATH", "HF model directory (config.json + safetensors) or GGUF file", ""},
      {"config", "FILE", "HF config.json for a randomly initialised model (with --init random)", ""},
      {"init", "random", "initialisation for --config: random (N(0, 0.02²), norms 1)", ""},
      {"seed", "N", "seed of the random initialisation and of stochastic rounding", "0"},
  };
}

ModelSource model_source_from_args(const Args& args) {
  if (args.has("model") == args.has("config")) fail("give exactly one of --model DIR or --config FILE");
  if (args.has("model")) {
    if (args.has("init")) fail("--init applies to --config only");
    return ModelSource::open(args.get("model"));
  }
  if (!args.has("init") || args.get("init") != "random") fail("--config needs --init random");
  return ModelSource::random(args.get("config"), static_cast<uint64_t>(args.get_int64("seed")));
}

namespace {

Rounding parse_rounding(const std::string& name) {
  if (name == "stochastic") return Rounding::Stochastic;
  if (name == "nearest") return Rounding::Nearest;
  fail("--rounding must be stochastic or nearest, got '", name, "'");
}

}  // namespace

OptionSpec optimizer_option() {
  return {"optimizer", "NAME",
          optimizer_help() + " (default: " + optimizer_name(default_optimizer(false)) + "; " +
              optimizer_name(default_optimizer(true)) + " with --method lora)",
          ""};
}

std::vector<OptionSpec> lora_options(bool initial_adapter) {
  std::vector<OptionSpec> options = {
      {"method", "NAME", "full (every parameter) | lora (frozen base, low-rank adapters as PEFT makes them)", "full"},
      {"lora-rank", "R", "LoRA: adapter rank r", "8"},
      {"lora-alpha", "A", "LoRA: scaling alpha (the update is alpha/r · B·A)", "16"},
      {"lora-dropout", "P", "LoRA: dropout on the adapters' input", "0.05"},
      {"lora-targets", "LIST", "LoRA: modules with adapters, PEFT's names (or all-linear)",
       "q_proj,k_proj,v_proj,o_proj,gate_proj,up_proj,down_proj"},
      {"lora-base", "TYPE", "LoRA: the frozen base in fp32, or int8 (QFT's hybrid form, de-quantized per matrix)", "fp32"},
  };
  if (initial_adapter) options.push_back({"lora-adapter", "DIR", "LoRA: start from this PEFT adapter (default: PEFT's initialisation)", ""});
  return options;
}

std::optional<LoraSettings> lora_settings(const Args& args) {
  const std::string method = args.get("method");
  if (method == "full") {
    // A recipe's resolved settings hold every option at its default: only another value is refused.
    for (const OptionSpec& option : lora_options()) {
      if (option.name != "method" && args.has(option.name) && args.get(option.name) != option.default_value) {
        fail("--", option.name, " needs --method lora");
      }
    }
    return std::nullopt;
  }
  if (method != "lora") fail("--method must be full or lora, got '", method, "'");
  LoraSettings lora;
  lora.rank = args.get_int("lora-rank");
  lora.alpha = args.get_float("lora-alpha");
  lora.dropout = args.get_float("lora-dropout");
  lora.targets = parse_lora_targets(args.get("lora-targets"));
  const std::string base = args.get("lora-base");
  if (base != "fp32" && base != "int8") fail("--lora-base must be fp32 or int8, got '", base, "'");
  lora.int8_base = base == "int8";
  if (args.declares("lora-adapter") && args.has("lora-adapter")) lora.initial_adapter = args.get("lora-adapter");
  return lora;
}

TrainingSettings training_settings(const Args& args) {
  TrainingSettings settings;
  settings.lora = lora_settings(args);
  settings.optimizer = args.has("optimizer") ? parse_optimizer(args.get("optimizer"))
                                             : default_optimizer(settings.lora.has_value());
  settings.hyper = optimizer_entry(settings.optimizer).defaults;
  // An option the command declares, given or with a default, replaces the library's default.
  const auto read = [&](const char* name, auto& value, auto parse) {
    if (args.declares(name) && args.find(name)) value = parse(name);
  };
  const auto real = [&](const std::string& name) { return args.get_float(name); };
  read("beta1", settings.hyper.beta1, real);
  read("beta2", settings.hyper.beta2, real);
  read("eps", settings.hyper.eps, real);
  read("weight-decay", settings.hyper.weight_decay, real);
  read("outlier-fraction", settings.qft.outlier_fraction, real);
  read("rounding", settings.qft.rounding, [&](const std::string& name) { return parse_rounding(args.get(name)); });
  read("seed", settings.seed, [&](const std::string& name) { return static_cast<uint64_t>(args.get_int64(name)); });
  read("grad-accum", settings.grad_accum, [&](const std::string& name) { return args.get_int(name); });
  read("momentum-bits", settings.qft.momentum_bits, [&](const std::string& name) { return args.get_int(name); });
  settings.checkpointing = args.declares("checkpointing") && args.flag("checkpointing");
  settings.qft.stack_gradients = args.declares("stack-gradients") && args.flag("stack-gradients");
  return settings;
}

TrainerSettings trainer_settings(const Args& args) {
  TrainerSettings run;
  run.training = training_settings(args);
  if (args.has("max-memory")) run.max_memory = parse_memory_size(args.get("max-memory"));
  if (args.has("checkpoint")) run.checkpoint = args.get("checkpoint");
  if (args.has("resume")) run.resume = args.get("resume");
  if (args.has("save-every")) {
    run.save_every = args.get_int("save-every");
    if (run.save_every < 1) fail("--save-every must be at least 1");
  }
  run.on_nonfinite = parse_nonfinite_policy(args.get("on-nonfinite"));
  run.max_skips = args.get_int("max-skips");
  run.check_replicas = args.flag("check-replicas");
  return run;
}

std::vector<OptionSpec> nonfinite_options() {
  return {{"on-nonfinite", "POLICY",
           "a NaN/Inf loss or gradient: stop (save nothing of that step, keep the last checkpoint) | "
           "skip (drop that step's update, count it)", "stop"},
          {"max-skips", "K", "with skip: stop after K skipped steps in a row", "10"}};
}

}  // namespace qft::cli
