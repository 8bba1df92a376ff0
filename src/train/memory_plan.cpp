#include "train/memory_plan.h"

#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <nlohmann/json.hpp>

#include "core/error.h"
#include "dist/fp32_shards.h"
#include "model/parameters.h"
#include "model/transformer.h"
#include "train/mixed_store.h"
#include "train/qft_store.h"

namespace qft {
namespace {

constexpr size_t kBlockwiseBlock = 256;  // 8-bit AdamW: one FP32 absmax per 256 values

struct ParamCounts {
  int64_t params = 0;
  size_t padded_floats = 0;  // ParamSet's storage: each parameter 64-byte aligned
  size_t blocks = 0;         // 256-value blocks, per tensor
};

ParamCounts count_params(const std::vector<ParamSpec>& specs) {
  ParamCounts counts;
  for (const ParamSpec& spec : specs) {
    const size_t count = static_cast<size_t>(shape_numel(spec.shape));
    counts.params += static_cast<int64_t>(count);
    counts.padded_floats += (count + 15) / 16 * 16;
    counts.blocks += (count + kBlockwiseBlock - 1) / kBlockwiseBlock;
  }
  return counts;
}

// An FP32 optimizer's state over these parameters (ParamSet storage): false
// when `optimizer` is not one.
bool plan_fp32_optimizer(MemoryPlan& plan, const std::string& optimizer, const ParamCounts& counts) {
  const size_t fp32 = counts.padded_floats * sizeof(float);
  const size_t int8_blockwise = static_cast<size_t>(counts.params) + counts.blocks * sizeof(float);
  if (optimizer == "lion" || optimizer == "adamw") {
    plan.momentum = fp32;
    plan.variances = optimizer == "adamw" ? fp32 : 0;
  } else if (optimizer == "adamw8bit") {
    plan.momentum = plan.variances = int8_blockwise;
  } else {
    return false;
  }
  return true;
}

void plan_lora(MemoryPlan& plan, const ModelConfig& config, const PlanSettings& settings) {
  const LoraMemory memory = LoraStore::memory(config, *settings.lora);
  plan.weights = memory.base;
  plan.adapters = memory.adapters;
  plan.grads = memory.grads;
  plan.workspace += memory.workspace;
  if (!plan_fp32_optimizer(plan, settings.optimizer, count_params(lora_adapter_specs(config, *settings.lora)))) {
    fail("LoRA trains its adapters with adamw, lion or adamw8bit, not '", settings.optimizer, "'");
  }
}

}  // namespace

MemoryPlan plan_memory(const ModelConfig& config, const PlanSettings& settings) {
  if (settings.seq_len < 2 || settings.batch < 1 || settings.grad_accum < 1) {
    fail("the plan needs seq_len >= 2, batch >= 1 and grad_accum >= 1");
  }
  if (settings.ranks < 1 || settings.rank >= settings.ranks) fail("the plan needs ranks >= 1 and rank < ranks");
  if (settings.rank < 0) {  // every rank's, keeping the largest
    MemoryPlan largest;
    for (int rank = 0; rank < settings.ranks; ++rank) {
      PlanSettings one = settings;
      one.rank = rank;
      const MemoryPlan plan = plan_memory(config, one);
      if (rank == 0 || plan.peak > largest.peak) largest = plan;
    }
    return largest;
  }
  const Placement placement{settings.ranks, settings.rank};
  if (settings.ranks > 1 && (settings.lora || settings.optimizer == "mixed-adamw")) {
    fail(settings.lora ? "--method lora" : "--optimizer mixed-adamw", " does not run data-parallel yet");
  }
  const ParamCounts counts = count_params(parameter_specs(config));
  const std::string& optimizer = settings.optimizer;
  const bool tensor_store = !settings.lora && (optimizer == "qlion" || optimizer == "mixed-adamw");
  const TransformerMemory transformer =
      Transformer::memory(config, settings.seq_len * settings.batch, settings.seq_len, true,
                          {.checkpointing = settings.checkpointing,
                           .adapter_rank = settings.lora ? settings.lora->rank : 0,
                           .bf16_weights = tensor_store && TensorStore::bf16_weights(false)});
  MemoryPlan plan;
  plan.params = counts.params;
  plan.activations = transformer.activation_bytes();
  plan.workspace = transformer.workspace_bytes();
  const size_t fp32 = counts.padded_floats * sizeof(float);
  if (settings.lora) {
    plan_lora(plan, config, settings);
  } else if (optimizer == "qlion") {
    QftSettings qft;
    qft.outlier_fraction = settings.outlier_fraction;
    qft.grad_accum = settings.grad_accum;
    const QftMemory memory = QftStore::memory(config, qft, placement);
    plan.weights = memory.weights;
    plan.grads = memory.stack + memory.fp32_grads + memory.exchange;
    plan.momentum = memory.momentum;
    plan.workspace += memory.workspace;
  } else if (const ParamCounts state = settings.ranks == 1 ? counts : count_params(dist::fp32_shard_specs(
                                                                       parameter_specs(config), settings.ranks, settings.rank));
             plan_fp32_optimizer(plan, optimizer, state)) {
    // Data-parallel (ZeRO-1): the whole weights and gradients; the state of this rank's share.
    plan.weights = plan.grads = fp32;
  } else if (optimizer == "mixed-adamw") {
    const MixedMemory memory = MixedPrecisionStore::memory(config);
    plan.weights = memory.weights;
    plan.grads = memory.grads;
    plan.weight_copies = memory.weight_copies;
    plan.momentum = plan.variances = memory.moments / 2;
    plan.workspace += memory.workspace;
  } else {
    fail("unknown optimizer '", optimizer, "' (expected qlion, lion, adamw, adamw8bit or mixed-adamw)");
  }
  plan.total = plan.weights + plan.adapters + plan.grads + plan.weight_copies + plan.momentum + plan.variances + plan.activations;
  plan.peak = plan.total + plan.workspace;
  return plan;
}

nlohmann::json plan_to_json(const MemoryPlan& plan) {
  return {{"params", plan.params},       {"weights", plan.weights},     {"adapters", plan.adapters},
          {"grads", plan.grads},
          {"weight_copies", plan.weight_copies}, {"momentum", plan.momentum}, {"variances", plan.variances},
          {"activations", plan.activations}, {"total", plan.total},     {"workspace", plan.workspace},
          {"peak", plan.peak}};
}

std::string plan_table(const MemoryPlan& plan, const ModelConfig& config, const PlanSettings& settings) {
  char line[256];
  std::string text;
  const std::string method =
      settings.lora ? "LoRA r=" + std::to_string(settings.lora->rank) + (settings.lora->int8_base ? " INT8 base" : " FP32 base") +
                          " + " + settings.optimizer
                    : settings.optimizer;
  const std::string ranks =
      settings.ranks > 1 ? ", per rank (" + std::to_string(settings.ranks) + " ranks)" : std::string();
  std::snprintf(line, sizeof line, "memory plan: %s, %.3f B parameters, %s, seq %d x batch %d, grad-accum %d%s, %s compute%s\n",
                architecture_name(config.architecture), plan.params / 1e9, method.c_str(),
                settings.seq_len, settings.batch, settings.grad_accum,
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
