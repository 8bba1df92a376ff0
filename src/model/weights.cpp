#include "model/weights.h"

#include <unistd.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "core/error.h"
#include "quant/philox.h"

namespace qft {
namespace {

constexpr float kInitStddev = 0.02f;

std::string shape_text(const Shape& shape) {
  std::string text = "[";
  for (size_t i = 0; i < shape.size(); ++i) text += (i ? ", " : "") + std::to_string(shape[i]);
  return text + "]";
}

// N(0, stddev²) by Box–Muller on Philox output: element j of tensor `tensor`
// depends only on (seed, tensor, j), so filling is parallel and repeatable.
void fill_normal(float* out, size_t count, float stddev, uint64_t seed, uint32_t tensor) {
  const PhiloxKey key = {static_cast<uint32_t>(seed), static_cast<uint32_t>(seed >> 32)};
  const int64_t blocks = static_cast<int64_t>((count + 3) / 4);
#pragma omp parallel for schedule(static)
  for (int64_t block = 0; block < blocks; ++block) {
    const PhiloxCounter bits = philox4x32_10(
        {static_cast<uint32_t>(block), static_cast<uint32_t>(block >> 32), tensor, 0x1417u}, key);
    for (int pair = 0; pair < 2; ++pair) {
      // 1 − u keeps the logarithm's argument in (0, 1].
      const float radius = std::sqrt(-2.0f * std::log(1.0f - uniform_from_bits(bits[2 * pair])));
      const float angle = 6.28318530717958647692f * uniform_from_bits(bits[2 * pair + 1]);
      const size_t j = static_cast<size_t>(block) * 4 + 2 * pair;
      if (j < count) out[j] = stddev * radius * std::cos(angle);
      if (j + 1 < count) out[j + 1] = stddev * radius * std::sin(angle);
    }
  }
}

}  // namespace

ModelSource ModelSource::hf_directory(const std::string& directory) {
  ModelSource source;
  source.config_ = load_model_config(directory + "/config.json");
  source.specs_ = parameter_specs(source.config_);
  source.checkpoint_ = std::make_shared<HfCheckpoint>(directory);
  for (const ParamSpec& spec : source.specs_) {
    const TensorRecord& record = source.checkpoint_->tensor(spec.name);
    if (record.shape != spec.shape) {
      fail(*record.file, ": tensor '", spec.name, "' has shape ", shape_text(record.shape),
           ", config.json implies ", shape_text(spec.shape));
    }
  }
  return source;
}

ModelSource ModelSource::random(const std::string& config_path, uint64_t seed) {
  ModelSource source;
  source.config_ = load_model_config(config_path);
  source.specs_ = parameter_specs(source.config_);
  source.seed_ = seed;
  return source;
}

void ModelSource::fill(size_t index, float* out) const {
  const ParamSpec& spec = specs_.at(index);
  if (checkpoint_) {
    convert_to_f32(out, checkpoint_->tensor(spec.name));
    return;
  }
  const size_t count = static_cast<size_t>(shape_numel(spec.shape));
  switch (spec.role) {
    case ParamRole::Embedding:
    case ParamRole::LmHead:
    case ParamRole::Linear:
      fill_normal(out, count, kInitStddev, seed_, static_cast<uint32_t>(index));
      break;
    case ParamRole::Norm:
      std::fill(out, out + count, 1.0f);
      break;
    case ParamRole::Bias:
      std::fill(out, out + count, 0.0f);
      break;
  }
}

std::unique_ptr<ParamSet> load_fp32_weights(const ModelSource& source) {
  auto weights = std::make_unique<ParamSet>(MemCategory::Weights, source.specs());
  for (size_t i = 0; i < source.specs().size(); ++i) source.fill(i, weights->data(i));
  return weights;
}

LoadedModel load_hf_model(const std::string& directory) {
  const ModelSource source = ModelSource::hf_directory(directory);
  return {source.config(), load_fp32_weights(source)};
}

void save_hf_model(const std::string& directory, const ModelConfig& config,
                   const std::function<void(size_t, float*)>& fill) {
  namespace fs = std::filesystem;
  if (fs::exists(directory)) fail(directory, ": already exists");
  const fs::path temporary = directory + ".tmp." + std::to_string(::getpid());
  fs::create_directories(temporary);
  try {
    std::ofstream(temporary / "config.json") << model_config_to_json(config).dump(2) << "\n";
    std::vector<TensorInfo> tensors;
    for (const ParamSpec& spec : parameter_specs(config)) tensors.push_back({spec.name, spec.shape});
    write_safetensors((temporary / "model.safetensors").string(), tensors, fill);
    fs::rename(temporary, directory);
  } catch (...) {
    fs::remove_all(temporary);
    throw;
  }
}

}  // namespace qft
