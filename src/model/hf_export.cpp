#include "model/hf_export.h"

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

// config.json, generation_config.json and the caller's files.
NamedFiles small_files(const ModelConfig& config, const HfExport& options) {
  if (config.rope_scaling.type == RopeScaling::Type::FrequencyFactors) {
    fail("the model's RoPE scaling is a GGUF's per-frequency factors (rope_freqs.weight), which transformers' "
         "config.json cannot express; export it as GGUF, or start from the HF checkpoint");
  }
  nlohmann::json json = model_config_to_json(config);
  json["torch_dtype"] = torch_dtype(options.dtype);
  nlohmann::json generation = {{"_from_model_config", true}};
  if (options.bos_token_id >= 0) json["bos_token_id"] = generation["bos_token_id"] = options.bos_token_id;
  if (options.eos_token_id >= 0) json["eos_token_id"] = generation["eos_token_id"] = options.eos_token_id;
  json["pad_token_id"] = options.pad_token_id >= 0 ? nlohmann::json(options.pad_token_id) : nlohmann::json();
  NamedFiles files = {{"config.json", json.dump(2) + "\n"}, {"generation_config.json", generation.dump(2) + "\n"}};
  files.insert(files.end(), options.files.begin(), options.files.end());
  return files;
}

std::vector<TensorInfo> tensor_infos(const ModelConfig& config) {
  std::vector<TensorInfo> tensors;
  for (const ParamSpec& spec : parameter_specs(config)) tensors.push_back({spec.name, spec.shape});
  return tensors;
}

}  // namespace

DType parse_export_dtype(const std::string& name) {
  if (name == "bf16") return DType::BF16;
  if (name == "f16") return DType::F16;
  if (name == "f32") return DType::F32;
  fail("unknown dtype '", name, "' (expected bf16, f16 or f32)");
}

uint64_t export_hf_bytes(const ModelConfig& config, const HfExport& options) {
  uint64_t bytes = safetensors_file_bytes(tensor_infos(config), options.dtype);
  for (const auto& [name, contents] : small_files(config, options)) bytes += contents.size();
  return bytes;
}

void export_hf_model(const std::string& directory, const ModelConfig& config,
                     const std::function<void(size_t, float*)>& fill, const HfExport& options) {
  write_directory_atomically(directory, export_hf_bytes(config, options), "the export " + directory,
                             [&](const std::string& temporary) {
                               for (const auto& [name, contents] : small_files(config, options)) {
                                 write_file_atomically(temporary + "/" + name, contents);
                               }
                               write_safetensors(temporary + "/model.safetensors", tensor_infos(config), fill,
                                                 options.dtype);
                             });
}

}  // namespace qft
