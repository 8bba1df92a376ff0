#include "model/weights.h"

#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <random>

#include "core/error.h"
#include "io/hf_checkpoint.h"

namespace qft {
namespace {

std::string shape_text(const Shape& shape) {
  std::string text = "[";
  for (size_t i = 0; i < shape.size(); ++i) text += (i ? ", " : "") + std::to_string(shape[i]);
  return text + "]";
}

}  // namespace

void load_weights(ParamSet& params, const HfCheckpoint& checkpoint) {
  const auto& specs = params.specs();
  for (size_t i = 0; i < specs.size(); ++i) {
    const TensorRecord& record = checkpoint.tensor(specs[i].name);
    if (record.shape != specs[i].shape) {
      fail(*record.file, ": tensor '", specs[i].name, "' has shape ", shape_text(record.shape),
           ", config.json implies ", shape_text(specs[i].shape));
    }
    convert_to_f32(params.data(i), record);
  }
}

void init_random_weights(ParamSet& params, uint64_t seed) {
  std::mt19937_64 generator(seed);
  std::normal_distribution<float> normal(0.0f, 0.02f);
  const auto& specs = params.specs();
  for (size_t i = 0; i < specs.size(); ++i) {
    float* values = params.data(i);
    const size_t count = params.numel(i);
    switch (specs[i].role) {
      case ParamRole::Embedding:
      case ParamRole::LmHead:
      case ParamRole::Linear:
        for (size_t j = 0; j < count; ++j) values[j] = normal(generator);
        break;
      case ParamRole::Norm:
        std::fill(values, values + count, 1.0f);
        break;
      case ParamRole::Bias:
        std::fill(values, values + count, 0.0f);
        break;
    }
  }
}

LoadedModel load_hf_model(const std::string& directory) {
  LoadedModel model;
  model.config = load_model_config(directory + "/config.json");
  const HfCheckpoint checkpoint(directory);
  model.weights = std::make_unique<ParamSet>(MemCategory::Weights, parameter_specs(model.config));
  load_weights(*model.weights, checkpoint);
  return model;
}

void save_hf_model(const std::string& directory, const ModelConfig& config, const ParamSet& weights) {
  namespace fs = std::filesystem;
  if (fs::exists(directory)) fail(directory, ": already exists");
  const fs::path temporary = directory + ".tmp." + std::to_string(::getpid());
  fs::create_directories(temporary);
  try {
    std::ofstream(temporary / "config.json") << model_config_to_json(config).dump(2) << "\n";
    std::vector<TensorView> views;
    for (size_t i = 0; i < weights.specs().size(); ++i) {
      views.push_back({weights.specs()[i].name, weights.specs()[i].shape, weights.data(i)});
    }
    write_safetensors((temporary / "model.safetensors").string(), views);
    fs::rename(temporary, directory);
  } catch (...) {
    fs::remove_all(temporary);
    throw;
  }
}

LoadedModel random_model(const std::string& config_path, uint64_t seed) {
  LoadedModel model;
  model.config = load_model_config(config_path);
  model.weights = std::make_unique<ParamSet>(MemCategory::Weights, parameter_specs(model.config));
  init_random_weights(*model.weights, seed);
  return model;
}

}  // namespace qft
