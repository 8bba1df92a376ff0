#pragma once
// Writing a model as a GGUF file llama.cpp loads: `{arch}.*` hyper-parameters,
// the tokenizer's tokenizer.ggml.* metadata, and tensors under llama.cpp's
// names with Q/K rows interleaved again for its RoPE (LLaMA and Mistral).
#include <functional>
#include <string>

#include "io/gguf_writer.h"
#include "model/config.h"

namespace qft {

class Tokenizer;

struct GgufExport {
  GgmlType matrix_type = GgmlType::BF16;  // F32, F16, BF16 or Q8_0; vectors stay F32
  std::string name;                       // general.name
  // Adds the tokenizer.* metadata.
  std::function<void(GgufWriter&)> add_tokenizer;
};

// fill(i, out) produces parameter i of parameter_specs(config) in FP32. The
// export refuses before writing when the file system has less free space
// than export_gguf_bytes.
void export_gguf_model(const std::string& path, const ModelConfig& config,
                       const std::function<void(size_t, float*)>& fill, const GgufExport& options);
// The bytes export_gguf_model writes.
uint64_t export_gguf_bytes(const ModelConfig& config, const GgufExport& options);

// tokenizer.ggml.* metadata of a byte-level BPE tokenizer ("gpt2" in llama.cpp).
void add_gguf_tokenizer(GgufWriter& writer, const Tokenizer& tokenizer);
// Every tokenizer.* key of another GGUF file, copied.
void copy_gguf_tokenizer(GgufWriter& writer, const GgufFile& source);

// "bf16" | "f16" | "f32" | "q8_0" → type; throws naming the choices.
GgmlType parse_gguf_matrix_type(const std::string& name);

}  // namespace qft
