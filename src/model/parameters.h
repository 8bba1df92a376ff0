#pragma once
// Named parameters (HF names) in one tagged allocation, and typed views of a
// LLaMA-family model resolved by name.
#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "core/memory.h"
#include "core/shape.h"
#include "model/config.h"

namespace qft {

enum class ParamRole { Embedding, LmHead, Linear, Norm, Bias };

struct ParamSpec {
  std::string name;
  Shape shape;
  ParamRole role;
};

// Every parameter of the model, in HF order and naming.
std::vector<ParamSpec> parameter_specs(const ModelConfig& config);

class ParamSet {
 public:
  ParamSet(MemCategory category, std::vector<ParamSpec> specs);

  const std::vector<ParamSpec>& specs() const { return specs_; }
  float* data(size_t index) { return storage_.data() + offsets_[index]; }
  const float* data(size_t index) const { return storage_.data() + offsets_[index]; }
  size_t numel(size_t index) const { return static_cast<size_t>(shape_numel(specs_[index].shape)); }
  // Throws naming the parameter when absent.
  float* get(const std::string& name);
  float* find(const std::string& name);  // nullptr when absent

  // The whole storage; padding between parameters stays zero.
  float* all() { return storage_.data(); }
  const float* all() const { return storage_.data(); }
  size_t total_numel() const { return offsets_.back(); }
  void zero();

 private:
  std::vector<ParamSpec> specs_;
  std::vector<size_t> offsets_;
  std::map<std::string, size_t> index_;
  Buffer<float> storage_;
};

struct LinearParams {
  float* weight = nullptr;  // (out, in)
  float* bias = nullptr;    // (out) or nullptr
};

struct LayerParams {
  float* input_norm = nullptr;  // (C)
  LinearParams q, k, v, o;
  float* post_norm = nullptr;  // (C)
  LinearParams gate, up, down;
};

struct ModelParams {
  float* embed = nullptr;       // (V, C)
  float* final_norm = nullptr;  // (C)
  float* lm_head = nullptr;     // (V, C); the embedding when tied
  std::vector<LayerParams> layers;
};

ModelParams bind_model_params(const ModelConfig& config, ParamSet& params);

std::string layer_param_name(int layer, const std::string& suffix);

}  // namespace qft
