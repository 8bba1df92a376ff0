#include "model/config.h"

#include <cmath>
#include <fstream>
#include <nlohmann/json.hpp>

#include "core/error.h"

namespace qft {
namespace {

struct ArchitectureName {
  const char* hf_class;
  const char* model_type;
  Architecture architecture;
};

constexpr ArchitectureName kArchitectures[] = {
    {"LlamaForCausalLM", "llama", Architecture::Llama},
    {"MistralForCausalLM", "mistral", Architecture::Mistral},
    {"Qwen2ForCausalLM", "qwen2", Architecture::Qwen2},
    {"Gemma2ForCausalLM", "gemma2", Architecture::Gemma2},
    {"Phi3ForCausalLM", "phi3", Architecture::Phi3},
};

Architecture parse_architecture(const nlohmann::json& json, const std::string& source) {
  std::string name;
  if (json.contains("architectures") && json["architectures"].is_array() &&
      !json["architectures"].empty()) {
    name = json["architectures"][0].get<std::string>();
  } else if (json.contains("model_type")) {
    name = json["model_type"].get<std::string>();
  } else {
    fail(source, ": neither 'architectures' nor 'model_type' is set");
  }
  for (const ArchitectureName& known : kArchitectures) {
    if (name == known.hf_class || name == known.model_type) return known.architecture;
  }
  fail(source, ": unsupported architecture '", name,
       "' (supported: LlamaForCausalLM, MistralForCausalLM, Qwen2ForCausalLM, Gemma2ForCausalLM, "
       "Phi3ForCausalLM)");
}

// Sizes far beyond any released model: a malformed file fails here instead
// of asking for billions of parameters (found by fuzz/gguf_fuzz: a block
// count of 10^9 spent minutes building parameter names).
constexpr int kMaxLayers = 4096, kMaxHeads = 4096, kMaxWidth = 1 << 20, kMaxVocabulary = 1 << 24;
constexpr int kMaxPositions = 1 << 24;

int positive_int(const nlohmann::json& json, const char* key, const std::string& source, int limit) {
  if (!json.contains(key) || !json[key].is_number_integer()) {
    fail(source, ": missing or non-integer '", key, "'");
  }
  const int64_t value = json[key].get<int64_t>();
  if (value <= 0) fail(source, ": '", key, "' must be positive, got ", value);
  if (value > limit) fail(source, ": '", key, "' = ", value, " is beyond any model qft accepts (at most ", limit, ")");
  return static_cast<int>(value);
}

template <class T>
T optional_value(const nlohmann::json& json, const char* key, T fallback) {
  if (!json.contains(key) || json[key].is_null()) return fallback;
  return json[key].get<T>();
}

// The gate activation: Gemma-2 names it hidden_activation (which its code
// reads), the others hidden_act.
Activation parse_activation(const nlohmann::json& json, Architecture architecture, const std::string& source) {
  const bool gemma = architecture == Architecture::Gemma2;
  const char* key = gemma && json.contains("hidden_activation") && !json["hidden_activation"].is_null()
                        ? "hidden_activation" : "hidden_act";
  const std::string name = optional_value<std::string>(json, key, gemma ? "gelu_pytorch_tanh" : "silu");
  if (!gemma && name == "silu") return Activation::Silu;
  if (gemma && name == "gelu_pytorch_tanh") return Activation::GeluTanh;
  fail(source, ": unsupported ", key, " '", name, "' for ", architecture_name(architecture), " (qft implements ",
       gemma ? "gelu_pytorch_tanh" : "silu", ")");
}

// A positive window, or 0 for none (null or absent).
int sliding_window(const nlohmann::json& json, const std::string& source) {
  if (!json.contains("sliding_window") || json["sliding_window"].is_null()) return 0;
  return positive_int(json, "sliding_window", source, kMaxPositions);
}

float optional_cap(const nlohmann::json& json, const char* key, float fallback, const std::string& source) {
  const float cap = optional_value<float>(json, key, fallback);
  if (json.contains(key) && json[key].is_null()) return 0.0f;
  if (!(cap >= 0)) fail(source, ": '", key, "' must be positive or null, got ", cap);
  return cap;
}

void parse_gemma2(ModelConfig& config, const nlohmann::json& json, const std::string& source) {
  // Gemma2Config's defaults for what a file leaves out.
  config.query_pre_attn_scalar = optional_value<float>(json, "query_pre_attn_scalar", 256.0f);
  if (!(config.query_pre_attn_scalar > 0)) fail(source, ": 'query_pre_attn_scalar' must be positive");
  config.attn_logit_softcapping = optional_cap(json, "attn_logit_softcapping", 50.0f, source);
  config.final_logit_softcapping = optional_cap(json, "final_logit_softcapping", 30.0f, source);
  config.sliding_window = json.contains("sliding_window") ? sliding_window(json, source) : 4096;
}

// What Phi-3's config has beyond LLaMA's: dropouts (qft trains without
// them), partial RoPE (not implemented), and its rope_scaling's older names.
void parse_phi3(ModelConfig& config, const nlohmann::json& json, const std::string& source) {
  for (const char* key : {"resid_pdrop", "embd_pdrop", "attention_dropout"}) {
    if (optional_value<float>(json, key, 0.0f) != 0.0f) fail(source, ": '", key, "' must be 0 (qft trains without dropout)");
  }
  if (optional_value<float>(json, "partial_rotary_factor", 1.0f) != 1.0f) {
    fail(source, ": partial_rotary_factor other than 1 (partial RoPE) is not implemented");
  }
  config.sliding_window = sliding_window(json, source);
}

// Phi3Config renames rope_scaling types "su" and "yarn" to "longrope".
nlohmann::json phi3_rope_scaling(nlohmann::json scaling) {
  if (scaling.is_object() && !scaling.contains("rope_type") && scaling.contains("type") && scaling["type"].is_string() &&
      (scaling["type"] == "su" || scaling["type"] == "yarn")) {
    scaling["type"] = "longrope";
  }
  return scaling;
}

}  // namespace

float ModelConfig::embedding_scale() const {
  return gemma() ? static_cast<float>(std::sqrt(static_cast<double>(hidden_size))) : 1.0f;
}

float ModelConfig::attention_scale() const {
  return query_pre_attn_scalar > 0 ? static_cast<float>(1.0 / std::sqrt(static_cast<double>(query_pre_attn_scalar)))
                                   : 0.0f;
}

const char* architecture_name(Architecture architecture) {
  for (const ArchitectureName& known : kArchitectures) {
    if (known.architecture == architecture) return known.hf_class;
  }
  return "?";
}

ModelConfig parse_model_config(const nlohmann::json& json, const std::string& source) {
  if (!json.is_object()) fail(source, ": not a JSON object");
  ModelConfig config;
  try {
    config.architecture = parse_architecture(json, source);
    config.vocab_size = positive_int(json, "vocab_size", source, kMaxVocabulary);
    config.hidden_size = positive_int(json, "hidden_size", source, kMaxWidth);
    config.intermediate_size = positive_int(json, "intermediate_size", source, kMaxWidth);
    config.num_layers = positive_int(json, "num_hidden_layers", source, kMaxLayers);
    config.num_heads = positive_int(json, "num_attention_heads", source, kMaxHeads);
    config.num_kv_heads = json.contains("num_key_value_heads") && !json["num_key_value_heads"].is_null()
                              ? positive_int(json, "num_key_value_heads", source, kMaxHeads)
                              : config.num_heads;
    config.head_dim = json.contains("head_dim") && !json["head_dim"].is_null()
                          ? positive_int(json, "head_dim", source, kMaxWidth)
                          : config.hidden_size / config.num_heads;
    config.max_position_embeddings = json.contains("max_position_embeddings") && !json["max_position_embeddings"].is_null()
                                         ? positive_int(json, "max_position_embeddings", source, kMaxPositions)
                                         : 2048;
    config.rope_theta = optional_value<float>(json, "rope_theta", 10000.0f);
    config.rms_norm_eps = optional_value<float>(json, "rms_norm_eps", 1e-6f);
    config.tie_word_embeddings = optional_value<bool>(json, "tie_word_embeddings", config.gemma());
    const bool attention_bias = optional_value<bool>(json, "attention_bias", false);
    config.qkv_bias = config.architecture == Architecture::Qwen2 || attention_bias;
    config.o_bias = (config.architecture == Architecture::Llama || config.gemma()) && attention_bias;
    config.mlp_bias = config.architecture == Architecture::Llama && optional_value<bool>(json, "mlp_bias", false);
    config.activation = parse_activation(json, config.architecture, source);
    if (config.architecture == Architecture::Mistral) config.sliding_window = sliding_window(json, source);
    if (config.architecture == Architecture::Qwen2 && optional_value<bool>(json, "use_sliding_window", false)) {
      fail(source, ": Qwen2's use_sliding_window is not implemented (its windows depend on max_window_layers)");
    }
    if (config.gemma()) parse_gemma2(config, json, source);
    const bool phi3 = config.architecture == Architecture::Phi3;
    if (phi3 || (json.contains("original_max_position_embeddings") && !json["original_max_position_embeddings"].is_null())) {
      config.original_max_position_embeddings =
          json.contains("original_max_position_embeddings") && !json["original_max_position_embeddings"].is_null()
              ? positive_int(json, "original_max_position_embeddings", source, kMaxPositions)
              : 4096;  // Phi3Config's default
    }
    if (phi3) parse_phi3(config, json, source);
    if (json.contains("rope_scaling")) {
      config.rope_scaling = parse_rope_scaling(phi3 ? phi3_rope_scaling(json["rope_scaling"]) : json["rope_scaling"], source,
                                               config.head_dim, config.max_position_embeddings,
                                               config.original_max_position_embeddings);
      config.rope_scaling.switches_to_long = phi3;
    }
  } catch (const nlohmann::json::exception& error) {
    fail(source, ": ", error.what());
  }
  if (config.num_heads % config.num_kv_heads != 0) {
    fail(source, ": num_attention_heads (", config.num_heads,
         ") is not a multiple of num_key_value_heads (", config.num_kv_heads, ")");
  }
  if (config.head_dim % 2 != 0) fail(source, ": head_dim must be even for RoPE");
  if (!(config.rope_theta > 0) || !(config.rms_norm_eps > 0)) {
    fail(source, ": rope_theta and rms_norm_eps must be positive");
  }
  return config;
}

ModelConfig load_model_config(const std::string& path) {
  std::ifstream file(path);
  if (!file) fail(path, ": cannot open");
  nlohmann::json json;
  try {
    json = nlohmann::json::parse(file);
  } catch (const nlohmann::json::exception& error) {
    fail(path, ": malformed JSON: ", error.what());
  }
  return parse_model_config(json, path);
}

nlohmann::json model_config_to_json(const ModelConfig& config) {
  nlohmann::json json;
  for (const ArchitectureName& known : kArchitectures) {
    if (known.architecture == config.architecture) {
      json["architectures"] = {known.hf_class};
      json["model_type"] = known.model_type;
    }
  }
  json["vocab_size"] = config.vocab_size;
  json["hidden_size"] = config.hidden_size;
  json["intermediate_size"] = config.intermediate_size;
  json["num_hidden_layers"] = config.num_layers;
  json["num_attention_heads"] = config.num_heads;
  json["num_key_value_heads"] = config.num_kv_heads;
  json["head_dim"] = config.head_dim;
  json["max_position_embeddings"] = config.max_position_embeddings;
  if (config.original_max_position_embeddings > 0) {
    json["original_max_position_embeddings"] = config.original_max_position_embeddings;
  }
  json["rope_theta"] = config.rope_theta;
  if (config.rope_scaling.type != RopeScaling::Type::None) json["rope_scaling"] = rope_scaling_to_json(config.rope_scaling);
  json["rms_norm_eps"] = config.rms_norm_eps;
  json["tie_word_embeddings"] = config.tie_word_embeddings;
  json["hidden_act"] = config.activation == Activation::Silu ? "silu" : "gelu_pytorch_tanh";
  if (config.architecture == Architecture::Mistral || config.architecture == Architecture::Phi3) {
    json["sliding_window"] = config.sliding_window > 0 ? nlohmann::json(config.sliding_window) : nlohmann::json();
  }
  if (config.gemma()) {
    json["hidden_activation"] = "gelu_pytorch_tanh";
    const float scalar = config.query_pre_attn_scalar;  // an integer in every released config
    json["query_pre_attn_scalar"] = scalar == std::floor(scalar) ? nlohmann::json(static_cast<int64_t>(scalar)) : nlohmann::json(scalar);
    json["sliding_window"] = config.sliding_window;
    const auto cap = [](float value) { return value > 0 ? nlohmann::json(value) : nlohmann::json(); };
    json["attn_logit_softcapping"] = cap(config.attn_logit_softcapping);
    json["final_logit_softcapping"] = cap(config.final_logit_softcapping);
    json["attention_bias"] = config.qkv_bias;
  }
  if (config.architecture == Architecture::Llama) {
    json["attention_bias"] = config.qkv_bias;
    json["mlp_bias"] = config.mlp_bias;
  }
  json["torch_dtype"] = "float32";
  return json;
}

}  // namespace qft
