#pragma once
// RoPE's inverse frequencies and the factor on cos/sin, for the rope_scaling
// types transformers 4.49 implements for LLaMA that qft verifies against it:
// default, linear, llama3 (Llama-3.1/3.2/3.3), yarn. The others (dynamic,
// longrope) are refused by name when the config is read. GGUF files carry
// Llama-3's scaling as llama.cpp does, one divisor per frequency
// (rope_freqs.weight).
#include <string>
#include <vector>

#include <nlohmann/json_fwd.hpp>

namespace qft {

struct RopeScaling {
  enum class Type { None, Linear, Llama3, Yarn, FrequencyFactors };
  Type type = Type::None;
  float factor = 1;
  // llama3: wavelengths beyond original / low_freq_factor are divided by
  // factor, those below original / high_freq_factor kept, a smooth blend between.
  float low_freq_factor = 1, high_freq_factor = 4;
  int original_max_position_embeddings = 0;
  // yarn: the ramp between beta_fast and beta_slow rotations; the cos/sin
  // factor (0.1 ln(factor) + 1 unless given).
  float beta_fast = 32, beta_slow = 1;
  float attention_factor = 0;  // 0: not given
  // FrequencyFactors (a GGUF's rope_freqs.weight): inverse frequency i is the
  // default one divided by factors[i]; transformers' config has no such type.
  std::vector<float> frequency_factors;  // (head_dim / 2)
};

// Parses config.json's rope_scaling (null: none); `source` names the file.
RopeScaling parse_rope_scaling(const nlohmann::json& value, const std::string& source);
// The rope_scaling object for config.json (null for none).
nlohmann::json rope_scaling_to_json(const RopeScaling& scaling);
const char* rope_type_name(RopeScaling::Type type);

struct RopeFrequencies {
  std::vector<float> inverse;  // (head_dim / 2)
  float attention_factor = 1;  // multiplies cos and sin
};

// The per-frequency divisors llama.cpp reads from rope_freqs.weight: as its
// converter computes them for llama3, as stored for FrequencyFactors; empty
// for the other types.
std::vector<float> llama_cpp_frequency_factors(const RopeScaling& scaling, int head_dim, float theta);

// As transformers computes them in float32 (modeling_rope_utils.py).
RopeFrequencies rope_frequencies(const RopeScaling& scaling, int head_dim, float theta, int max_position_embeddings);

}  // namespace qft
