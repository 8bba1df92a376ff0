#pragma once
// Where a model's parameters come from (an HF checkpoint or HF's random
// initialisation), one tensor at a time, and saving an FP32 set.
#include <cstdint>
#include <functional>
#include <memory>
#include <string>

#include "io/hf_checkpoint.h"
#include "model/parameters.h"

namespace qft {

class ModelSource {
 public:
  // config.json plus safetensors weights; checks every tensor's presence
  // and shape up front.
  static ModelSource hf_directory(const std::string& directory);
  // A config.json with random weights: matrices ~ N(0, 0.02²), norm weights
  // 1, biases 0 (HF's defaults), from a counter-based generator.
  static ModelSource random(const std::string& config_path, uint64_t seed);

  const ModelConfig& config() const { return config_; }
  const std::vector<ParamSpec>& specs() const { return specs_; }
  // Writes parameter `index` (of specs()) as float32 into out (its numel).
  void fill(size_t index, float* out) const;

 private:
  ModelConfig config_;
  std::vector<ParamSpec> specs_;
  std::shared_ptr<HfCheckpoint> checkpoint_;  // null for random weights
  uint64_t seed_ = 0;
};

// Every parameter as FP32.
std::unique_ptr<ParamSet> load_fp32_weights(const ModelSource& source);

struct LoadedModel {
  ModelConfig config;
  std::unique_ptr<ParamSet> weights;
};
LoadedModel load_hf_model(const std::string& directory);

// Writes DIR/config.json and DIR/model.safetensors (float32) through a
// temporary directory renamed into place; DIR must not exist. fill(i, out)
// produces parameter i of parameter_specs(config), one at a time.
void save_hf_model(const std::string& directory, const ModelConfig& config,
                   const std::function<void(size_t, float*)>& fill);

}  // namespace qft
