#pragma once
// RoPE's inverse frequencies and the factor on cos/sin, for the rope_scaling
// types transformers 4.49 implements for LLaMA that qft verifies against it:
// default, linear, llama3 (Llama-3.1/3.2/3.3), yarn, longrope (Phi-3's "su").
// dynamic is refused by name when the config is read. GGUF files carry
// Llama-3's scaling as llama.cpp does, one divisor per frequency
// (rope_freqs.weight).
#include <cstddef>
#include <string>
#include <vector>

#include <nlohmann/json_fwd.hpp>

namespace qft {

struct RopeScaling {
  enum class Type { None, Linear, Llama3, Yarn, LongRope, FrequencyFactors };
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
  // longrope: inverse frequency i is the default one divided by
  // short_factors[i] for a sequence of at most original_max_position_embeddings
  // tokens, by long_factors[i] beyond; the cos/sin factor attention_factor
  // if given, else √(1 + ln factor / ln original) (1 when factor ≤ 1). With a
  // top-level original_max_position_embeddings in config.json (always for
  // Phi-3) factor is max_position_embeddings / original, as transformers has it.
  std::vector<float> short_factors, long_factors;  // (head_dim / 2)
  bool factor_from_context = false;  // factor = max_position_embeddings / original
  // Only Phi-3's rotary embedding switches to the long factors in
  // transformers 4.49; LLaMA's keeps the short ones at every length.
  bool switches_to_long = false;
};

// Parses config.json's rope_scaling (null: none); `source` names the file.
// `original_max_position_embeddings` is config.json's top-level value (0:
// none), which longrope uses; `max_position_embeddings` sizes its factor then.
RopeScaling parse_rope_scaling(const nlohmann::json& value, const std::string& source, int head_dim,
                               int max_position_embeddings, int original_max_position_embeddings);
// The rope_scaling object for config.json (null for none).
nlohmann::json rope_scaling_to_json(const RopeScaling& scaling);
const char* rope_type_name(RopeScaling::Type type);

struct RopeFrequencies {
  std::vector<float> inverse;  // (head_dim / 2)
  float attention_factor = 1;  // multiplies cos and sin
  // longrope: a sequence longer than long_beyond tokens uses long_inverse
  // (empty for the other types).
  std::vector<float> long_inverse;  // (head_dim / 2)
  int long_beyond = 0;
};

// The per-frequency divisors llama.cpp reads from rope_freqs.weight: as its
// converter computes them for llama3, as stored for FrequencyFactors; empty
// for the other types.
std::vector<float> llama_cpp_frequency_factors(const RopeScaling& scaling, int head_dim, float theta);

// As transformers computes them in float32 (modeling_rope_utils.py).
RopeFrequencies rope_frequencies(const RopeScaling& scaling, int head_dim, float theta, int max_position_embeddings);

// Floats of the cos and sin tables together for `positions` positions: one
// (positions, head_dim / 2) table each, two (short rows, then long) for longrope.
size_t rope_table_floats(const RopeScaling& scaling, int head_dim, int positions);
// Fills them: row p is position p (with the short factors for longrope), row
// positions + p position p with longrope's long factors.
void fill_rope_tables(float* cos, float* sin, int positions, int head_dim, const RopeFrequencies& frequencies);

}  // namespace qft
