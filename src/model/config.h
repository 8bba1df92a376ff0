#pragma once
// Hyper-parameters of a LLaMA-family decoder, read from an HF config.json.
#include <string>

#include <nlohmann/json_fwd.hpp>

#include "model/rope.h"

namespace qft {

enum class Architecture { Llama, Mistral, Qwen2, Gemma2, Phi3 };
// The MLP's gate: SwiGLU (silu) or Gemma's GeGLU (tanh-approximate GELU).
enum class Activation { Silu, GeluTanh };

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
  // config.json's top-level original_max_position_embeddings (Phi-3's, 4096
  // by default; 0: none), which longrope RoPE scaling reads.
  int original_max_position_embeddings = 0;
  float rope_theta = 10000.0f;
  RopeScaling rope_scaling;
  float rms_norm_eps = 1e-6f;
  bool tie_word_embeddings = false;
  bool qkv_bias = false;  // Qwen2, or LLaMA's attention_bias
  bool o_bias = false;    // LLaMA's attention_bias
  bool mlp_bias = false;  // LLaMA's mlp_bias
  Activation activation = Activation::Silu;
  // A query sees the `sliding_window` most recent keys (itself included) in
  // the layers sliding_layer() names; 0: every earlier key everywhere.
  int sliding_window = 0;
  // Gemma-2 (0 where a model has none of it): attention scores scaled by
  // 1/√query_pre_attn_scalar instead of 1/√head_dim, and attention scores
  // and final logits soft-capped to cap · tanh(x / cap).
  float query_pre_attn_scalar = 0.0f;
  float attn_logit_softcapping = 0.0f;
  float final_logit_softcapping = 0.0f;

  int q_dim() const { return num_heads * head_dim; }
  int kv_dim() const { return num_kv_heads * head_dim; }
  bool gemma() const { return architecture == Architecture::Gemma2; }
  // Gemma's RMSNorm scales by 1 + weight; its embeddings are multiplied by
  // √hidden_size, rounded to FP32 as transformers does; and each block's
  // output is normed before the residual add (post_attention_layernorm,
  // post_feedforward_layernorm).
  float norm_offset() const { return gemma() ? 1.0f : 0.0f; }
  float embedding_scale() const;
  bool sandwich_norms() const { return gemma(); }
  // Phi-3 stores q/k/v as one qkv_proj and gate/up as one gate_up_proj
  // (rows in that order), in its files and in qft's stores.
  bool fused_projections() const { return architecture == Architecture::Phi3; }
  // Gemma-2 slides every other layer, starting with layer 0; Mistral all.
  bool sliding_layer(int layer) const { return sliding_window > 0 && (!gemma() || layer % 2 == 0); }
  int attention_window(int layer) const { return sliding_layer(layer) ? sliding_window : 0; }
  float attention_scale() const;  // 0: the kernels' default 1/√head_dim
};

const char* architecture_name(Architecture architecture);

// Parses and validates; `source` names the file in error messages.
ModelConfig parse_model_config(const nlohmann::json& json, const std::string& source);
ModelConfig load_model_config(const std::string& path);
// The HF config.json for this configuration.
nlohmann::json model_config_to_json(const ModelConfig& config);

}  // namespace qft
