#include "model/hf_export.h"

#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "core/error.h"
#include "model/parameters.h"

namespace qft {
namespace {

const char* torch_dtype(DType dtype) {
  switch (dtype) {
    case DType::BF16: return "bfloat16";
    case DType::F16: return "float16";
    default: return "float32";
  }
}

void write_text(const std::filesystem::path& path, const std::string& text) {
  std::ofstream file(path, std::ios::binary);
  file << text;
  if (!file.flush()) fail(path.string(), ": write failed");
}

}  // namespace

DType parse_export_dtype(const std::string& name) {
  if (name == "bf16") return DType::BF16;
  if (name == "f16") return DType::F16;
  if (name == "f32") return DType::F32;
  fail("unknown dtype '", name, "' (expected bf16, f16 or f32)");
}

void export_hf_model(const std::string& directory, const ModelConfig& config,
                     const std::function<void(size_t, float*)>& fill, const HfExport& options) {
  namespace fs = std::filesystem;
  if (fs::exists(directory)) fail(directory, ": already exists");
  const fs::path temporary = directory + ".tmp." + std::to_string(::getpid());
  fs::create_directories(temporary);
  try {
    nlohmann::json json = model_config_to_json(config);
    json["torch_dtype"] = torch_dtype(options.dtype);
    nlohmann::json generation = {{"_from_model_config", true}};
    if (options.bos_token_id >= 0) json["bos_token_id"] = generation["bos_token_id"] = options.bos_token_id;
    if (options.eos_token_id >= 0) json["eos_token_id"] = generation["eos_token_id"] = options.eos_token_id;
    write_text(temporary / "config.json", json.dump(2) + "\n");
    write_text(temporary / "generation_config.json", generation.dump(2) + "\n");
    if (options.write_files) options.write_files(temporary.string());
    std::vector<TensorInfo> tensors;
    for (const ParamSpec& spec : parameter_specs(config)) tensors.push_back({spec.name, spec.shape});
    write_safetensors((temporary / "model.safetensors").string(), tensors, fill, options.dtype);
    fs::rename(temporary, directory);
  } catch (...) {
    fs::remove_all(temporary);
    throw;
  }
}

}  // namespace qft
