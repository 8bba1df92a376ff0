#pragma once
// Writing a model as an HF directory that transformers and vLLM load:
// config.json, model.safetensors (F32, F16 or BF16), generation_config.json
// and the tokenizer's files, through a temporary directory renamed into
// place, so a failure leaves nothing behind.
#include <functional>
#include <string>

#include "io/atomic_file.h"
#include "io/safetensors.h"
#include "model/config.h"

namespace qft {

struct HfExport {
  DType dtype = DType::BF16;
  NamedFiles files;  // further files (the tokenizer's), written beside the model
  int bos_token_id = -1, eos_token_id = -1;  // for generation_config.json; -1: unknown
  // config.json's pad_token_id; -1: unknown, written as null (Phi3Config's
  // default 32000 would fall outside a smaller vocabulary).
  int pad_token_id = -1;
};

// fill(i, out) produces parameter i of parameter_specs(config) in FP32.
// DIR must not exist; the export refuses before writing anything when its
// file system has less free space than export_hf_bytes.
void export_hf_model(const std::string& directory, const ModelConfig& config,
                     const std::function<void(size_t, float*)>& fill, const HfExport& options);
// The bytes export_hf_model writes, every file counted.
uint64_t export_hf_bytes(const ModelConfig& config, const HfExport& options);

// "bf16" | "f16" | "f32" → DType; throws naming the choices.
DType parse_export_dtype(const std::string& name);

}  // namespace qft
