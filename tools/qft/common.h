#pragma once
// Helpers shared by the subcommands.
#include <string>

#include "args.h"
#include "model/weights.h"
#include "train/training.h"

namespace qft::cli {

// Applies --threads (default: every core) to OpenMP, which oneDNN also uses.
void apply_threads(const Args& args);
OptionSpec threads_option();

// The optimizer and QFT options shared by train and finetune: --optimizer,
// --beta1, --beta2, --eps, --weight-decay, --rounding, --outlier-fraction,
// --seed, --grad-accum, --checkpointing.
TrainingSettings training_settings(const Args& args);

// --model DIR, or --config FILE --init random --seed N.
ModelSource model_source_from_args(const Args& args);
std::vector<OptionSpec> model_options();

}  // namespace qft::cli
