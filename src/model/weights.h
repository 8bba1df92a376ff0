#pragma once
// Where a model's parameters come from (an HF checkpoint, a GGUF file or HF's
// random initialisation), one tensor at a time, and saving an FP32 set.
#include <cstdint>
#include <functional>
#include <memory>
#include <string>

#include "io/gguf.h"
#include "io/hf_checkpoint.h"
#include "model/parameters.h"

namespace qft {

class ModelSource {
 public:
  // config.json plus safetensors weights; checks every tensor's presence
  // and shape up front.
  static ModelSource hf_directory(const std::string& directory);
  // A llama.cpp GGUF file (architectures llama, mistral, qwen2; tensors F32,
  // F16, BF16, Q8_0, Q4_0, Q4_1, Q5_0, Q5_1, Q4_K, Q5_K, Q6_K): the config
  // from `{arch}.*` metadata, tensors renamed to HF names and de-quantized one
  // at a time; llama's Q/K rows are put back in HF's order (llama.cpp's
  // converter interleaves them per head for its RoPE). Checks every tensor's
  // presence and shape up front, and refuses tensors it would not use.
  static ModelSource gguf_file(const std::string& path);
  // A directory is an HF checkpoint; a file is read as GGUF.
  static ModelSource open(const std::string& path);
  // A config.json with random weights: matrices ~ N(0, 0.02²), norm weights
  // 1, biases 0 (HF's defaults), from a counter-based generator.
  static ModelSource random(const std::string& config_path, uint64_t seed);

  const ModelConfig& config() const { return config_; }
  const std::vector<ParamSpec>& specs() const { return specs_; }
  // Writes parameter `index` (of specs()) as float32 into out (its numel).
  void fill(size_t index, float* out) const;
  // Rows [first, first + rows) of a matrix parameter, out (rows, cols): the
  // same values as fill's (a matrix too large to stage whole: the embedding,
  // the LM head).
  void fill_rows(size_t index, float* out, int first, int rows) const;
  // The GGUF file behind a gguf_file() source (its tokenizer metadata), else null.
  const GgufFile* gguf() const { return gguf_.get(); }

 private:
  // Where parameter i lives in the GGUF file, and the head count whose
  // interleaved rows must be undone (0: stored in HF order).
  struct GgufSlot {
    const GgufTensor* tensor = nullptr;
    int unpermute_heads = 0;
  };

  ModelConfig config_;
  std::vector<ParamSpec> specs_;
  std::shared_ptr<HfCheckpoint> checkpoint_;  // null unless an HF directory
  std::shared_ptr<GgufFile> gguf_;            // null unless a GGUF file
  std::vector<GgufSlot> gguf_slots_;          // per spec, GGUF sources only
  uint64_t seed_ = 0;
};

// Every parameter as FP32.
std::unique_ptr<ParamSet> load_fp32_weights(const ModelSource& source);

struct LoadedModel {
  ModelConfig config;
  std::unique_ptr<ParamSet> weights;
};
LoadedModel load_hf_model(const std::string& directory);
// An HF directory or a GGUF file (ModelSource::open).
LoadedModel load_model(const std::string& path);

}  // namespace qft
