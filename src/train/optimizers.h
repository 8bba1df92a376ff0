#pragma once
// Every optimizer qft trains with, in one table: its name, what it is, its
// default hyper-parameters, the memory it needs (Table 1's columns) and what
// trains with it. Adding an optimizer is adding a row here.
#include <memory>
#include <string>
#include <vector>

#include "model/config.h"
#include "model/parameters.h"
#include "optim/optimizer.h"
#include "train/settings.h"

namespace qft {

class ModelSource;
class Training;
struct MemoryPlan;

struct OptimizerEntry {
  OptimizerKind kind;
  const char* name;     // --optimizer
  const char* summary;  // for --help
  OptimizerSettings defaults;
  bool data_parallel;   // runs over several ranks
  // Its store hands the weights over one matrix at a time (a TensorStore:
  // in BF16 under BF16 compute), not as a resident FP32 set.
  bool materialises_weights;
  // Optimizers of FP32 parameter sets (full fine-tuning in FP32, and LoRA's
  // adapters): the optimizer of these specs, and its state's bytes as Table 1's
  // momentum and variances columns. Null for the others.
  std::unique_ptr<Optimizer> (*fp32_optimizer)(const OptimizerSettings& settings, const std::vector<ParamSpec>& specs);
  void (*plan_fp32_state)(MemoryPlan& plan, const std::vector<ParamSpec>& specs);
  // A full fine-tune with it: the training, and its columns of the plan
  // (weights, gradients, weight copies, optimizer state, the store's
  // workspace) for one rank of `shape`.
  std::unique_ptr<Training> (*make_training)(const ModelSource& source, const TrainingSettings& settings);
  void (*plan)(MemoryPlan& plan, const ModelConfig& config, const TrainingSettings& settings, const PlanShape& shape);
  // Its store's LM head block (TransformerOptions::head_block_rows); null: the whole head.
  int (*head_block_rows)(const ModelConfig& config, const TrainingSettings& settings) = nullptr;
};

const std::vector<OptimizerEntry>& optimizer_table();
const OptimizerEntry& optimizer_entry(OptimizerKind kind);
// Throws naming the optimizers there are.
OptimizerKind parse_optimizer(const std::string& name);
const char* optimizer_name(OptimizerKind kind);
// The optimizer of LoRA's adapters; throws unless it optimizes FP32 sets.
const OptimizerEntry& adapter_optimizer(OptimizerKind kind);
// Throws unless `settings` run over `ranks` data-parallel ranks.
void check_data_parallel(const TrainingSettings& settings, int ranks);
// The default without --optimizer: QLion, or AdamW (the QFT paper's LoRA baseline) for LoRA.
OptimizerKind default_optimizer(bool lora);
// Settings that train with `kind` at its default hyper-parameters, the rest at theirs.
TrainingSettings default_settings(OptimizerKind kind);
// One line per optimizer, "name (summary)", for --help.
std::string optimizer_help();

// The optimizer of an FP32 set; throws unless `kind` is one of them.
std::unique_ptr<Optimizer> make_fp32_optimizer(OptimizerKind kind, const OptimizerSettings& settings,
                                               const std::vector<ParamSpec>& specs);

}  // namespace qft
