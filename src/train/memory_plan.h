#pragma once
// The memory a training configuration will use, per Table 1 column of the
// QFT paper, computed from the configuration alone with the same layout
// functions the allocations use.
#include <cstdint>
#include <optional>
#include <string>

#include <nlohmann/json_fwd.hpp>

#include "core/memory.h"
#include "model/config.h"
#include "train/settings.h"

namespace qft {

struct MemoryPlan {
  int64_t params = 0;
  Device device = Device::Host;  // where the bytes below live
  // LoRA: weights are the frozen base, grads and optimizer state the adapters'.
  size_t weights = 0, adapters = 0, grads = 0, weight_copies = 0, momentum = 0, variances = 0, activations = 0;
  size_t total = 0;      // the columns above
  size_t workspace = 0;  // de-quantized layers, kernel scratch, transients
  size_t peak = 0;       // total + workspace, or more while QLion's state is built
};

// What training with `settings` on micro-batches of `shape` allocates, for
// one rank. Throws on an optimizer LoRA cannot use, or one that does not run
// data-parallel over shape.ranks.
MemoryPlan plan_memory(const ModelConfig& config, const TrainingSettings& settings, const PlanShape& shape);

nlohmann::json plan_to_json(const MemoryPlan& plan);
// A table in GiB and bytes per parameter, with a heading naming the settings.
std::string plan_table(const MemoryPlan& plan, const ModelConfig& config, const TrainingSettings& settings,
                       const PlanShape& shape);

// Bytes of physical memory of this machine.
size_t physical_memory_bytes();
// "16G", "24GiB", "1.5T", "800M" or plain bytes.
size_t parse_memory_size(const std::string& text);

}  // namespace qft
