#include "model/rope.h"

#include <algorithm>
#include <cmath>
#include <nlohmann/json.hpp>
#include <optional>

#include "core/error.h"
#include "kernels/kernels.h"

namespace qft {
namespace {

float number(const nlohmann::json& value, const char* key, const std::string& source, std::optional<float> fallback) {
  if (!value.contains(key) || value.at(key).is_null()) {
    if (!fallback) fail(source, ": rope_scaling needs '", key, "'");
    return *fallback;
  }
  if (!value.at(key).is_number()) fail(source, ": rope_scaling's '", key, "' must be a number");
  return value.at(key).get<float>();
}

// theta^(2i / dim) in float32.
float rope_power(int i, int head_dim, float theta) { return std::pow(theta, static_cast<float>(2 * i) / head_dim); }

// The default inverse frequencies in float32: 1 / theta^(2i / dim).
std::vector<float> default_inverse(int head_dim, float theta) {
  std::vector<float> inverse(head_dim / 2);
  for (int i = 0; i < head_dim / 2; ++i) inverse[i] = 1.0f / rope_power(i, head_dim, theta);
  return inverse;
}

constexpr float kTwoPi = 6.283185307179586f;

void llama3(std::vector<float>& inverse, const RopeScaling& s) {
  const float old_context = static_cast<float>(s.original_max_position_embeddings);
  const float low_wavelength = old_context / s.low_freq_factor, high_wavelength = old_context / s.high_freq_factor;
  for (float& f : inverse) {
    const float wavelength = kTwoPi / f;
    if (wavelength > low_wavelength) {
      f /= s.factor;
    } else if (!(wavelength < high_wavelength)) {
      const float smooth = (old_context / wavelength - s.low_freq_factor) / (s.high_freq_factor - s.low_freq_factor);
      f = (1 - smooth) * f / s.factor + smooth * f;
    }
  }
}

// transformers 4.49's _compute_yarn_parameters (the correction range from
// max_position_embeddings, as that version does).
void yarn(std::vector<float>& inverse, const RopeScaling& s, int dim, float theta, int max_position_embeddings) {
  const auto correction_dim = [&](double rotations) {
    return dim * std::log(max_position_embeddings / (rotations * 2 * M_PI)) / (2 * std::log(static_cast<double>(theta)));
  };
  const double low = std::max(std::floor(correction_dim(s.beta_fast)), 0.0);
  double high = std::min(std::ceil(correction_dim(s.beta_slow)), static_cast<double>(dim - 1));
  if (low == high) high += 0.001;
  for (size_t i = 0; i < inverse.size(); ++i) {
    const float position_frequency = std::pow(theta, static_cast<float>(2 * i) / dim);
    const float extrapolation = 1.0f / position_frequency, interpolation = 1.0f / (s.factor * position_frequency);
    const float ramp = std::clamp((static_cast<float>(i) - static_cast<float>(low)) / static_cast<float>(high - low), 0.0f, 1.0f);
    const float extrapolation_factor = 1 - ramp;
    inverse[i] = interpolation * (1 - extrapolation_factor) + extrapolation * extrapolation_factor;
  }
}

std::vector<float> factor_list(const nlohmann::json& value, const char* key, const std::string& source, int head_dim) {
  if (!value.contains(key) || !value.at(key).is_array()) fail(source, ": rope_scaling longrope needs a '", key, "' list");
  std::vector<float> factors;
  for (const auto& factor : value.at(key)) {
    if (!factor.is_number() || !(factor.get<float>() > 0)) fail(source, ": rope_scaling's '", key, "' holds a factor that is not positive");
    factors.push_back(factor.get<float>());
  }
  if (factors.size() != static_cast<size_t>(head_dim / 2)) {
    fail(source, ": rope_scaling's '", key, "' has ", factors.size(), " factors, head_dim / 2 = ", head_dim / 2);
  }
  return factors;
}

RopeScaling parse_longrope(const nlohmann::json& value, const std::string& source, int head_dim,
                           int max_position_embeddings, int original_max_position_embeddings) {
  RopeScaling scaling;
  scaling.type = RopeScaling::Type::LongRope;
  scaling.short_factors = factor_list(value, "short_factor", source, head_dim);
  scaling.long_factors = factor_list(value, "long_factor", source, head_dim);
  scaling.attention_factor = number(value, "attention_factor", source, 0.0f);
  if (original_max_position_embeddings > 0) {
    scaling.original_max_position_embeddings = original_max_position_embeddings;
    scaling.factor = static_cast<float>(static_cast<double>(max_position_embeddings) / original_max_position_embeddings);
    scaling.factor_from_context = true;
  } else {
    scaling.original_max_position_embeddings = max_position_embeddings;
    scaling.factor = number(value, "factor", source, std::nullopt);
  }
  return scaling;
}

// transformers 4.49's _compute_longrope_parameters, in double where it uses Python floats.
float longrope_attention_factor(const RopeScaling& s) {
  if (s.attention_factor > 0) return s.attention_factor;
  if (s.factor <= 1) return 1.0f;
  return static_cast<float>(std::sqrt(1 + std::log(static_cast<double>(s.factor)) / std::log(static_cast<double>(s.original_max_position_embeddings))));
}

}  // namespace

const char* rope_type_name(RopeScaling::Type type) {
  switch (type) {
    case RopeScaling::Type::None: return "default";
    case RopeScaling::Type::Linear: return "linear";
    case RopeScaling::Type::Llama3: return "llama3";
    case RopeScaling::Type::Yarn: return "yarn";
    case RopeScaling::Type::LongRope: return "longrope";
    case RopeScaling::Type::FrequencyFactors: return "frequency factors (GGUF rope_freqs.weight)";
  }
  return "?";
}

RopeScaling parse_rope_scaling(const nlohmann::json& value, const std::string& source, int head_dim,
                               int max_position_embeddings, int original_max_position_embeddings) {
  RopeScaling scaling;
  if (value.is_null()) return scaling;
  if (!value.is_object()) fail(source, ": rope_scaling must be an object or null");
  // transformers accepts the older "type" key for "rope_type".
  const char* key = value.contains("rope_type") ? "rope_type" : "type";
  if (!value.contains(key) || !value.at(key).is_string()) fail(source, ": rope_scaling needs a 'rope_type'");
  const std::string type = value.at(key);
  if (type == "default") return scaling;
  if (type == "linear") {
    scaling.type = RopeScaling::Type::Linear;
  } else if (type == "llama3") {
    scaling.type = RopeScaling::Type::Llama3;
    scaling.low_freq_factor = number(value, "low_freq_factor", source, std::nullopt);
    scaling.high_freq_factor = number(value, "high_freq_factor", source, std::nullopt);
    scaling.original_max_position_embeddings =
        static_cast<int>(number(value, "original_max_position_embeddings", source, std::nullopt));
    if (!(scaling.high_freq_factor > scaling.low_freq_factor) || scaling.original_max_position_embeddings <= 0) {
      fail(source, ": rope_scaling llama3 needs high_freq_factor > low_freq_factor and a positive original_max_position_embeddings");
    }
  } else if (type == "yarn") {
    scaling.type = RopeScaling::Type::Yarn;
    scaling.beta_fast = number(value, "beta_fast", source, 32.0f);
    scaling.beta_slow = number(value, "beta_slow", source, 1.0f);
    scaling.attention_factor = number(value, "attention_factor", source, 0.0f);
    if (value.contains("original_max_position_embeddings")) {
      scaling.original_max_position_embeddings =
          static_cast<int>(number(value, "original_max_position_embeddings", source, std::nullopt));
    }
  } else if (type == "longrope") {
    return parse_longrope(value, source, head_dim, max_position_embeddings, original_max_position_embeddings);
  } else {
    fail(source, ": rope_scaling type '", type, "' is not supported (supported: default, linear, llama3, yarn, "
         "longrope; dynamic is not)");
  }
  scaling.factor = number(value, "factor", source, std::nullopt);
  if (!(scaling.factor >= 1)) fail(source, ": rope_scaling's factor must be at least 1");
  return scaling;
}

nlohmann::json rope_scaling_to_json(const RopeScaling& s) {
  switch (s.type) {
    case RopeScaling::Type::None: return nullptr;
    case RopeScaling::Type::Linear: return {{"rope_type", "linear"}, {"factor", s.factor}};
    case RopeScaling::Type::Llama3:
      return {{"rope_type", "llama3"},
              {"factor", s.factor},
              {"low_freq_factor", s.low_freq_factor},
              {"high_freq_factor", s.high_freq_factor},
              {"original_max_position_embeddings", s.original_max_position_embeddings}};
    case RopeScaling::Type::Yarn: {
      nlohmann::json json{{"rope_type", "yarn"}, {"factor", s.factor}, {"beta_fast", s.beta_fast}, {"beta_slow", s.beta_slow}};
      if (s.attention_factor > 0) json["attention_factor"] = s.attention_factor;
      if (s.original_max_position_embeddings > 0) json["original_max_position_embeddings"] = s.original_max_position_embeddings;
      return json;
    }
    case RopeScaling::Type::LongRope: {
      // Phi-3's config accepts exactly these three keys; its factor comes from the context lengths.
      nlohmann::json json{{"type", "longrope"}, {"short_factor", s.short_factors}, {"long_factor", s.long_factors}};
      if (!s.factor_from_context) json["factor"] = s.factor;
      if (s.attention_factor > 0) json["attention_factor"] = s.attention_factor;
      return json;
    }
    // Not a transformers type: only a checkpoint's record of the model writes it.
    case RopeScaling::Type::FrequencyFactors: return {{"rope_type", "qft_frequency_factors"}, {"factors", s.frequency_factors}};
  }
  return nullptr;
}

// llama.cpp's convert_hf_to_gguf.py (LlamaModel): 1 above the high-frequency
// band, factor below the low one, 1 / ((1 - smooth) / factor + smooth) between.
std::vector<float> llama_cpp_frequency_factors(const RopeScaling& s, int head_dim, float theta) {
  if (s.type == RopeScaling::Type::FrequencyFactors) return s.frequency_factors;
  if (s.type != RopeScaling::Type::Llama3) return {};
  const float old_context = static_cast<float>(s.original_max_position_embeddings);
  const float low_wavelength = old_context / s.low_freq_factor, high_wavelength = old_context / s.high_freq_factor;
  std::vector<float> factors;
  for (const float f : default_inverse(head_dim, theta)) {
    const float wavelength = kTwoPi / f;
    if (wavelength < high_wavelength) {
      factors.push_back(1);
    } else if (wavelength > low_wavelength) {
      factors.push_back(s.factor);
    } else {
      const float smooth = (old_context / wavelength - s.low_freq_factor) / (s.high_freq_factor - s.low_freq_factor);
      factors.push_back(1 / ((1 - smooth) / s.factor + smooth));
    }
  }
  return factors;
}

RopeFrequencies rope_frequencies(const RopeScaling& scaling, int head_dim, float theta, int max_position_embeddings) {
  RopeFrequencies frequencies{default_inverse(head_dim, theta), 1.0f};
  switch (scaling.type) {
    case RopeScaling::Type::None: break;
    case RopeScaling::Type::Linear:
      for (float& f : frequencies.inverse) f /= scaling.factor;
      break;
    case RopeScaling::Type::Llama3: llama3(frequencies.inverse, scaling); break;
    case RopeScaling::Type::FrequencyFactors:
      for (size_t i = 0; i < frequencies.inverse.size(); ++i) frequencies.inverse[i] /= scaling.frequency_factors[i];
      break;
    case RopeScaling::Type::Yarn:
      yarn(frequencies.inverse, scaling, head_dim, theta, max_position_embeddings);
      frequencies.attention_factor =
          scaling.attention_factor > 0 ? scaling.attention_factor : static_cast<float>(0.1 * std::log(scaling.factor) + 1.0);
      break;
    case RopeScaling::Type::LongRope: {
      // 1 / (factor · theta^(2i / dim)) in float32, as transformers writes it.
      if (scaling.switches_to_long) frequencies.long_inverse.resize(frequencies.inverse.size());
      for (int i = 0; i < head_dim / 2; ++i) {
        const float power = rope_power(i, head_dim, theta);
        frequencies.inverse[i] = 1.0f / (scaling.short_factors[i] * power);
        if (scaling.switches_to_long) frequencies.long_inverse[i] = 1.0f / (scaling.long_factors[i] * power);
      }
      frequencies.long_beyond = scaling.original_max_position_embeddings;
      frequencies.attention_factor = longrope_attention_factor(scaling);
      break;
    }
  }
  return frequencies;
}

size_t rope_table_floats(const RopeScaling& scaling, int head_dim, int positions) {
  const size_t sets = scaling.type == RopeScaling::Type::LongRope && scaling.switches_to_long ? 2 : 1;
  return 2 * sets * static_cast<size_t>(positions) * (head_dim / 2);
}

void fill_rope_tables(float* cos, float* sin, int positions, int head_dim, const RopeFrequencies& frequencies) {
  kernels::rope_tables(cos, sin, positions, head_dim, frequencies.inverse.data(), frequencies.attention_factor);
  if (frequencies.long_inverse.empty()) return;
  const size_t offset = static_cast<size_t>(positions) * (head_dim / 2);
  kernels::rope_tables(cos + offset, sin + offset, positions, head_dim, frequencies.long_inverse.data(),
                       frequencies.attention_factor);
}

}  // namespace qft
