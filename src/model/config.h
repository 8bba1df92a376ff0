#pragma once
// Hyper-parameters of a LLaMA-family decoder, read from an HF config.json.
#include <string>

#include <nlohmann/json_fwd.hpp>

#include "model/rope.h"

namespace qft {

enum class Architecture { Llama, Mistral, Qwen2 };

struct ModelConfig {
  Architecture architecture = Architecture::Llama;
  int vocab_size = 0;
  int hidden_size = 0;
  int intermediate_size = 0;
  int num_layers = 0;
  int num_heads = 0;
  int num_kv_heads = 0;
  int head_dim = 0;
  int max_position_embeddings = 2048;
  float rope_theta = 10000.0f;
  RopeScaling rope_scaling;
  float rms_norm_eps = 1e-6f;
  bool tie_word_embeddings = false;
  bool qkv_bias = false;  // Qwen2, or LLaMA's attention_bias
  bool o_bias = false;    // LLaMA's attention_bias
  bool mlp_bias = false;  // LLaMA's mlp_bias

  int q_dim() const { return num_heads * head_dim; }
  int kv_dim() const { return num_kv_heads * head_dim; }
};

const char* architecture_name(Architecture architecture);

// Parses and validates; `source` names the file in error messages.
ModelConfig parse_model_config(const nlohmann::json& json, const std::string& source);
ModelConfig load_model_config(const std::string& path);
// The HF config.json for this configuration.
nlohmann::json model_config_to_json(const ModelConfig& config);

}  // namespace qft
