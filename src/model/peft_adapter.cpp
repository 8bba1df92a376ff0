#include "model/peft_adapter.h"

#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "core/error.h"
#include "core/json_integer.h"
#include "io/atomic_file.h"

namespace qft {
namespace {

std::string config_json(const PeftAdapterConfig& config) {
  const nlohmann::json json = {
      {"peft_type", "LORA"},
      {"task_type", "CAUSAL_LM"},
      {"base_model_name_or_path", config.base_model},
      {"r", config.rank},
      {"lora_alpha", config.alpha},
      {"lora_dropout", config.dropout},
      {"target_modules", config.target_modules},
      {"bias", "none"},
      {"fan_in_fan_out", false},
      {"inference_mode", true},
      {"init_lora_weights", true},
      {"modules_to_save", nullptr},
      {"layers_to_transform", nullptr},
      {"layers_pattern", nullptr},
      {"rank_pattern", nlohmann::json::object()},
      {"alpha_pattern", nlohmann::json::object()},
      {"revision", nullptr},
      {"use_rslora", false},
      {"use_dora", false},
  };
  return json.dump(2) + "\n";
}

std::vector<TensorView> prefixed(const std::vector<TensorView>& tensors) {
  std::vector<TensorView> named = tensors;
  for (TensorView& tensor : named) tensor.name = kPeftPrefix + tensor.name;
  return named;
}

std::vector<TensorInfo> infos(const std::vector<TensorView>& tensors) {
  std::vector<TensorInfo> result;
  for (const TensorView& tensor : tensors) result.push_back({kPeftPrefix + tensor.name, tensor.shape});
  return result;
}

}  // namespace

uint64_t export_peft_adapter_bytes(const PeftAdapterConfig& config, const std::vector<TensorView>& tensors) {
  return config_json(config).size() + safetensors_file_bytes(infos(tensors));
}

void export_peft_adapter(const std::string& directory, const PeftAdapterConfig& config,
                         const std::vector<TensorView>& tensors) {
  write_directory_atomically(directory, export_peft_adapter_bytes(config, tensors), "the adapter " + directory,
                             [&](const std::string& temporary) {
                               write_file_atomically(temporary + "/adapter_config.json", config_json(config));
                               write_safetensors(temporary + "/adapter_model.safetensors", prefixed(tensors));
                             });
}

PeftAdapterConfig read_peft_adapter_config(const std::string& directory) {
  const std::string path = directory + "/adapter_config.json";
  std::ifstream in(path);
  if (!in) fail(path, ": cannot open (a PEFT adapter directory holds adapter_config.json)");
  std::stringstream text;
  text << in.rdbuf();
  const nlohmann::json json = nlohmann::json::parse(text.str(), nullptr, false);
  if (!json.is_object()) fail(path, ": not a JSON object");
  const auto value = [&](const char* key) {
    if (!json.contains(key)) fail(path, ": '", key, "' is missing");
    return json.at(key);
  };
  if (value("peft_type") != "LORA") fail(path, ": 'peft_type' is ", value("peft_type").dump(), ", not \"LORA\"");
  // Values PEFT writes when an option is off.
  const auto is_set = [&](const char* key) {
    if (!json.contains(key)) return false;
    const nlohmann::json& v = json.at(key);
    return !(v.is_null() || v == false || v == "none" || (v.is_structured() && v.empty()));
  };
  const std::pair<const char*, const char*> unsupported[] = {
      {"use_dora", "DoRA"},          {"use_rslora", "rsLoRA scaling"}, {"fan_in_fan_out", "transposed weights"},
      {"bias", "trained biases"},    {"rank_pattern", "per-module ranks"}, {"alpha_pattern", "per-module alphas"},
      {"modules_to_save", "whole modules trained"}, {"layers_to_transform", "some layers only"}};
  for (const auto& [key, what] : unsupported) {
    if (is_set(key)) fail(path, ": '", key, "' is set (", what, "), which qft does not implement");
  }
  PeftAdapterConfig config;
  config.rank = json_integer<int>(value("r"), path + ": 'r'", 1);
  if (!value("lora_alpha").is_number()) fail(path, ": 'lora_alpha' is not a number");
  config.alpha = value("lora_alpha").get<float>();
  if (json.contains("lora_dropout") && json.at("lora_dropout").is_number()) config.dropout = json.at("lora_dropout").get<float>();
  const nlohmann::json& targets = value("target_modules");
  if (!targets.is_array()) fail(path, ": 'target_modules' must be a list of module names");
  for (const nlohmann::json& target : targets) {
    if (!target.is_string()) fail(path, ": 'target_modules' holds ", target.dump(), ", not a module name");
    config.target_modules.push_back(target.get<std::string>());
  }
  if (json.contains("base_model_name_or_path") && json.at("base_model_name_or_path").is_string()) {
    config.base_model = json.at("base_model_name_or_path").get<std::string>();
  }
  return config;
}

}  // namespace qft
