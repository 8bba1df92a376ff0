#include "train/memory_plan.h"

#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <nlohmann/json.hpp>

#include "core/error.h"
#include "model/parameters.h"
#include "model/transformer.h"
#include "train/lora_store.h"
#include "train/optimizers.h"
#include "train/tensor_store.h"

namespace qft {
namespace {

void plan_lora(MemoryPlan& plan, const ModelConfig& config, const TrainingSettings& settings) {
  const LoraMemory memory = LoraStore::memory(config, settings);
  plan.weights = memory.base;
  plan.adapters = memory.adapters;
  plan.grads = memory.grads;
  plan.workspace += memory.workspace;
  adapter_optimizer(settings.optimizer).plan_fp32_state(plan, lora_adapter_specs(config, *settings.lora));
}

// The plan of rank shape.rank.
MemoryPlan plan_rank(const ModelConfig& config, const TrainingSettings& settings, const PlanShape& shape) {
  const OptimizerEntry& optimizer = optimizer_entry(settings.optimizer);
  const TransformerMemory transformer =
      Transformer::memory(config, shape.seq_len * shape.batch, shape.seq_len, true,
                          {.checkpointing = settings.checkpointing,
                           .adapter_rank = settings.lora ? settings.lora->rank : 0,
                           .bf16_weights = !settings.lora && optimizer.materialises_weights &&
                                           TensorStore::bf16_weights(false),
                           .head_block_rows = !settings.lora && optimizer.head_block_rows
                                                  ? optimizer.head_block_rows(config, settings)
                                                  : 0});
  MemoryPlan plan;
  for (const ParamSpec& spec : parameter_specs(config)) plan.params += shape_numel(spec.shape);
  plan.activations = transformer.activation_bytes();
  plan.workspace = transformer.workspace_bytes();
  if (settings.lora) {
    plan_lora(plan, config, settings);
  } else {
    optimizer.plan(plan, config, settings, shape);
  }
  plan.total = plan.weights + plan.adapters + plan.grads + plan.weight_copies + plan.momentum + plan.variances + plan.activations;
  plan.peak = plan.total + plan.workspace;
  return plan;
}

}  // namespace

MemoryPlan plan_memory(const ModelConfig& config, const TrainingSettings& settings, const PlanShape& shape) {
  if (shape.seq_len < 2 || shape.batch < 1 || settings.grad_accum < 1) {
    fail("the plan needs seq_len >= 2, batch >= 1 and grad_accum >= 1");
  }
  if (shape.ranks < 1 || shape.rank >= shape.ranks) fail("the plan needs ranks >= 1 and rank < ranks");
  check_data_parallel(settings, shape.ranks);
  if (shape.rank >= 0) return plan_rank(config, settings, shape);
  MemoryPlan largest;  // every rank's, keeping the largest
  for (int rank = 0; rank < shape.ranks; ++rank) {
    PlanShape one = shape;
    one.rank = rank;
    const MemoryPlan plan = plan_rank(config, settings, one);
    if (rank == 0 || plan.peak > largest.peak) largest = plan;
  }
  return largest;
}

nlohmann::json plan_to_json(const MemoryPlan& plan) {
  return {{"params", plan.params},       {"device", device_name(plan.device)},
          {"weights", plan.weights},     {"adapters", plan.adapters},
          {"grads", plan.grads},
          {"weight_copies", plan.weight_copies}, {"momentum", plan.momentum}, {"variances", plan.variances},
          {"activations", plan.activations}, {"total", plan.total},     {"workspace", plan.workspace},
          {"peak", plan.peak}};
}

std::string plan_table(const MemoryPlan& plan, const ModelConfig& config, const TrainingSettings& settings,
                       const PlanShape& shape) {
  char line[256];
  std::string text;
  const std::string optimizer = optimizer_name(settings.optimizer);
  const std::string method =
      settings.lora ? "LoRA r=" + std::to_string(settings.lora->rank) + (settings.lora->int8_base ? " INT8 base" : " FP32 base") +
                          " + " + optimizer
                    : settings.optimizer == OptimizerKind::QLion && settings.qft.momentum_bits != 8
                          ? optimizer + " (" + std::to_string(settings.qft.momentum_bits) + "-bit momentum)"
                          : optimizer;
  const std::string ranks = shape.ranks > 1 ? ", per rank (" + std::to_string(shape.ranks) + " ranks)" : std::string();
  std::snprintf(line, sizeof line, "memory plan: %s, %.3f B parameters, %s, seq %d x batch %d, grad-accum %d%s, %s compute%s\n",
                architecture_name(config.architecture), plan.params / 1e9, method.c_str(),
                shape.seq_len, shape.batch, settings.grad_accum,
                settings.checkpointing ? ", checkpointing" : "",
                kernels::compute() == kernels::Compute::BF16 ? "bf16" : "fp32", ranks.c_str());
  text += line;
  std::snprintf(line, sizeof line, "  %-14s %10s %12s\n", "", "GiB", "bytes/param");
  text += line;
  const std::pair<const char*, size_t> rows[] = {
      {"weights", plan.weights},         {"adapters", plan.adapters}, {"grads", plan.grads},
      {"weight copies", plan.weight_copies},
      {"momentum", plan.momentum},       {"variances", plan.variances}, {"activations", plan.activations},
      {"total", plan.total},             {"workspace", plan.workspace}, {"peak", plan.peak}};
  for (const auto& [name, bytes] : rows) {
    if (std::string(name) == "adapters" && !settings.lora) continue;
    std::snprintf(line, sizeof line, "  %-14s %10.3f %12.3f\n", name, bytes / 1073741824.0,
                  static_cast<double>(bytes) / plan.params);
    text += line;
  }
  return text;
}

size_t physical_memory_bytes() {
  return static_cast<size_t>(sysconf(_SC_PHYS_PAGES)) * static_cast<size_t>(sysconf(_SC_PAGE_SIZE));
}

size_t parse_memory_size(const std::string& text) {
  size_t used = 0;
  double value = -1;
  try {
    value = std::stod(text, &used);
  } catch (const std::exception&) {
    used = 0;
  }
  std::string unit = text.substr(used);
  if (!unit.empty() && unit.back() == 'B') unit.pop_back();
  if (unit.size() == 2 && unit[1] == 'i') unit.pop_back();
  double scale = 1;
  if (unit == "K" || unit == "k") scale = 1024.0;
  else if (unit == "M") scale = 1024.0 * 1024;
  else if (unit == "G") scale = 1024.0 * 1024 * 1024;
  else if (unit == "T") scale = 1024.0 * 1024 * 1024 * 1024;
  else if (!unit.empty()) used = 0;
  if (used == 0 || !(value > 0) || !std::isfinite(value)) {
    fail("'", text, "' is not a memory size (examples: 16G, 24GiB, 800M)");
  }
  return static_cast<size_t>(value * scale);
}

}  // namespace qft
