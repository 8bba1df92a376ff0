#pragma once
// Filling a ParamSet: from an HF checkpoint, or HF's random initialisation.
#include <cstdint>
#include <memory>
#include <string>

#include "model/parameters.h"

namespace qft {

class HfCheckpoint;

// Checks every tensor's presence and shape before converting it to float32.
void load_weights(ParamSet& params, const HfCheckpoint& checkpoint);

// Matrices ~ N(0, 0.02²), norm weights 1, biases 0 (HF's defaults).
void init_random_weights(ParamSet& params, uint64_t seed);

struct LoadedModel {
  ModelConfig config;
  std::unique_ptr<ParamSet> weights;
};

// An HF directory: config.json plus safetensors weights.
LoadedModel load_hf_model(const std::string& directory);
// Writes DIR/config.json and DIR/model.safetensors (float32) through a
// temporary directory renamed into place; DIR must not exist.
void save_hf_model(const std::string& directory, const ModelConfig& config, const ParamSet& weights);
// A config.json with randomly initialised weights.
LoadedModel random_model(const std::string& config_path, uint64_t seed);

}  // namespace qft
