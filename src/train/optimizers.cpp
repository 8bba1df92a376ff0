#include "train/optimizers.h"

#include "core/error.h"
#include "dist/fp32_shards.h"
#include "optim/fp32_optimizers.h"
#include "optim/updates.h"
#include "train/memory_plan.h"
#include "train/mixed_store.h"
#include "train/qft_store.h"
#include "train/training.h"

namespace qft {
namespace {

// Floats of a ParamSet of these specs (each parameter 64-byte aligned).
size_t padded_floats(const std::vector<ParamSpec>& specs) { return ParamSet::offsets(specs).back(); }

// 256-value blocks of 8-bit state, per tensor.
size_t blockwise_blocks(const std::vector<ParamSpec>& specs) {
  size_t blocks = 0;
  for (const ParamSpec& spec : specs) blocks += (static_cast<size_t>(shape_numel(spec.shape)) + kBlockwiseBlock - 1) / kBlockwiseBlock;
  return blocks;
}

size_t params(const std::vector<ParamSpec>& specs) {
  size_t count = 0;
  for (const ParamSpec& spec : specs) count += static_cast<size_t>(shape_numel(spec.shape));
  return count;
}

// Data-parallel (ZeRO-1): the whole FP32 weights and gradients on every
// rank, the optimizer state of this rank's share.
void plan_fp32(MemoryPlan& plan, const ModelConfig& config, const TrainingSettings& settings, const PlanShape& shape) {
  const std::vector<ParamSpec> specs = parameter_specs(config);
  plan.weights = plan.grads = padded_floats(specs) * sizeof(float);
  optimizer_entry(settings.optimizer)
      .plan_fp32_state(plan, shape.ranks == 1 ? specs : dist::fp32_shard_specs(specs, shape.ranks, shape.rank));
}

void plan_qlion(MemoryPlan& plan, const ModelConfig& config, const TrainingSettings& settings, const PlanShape& shape) {
  const QftMemory memory = QftStore::memory(config, settings, {shape.ranks, shape.rank});
  plan.weights = memory.weights;
  plan.grads = memory.stack + memory.fp32_grads + memory.exchange;
  plan.momentum = memory.momentum;
  plan.workspace += memory.workspace;
}

void plan_mixed(MemoryPlan& plan, const ModelConfig& config, const TrainingSettings&, const PlanShape&) {
  const MixedMemory memory = MixedPrecisionStore::memory(config);
  plan.weights = memory.weights;
  plan.grads = memory.grads;
  plan.weight_copies = memory.weight_copies;
  plan.momentum = plan.variances = memory.moments / 2;
  plan.workspace += memory.workspace;
}

const std::vector<OptimizerEntry> kTable = {
    {OptimizerKind::QLion, "qlion", "INT8 weights, gradients and momentum: QFT", {0.9f, 0.99f}, true, true,
     nullptr, nullptr, make_qft_training, plan_qlion, QftStore::planned_head_block_rows},
    {OptimizerKind::AdamW, "adamw", "FP32", {0.9f, 0.999f}, true, false,
     [](const OptimizerSettings& s, const std::vector<ParamSpec>& specs) -> std::unique_ptr<Optimizer> {
       return std::make_unique<AdamW>(s, padded_floats(specs));
     },
     [](MemoryPlan& plan, const std::vector<ParamSpec>& specs) {
       plan.momentum = plan.variances = padded_floats(specs) * sizeof(float);
     },
     make_fp32_training, plan_fp32},
    {OptimizerKind::Lion, "lion", "FP32", {0.9f, 0.99f}, true, false,
     [](const OptimizerSettings& s, const std::vector<ParamSpec>& specs) -> std::unique_ptr<Optimizer> {
       return std::make_unique<Lion>(s, padded_floats(specs));
     },
     [](MemoryPlan& plan, const std::vector<ParamSpec>& specs) { plan.momentum = padded_floats(specs) * sizeof(float); },
     make_fp32_training, plan_fp32},
    {OptimizerKind::AdamW8bit, "adamw8bit", "8-bit block-wise moments", {0.9f, 0.999f}, true, false,
     [](const OptimizerSettings& s, const std::vector<ParamSpec>& specs) -> std::unique_ptr<Optimizer> {
       return std::make_unique<AdamW8bit>(s, specs);
     },
     [](MemoryPlan& plan, const std::vector<ParamSpec>& specs) {
       plan.momentum = plan.variances = params(specs) + blockwise_blocks(specs) * sizeof(float);
     },
     make_fp32_training, plan_fp32},
    {OptimizerKind::MixedAdamW, "mixed-adamw", "BF16 weights and gradients, FP32 master and moments",
     {0.9f, 0.999f}, false, true, nullptr, nullptr, make_mixed_training, plan_mixed},
};

// "a, b or c" of the optimizers `chosen` keeps.
template <class Chosen>
std::string names(Chosen chosen) {
  std::vector<const char*> kept;
  for (const OptimizerEntry& entry : kTable) {
    if (chosen(entry)) kept.push_back(entry.name);
  }
  std::string text;
  for (size_t i = 0; i < kept.size(); ++i) text += (i == 0 ? "" : i + 1 == kept.size() ? " or " : ", ") + std::string(kept[i]);
  return text;
}

bool any(const OptimizerEntry&) { return true; }
bool of_fp32_sets(const OptimizerEntry& entry) { return entry.fp32_optimizer != nullptr; }
bool data_parallel(const OptimizerEntry& entry) { return entry.data_parallel; }

}  // namespace

const std::vector<OptimizerEntry>& optimizer_table() { return kTable; }

const OptimizerEntry& optimizer_entry(OptimizerKind kind) {
  for (const OptimizerEntry& entry : kTable) {
    if (entry.kind == kind) return entry;
  }
  fail("no optimizer of kind ", static_cast<int>(kind));
}

OptimizerKind parse_optimizer(const std::string& name) {
  for (const OptimizerEntry& entry : kTable) {
    if (name == entry.name) return entry.kind;
  }
  fail("unknown optimizer '", name, "' (expected ", names(any), ")");
}

const char* optimizer_name(OptimizerKind kind) { return optimizer_entry(kind).name; }

const OptimizerEntry& adapter_optimizer(OptimizerKind kind) {
  const OptimizerEntry& entry = optimizer_entry(kind);
  if (!of_fp32_sets(entry)) fail("LoRA trains its adapters with ", names(of_fp32_sets), ", not '", entry.name, "'");
  return entry;
}

void check_data_parallel(const TrainingSettings& settings, int ranks) {
  if (ranks == 1 || (!settings.lora && optimizer_entry(settings.optimizer).data_parallel)) return;
  fail(settings.lora ? std::string("--method lora") : "--optimizer " + std::string(optimizer_name(settings.optimizer)),
       " does not run data-parallel yet (", ranks, " ranks); ", names(data_parallel), " do");
}

OptimizerKind default_optimizer(bool lora) { return lora ? OptimizerKind::AdamW : OptimizerKind::QLion; }

TrainingSettings default_settings(OptimizerKind kind) {
  TrainingSettings settings;
  settings.optimizer = kind;
  settings.hyper = optimizer_entry(kind).defaults;
  return settings;
}

std::string optimizer_help() {
  std::string text;
  for (const OptimizerEntry& entry : kTable) text += (text.empty() ? "" : " | ") + std::string(entry.name) + " (" + entry.summary + ")";
  return text + "; LoRA adapters: " + names(of_fp32_sets);
}

std::unique_ptr<Optimizer> make_fp32_optimizer(OptimizerKind kind, const OptimizerSettings& settings,
                                               const std::vector<ParamSpec>& specs) {
  const OptimizerEntry& entry = optimizer_entry(kind);
  if (!of_fp32_sets(entry)) fail("'", entry.name, "' does not optimize FP32 parameter sets");
  return entry.fp32_optimizer(settings, specs);
}

}  // namespace qft
