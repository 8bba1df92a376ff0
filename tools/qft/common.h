#pragma once
// Helpers shared by the subcommands.
#include <string>

#include "args.h"
#include "model/weights.h"
#include "train/trainer.h"

namespace qft::cli {

// Applies --threads (default: every core) to OpenMP, which oneDNN also uses.
void apply_threads(const Args& args);
OptionSpec threads_option();

// --compute bf16|fp32: the precision of every matrix product, set once for
// the run (kernels::set_compute). Without it: $QFT_COMPUTE if set, else
// bf16 where oneDNN multiplies BF16 natively (AVX512-BF16 or AMX), fp32
// elsewhere — and fp32 for token-by-token decoding, whose one-row products
// are memory-bound: rounding each weight to BF16 for every token made qft
// generate 35 % slower. Returns the line that says which, for the run's log.
enum class Products { Batched, OneTokenAtATime };
OptionSpec compute_option(Products products = Products::Batched);
std::string apply_compute(const Args& args, Products products = Products::Batched);
// The default of --compute on this machine, and why.
std::string default_compute_description();

// The optimizer and QFT options shared by train, finetune and memory (each
// reads those it declares): --optimizer, --beta1, --beta2, --eps,
// --weight-decay, --rounding, --outlier-fraction, --momentum-bits, --seed,
// --grad-accum, --checkpointing, --stack-gradients, and the LoRA options below.
TrainingSettings training_settings(const Args& args);
OptionSpec momentum_bits_option();
// --optimizer: qlion, or adamw (the QFT paper's LoRA setting) with --method lora.
OptionSpec optimizer_option();
// The loop's options shared by train and finetune: --max-memory,
// --checkpoint, --save-every, --resume, --on-nonfinite, --max-skips,
// --check-replicas, and the training settings above.
TrainerSettings trainer_settings(const Args& args);

// --method full|lora, --lora-rank, --lora-alpha, --lora-dropout,
// --lora-targets, --lora-base fp32|int8, --lora-adapter DIR (train, finetune;
// memory takes all but the last). nullopt for --method full.
std::vector<OptionSpec> lora_options(bool initial_adapter = true);
std::optional<LoraSettings> lora_settings(const Args& args);

// --on-nonfinite stop|skip and --max-skips K (train and finetune).
std::vector<OptionSpec> nonfinite_options();

// SIGINT and SIGTERM are never handled asynchronously: main() blocks them
// before any other thread exists and one watcher thread waits for them, so no
// handler interrupts a thread inside MPI, oneDNN or malloc (a handler did,
// and rank 1 of a data-parallel run corrupted its heap). Call first in main.
void start_stop_signal_watcher();

// While one exists, the first SIGINT or SIGTERM only sets a flag: the
// training loop finishes its step, writes a checkpoint and exits 128 +
// signal. A second one (or one with no StopSignals alive) ends the process
// at once, as the default action does; a checkpoint being written is
// replaced atomically, so that loses nothing saved.
class StopSignals {
 public:
  StopSignals();
  ~StopSignals();
  StopSignals(const StopSignals&) = delete;
  StopSignals& operator=(const StopSignals&) = delete;
  // The signal received (0: none); read once per step, so one arriving later
  // is handled after the next step.
  static int received();
  static const char* name(int signal);  // "SIGINT" or "SIGTERM"
};

// --model DIR, or --config FILE --init random --seed N.
ModelSource model_source_from_args(const Args& args);
std::vector<OptionSpec> model_options();

}  // namespace qft::cli
