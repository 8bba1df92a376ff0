#pragma once
// A PEFT LoRA adapter directory, as `peft` saves and loads it
// (PeftModel.save_pretrained / from_pretrained): adapter_config.json and
// adapter_model.safetensors, whose tensors are the adapters' parameter names
// prefixed with "base_model.model." (PEFT's wrapper of the causal LM).
#include <cstdint>
#include <string>
#include <vector>

#include "io/safetensors.h"

namespace qft {

inline constexpr const char* kPeftPrefix = "base_model.model.";

struct PeftAdapterConfig {
  int rank = 0;
  float alpha = 0.0f;
  float dropout = 0.0f;
  std::vector<std::string> target_modules;  // "q_proj", …
  std::string base_model;                   // base_model_name_or_path
};

// Writes DIR (which must not exist) through DIR.tmp.PID, renamed when complete;
// tensors are named without the prefix and stored as FP32.
void export_peft_adapter(const std::string& directory, const PeftAdapterConfig& config,
                         const std::vector<TensorView>& tensors);
uint64_t export_peft_adapter_bytes(const PeftAdapterConfig& config, const std::vector<TensorView>& tensors);

// DIR/adapter_config.json, checked: a LoRA adapter with r, lora_alpha and
// target_modules as a list; options qft does not implement (DoRA, rsLoRA,
// fan_in_fan_out, trained biases, per-module ranks) are refused by name.
PeftAdapterConfig read_peft_adapter_config(const std::string& directory);

}  // namespace qft
