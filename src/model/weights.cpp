#include "model/weights.h"

#include <cmath>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <set>
#include <stdexcept>

#include "core/error.h"
#include "model/gguf_layout.h"
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
// out (count) = values [first, first + count) of the tensor's N(0, stddev²)
// values: value j from block j / 4 of Philox, so any range is the same values.
void fill_normal(float* out, size_t first, size_t count, float stddev, uint64_t seed, uint32_t tensor) {
  const PhiloxKey key = philox_key(seed);
  const size_t end = first + count;
  const int64_t first_block = static_cast<int64_t>(first / 4), blocks = static_cast<int64_t>((end + 3) / 4) - first_block;
#pragma omp parallel for schedule(static)
  for (int64_t index = 0; index < blocks; ++index) {
    const int64_t block = first_block + index;
    const PhiloxCounter bits = philox4x32_10(
        {static_cast<uint32_t>(block), static_cast<uint32_t>(block >> 32), tensor, 0x1417u}, key);
    for (int pair = 0; pair < 2; ++pair) {
      // 1 − u keeps the logarithm's argument in (0, 1].
      const float radius = std::sqrt(-2.0f * std::log(1.0f - uniform_from_bits(bits[2 * pair])));
      const float angle = 6.28318530717958647692f * uniform_from_bits(bits[2 * pair + 1]);
      const size_t j = static_cast<size_t>(block) * 4 + 2 * pair;
      if (j >= first && j < end) out[j - first] = stddev * radius * std::cos(angle);
      if (j + 1 >= first && j + 1 < end) out[j + 1 - first] = stddev * radius * std::sin(angle);
    }
  }
}

// ------------------------------------------------------------------ GGUF ---

// Gemma-2's keys as llama.cpp's converter writes them. GGUF has no
// query_pre_attn_scalar: llama.cpp scales queries by 1/√head_dim, except for
// the 27B model (46 layers), whose scalar is hidden_size / heads.
void add_gemma2_metadata(nlohmann::json& json, const GgufFile& file) {
  json["hidden_activation"] = "gelu_pytorch_tanh";
  const auto cap = [&](const std::string& key) {
    return file.has(key) ? nlohmann::json(file.get_float(key)) : nlohmann::json();
  };
  json["attn_logit_softcapping"] = cap("gemma2.attn_logit_softcapping");
  json["final_logit_softcapping"] = cap("gemma2.final_logit_softcapping");
  json["sliding_window"] = file.has("gemma2.attention.sliding_window")
                               ? nlohmann::json(file.get_uint("gemma2.attention.sliding_window"))
                               : nlohmann::json();
  const int head_dim = json.contains("head_dim") ? json["head_dim"].get<int>()
                                                 : json["hidden_size"].get<int>() / json["num_attention_heads"].get<int>();
  json["query_pre_attn_scalar"] = json["num_hidden_layers"] == 46
                                      ? json["hidden_size"].get<int>() / json["num_attention_heads"].get<int>()
                                      : head_dim;
}

// Phi-3's keys and longrope factor tensors as llama.cpp's converter writes them.
void add_phi3_metadata(nlohmann::json& json, const GgufFile& file) {
  if (file.has("phi3.rope.scaling.original_context_length")) {
    json["original_max_position_embeddings"] = file.get_uint("phi3.rope.scaling.original_context_length");
  }
  const uint64_t window = file.has("phi3.attention.sliding_window") ? file.get_uint("phi3.attention.sliding_window") : 0;
  json["sliding_window"] = window > 0 ? nlohmann::json(window) : nlohmann::json();
  const GgufTensor* long_factors = file.find_tensor("rope_factors_long.weight");
  const GgufTensor* short_factors = file.find_tensor("rope_factors_short.weight");
  if (!long_factors && !short_factors) return;
  if (!long_factors || !short_factors) fail(file.path(), ": Phi-3 longrope needs both rope_factors_long and rope_factors_short");
  const auto values = [&](const GgufTensor& tensor) {
    if (tensor.dims.size() != 1 || !ggml_type_dequantizable(tensor.type)) {
      fail(file.path(), ": tensor '", tensor.name, "' must be a list of factors");
    }
    std::vector<float> factors(tensor.dims[0]);
    file.dequantize(tensor, factors.data());
    return factors;
  };
  json["rope_scaling"] = {{"type", "longrope"}, {"long_factor", values(*long_factors)}, {"short_factor", values(*short_factors)}};
}

// The HF config.json that the GGUF metadata describes, validated by the same
// parser as an HF directory's.
ModelConfig gguf_model_config(const GgufFile& file) {
  const std::string& path = file.path();
  const std::string arch = file.get_string("general.architecture");
  const char* hf_class = arch == "llama"     ? "LlamaForCausalLM"
                         : arch == "mistral" ? "MistralForCausalLM"
                         : arch == "qwen2"   ? "Qwen2ForCausalLM"
                         : arch == "gemma2"  ? "Gemma2ForCausalLM"
                         : arch == "phi3"    ? "Phi3ForCausalLM"
                                             : nullptr;
  if (!hf_class) {
    fail(path, ": unsupported general.architecture '", arch, "' (supported: llama, mistral, qwen2, gemma2, phi3)");
  }
  const std::string p = arch + ".";
  const auto size_key = [&](const std::string& key) {
    const uint64_t value = file.get_uint(p + key);
    if (value == 0 || value > (1u << 30)) fail(path, ": metadata '", p, key, "' = ", value, " is out of range");
    return static_cast<int64_t>(value);
  };
  if (file.has(p + "expert_count") && file.get_uint(p + "expert_count") > 0) {
    fail(path, ": mixture-of-experts models ('", p, "expert_count') are not supported");
  }

  const GgufTensor& embed = file.tensor("token_embd.weight");
  if (embed.dims.size() != 2) {
    fail(path, ": tensor 'token_embd.weight' has ", embed.dims.size(), " dimensions, expected 2");
  }
  nlohmann::json json;
  json["architectures"] = {hf_class};
  json["vocab_size"] = embed.dims[1];
  json["hidden_size"] = size_key("embedding_length");
  json["intermediate_size"] = size_key("feed_forward_length");
  json["num_hidden_layers"] = size_key("block_count");
  json["num_attention_heads"] = size_key("attention.head_count");
  if (file.has(p + "attention.head_count_kv")) json["num_key_value_heads"] = size_key("attention.head_count_kv");
  // The head dimension, as llama.cpp reads it: key_length, else hidden / heads.
  if (file.has(p + "attention.key_length")) {
    json["head_dim"] = size_key("attention.key_length");
    if (file.has(p + "attention.value_length") && size_key("attention.value_length") != json["head_dim"]) {
      fail(path, ": '", p, "attention.value_length' differs from '", p, "attention.key_length' (not supported)");
    }
  }
  if (file.has(p + "context_length")) json["max_position_embeddings"] = size_key("context_length");
  if (file.has(p + "rope.freq_base")) json["rope_theta"] = file.get_float(p + "rope.freq_base");
  // llama.cpp's rope.scaling.* keys for linear and YaRN scaling.
  const std::string scaling = file.has(p + "rope.scaling.type") ? file.get_string(p + "rope.scaling.type") : "none";
  if (scaling == "linear" || scaling == "yarn") {
    json["rope_scaling"] = {{"rope_type", scaling}, {"factor", file.get_float(p + "rope.scaling.factor")}};
  } else if (scaling != "none") {
    fail(path, ": RoPE scaling '", p, "rope.scaling.type' = '", scaling, "' is not supported (linear, yarn)");
  }
  json["rms_norm_eps"] = file.get_float(p + "attention.layer_norm_rms_epsilon");
  json["tie_word_embeddings"] = file.find_tensor("output.weight") == nullptr;
  if (arch == "llama") {
    json["attention_bias"] = file.find_tensor("blk.0.attn_q.bias") != nullptr;
    json["mlp_bias"] = file.find_tensor("blk.0.ffn_gate.bias") != nullptr;
  }
  if (arch == "gemma2") add_gemma2_metadata(json, file);
  if (arch == "phi3") add_phi3_metadata(json, file);
  ModelConfig config = parse_model_config(json, path);
  if (const GgufTensor* factors = file.find_tensor("rope_freqs.weight")) {
    // Llama-3's RoPE scaling as llama.cpp's converter writes it.
    if (factors->shape() != Shape{config.head_dim / 2} || !ggml_type_dequantizable(factors->type)) {
      fail(path, ": tensor 'rope_freqs.weight' must hold ", config.head_dim / 2, " values (head_dim / 2)");
    }
    config.rope_scaling.type = RopeScaling::Type::FrequencyFactors;
    config.rope_scaling.frequency_factors.resize(config.head_dim / 2);
    file.dequantize(*factors, config.rope_scaling.frequency_factors.data());
    for (const float factor : config.rope_scaling.frequency_factors) {
      if (!(factor > 0) || !std::isfinite(factor)) fail(path, ": tensor 'rope_freqs.weight' holds a factor that is not positive");
    }
  }
  if (file.has(p + "rope.dimension_count") && file.get_uint(p + "rope.dimension_count") != static_cast<uint64_t>(config.head_dim)) {
    fail(path, ": '", p, "rope.dimension_count' = ", file.get_uint(p + "rope.dimension_count"),
         " differs from the head dimension ", config.head_dim,
         " (attention.key_length, else embedding_length / head_count): partial RoPE is not supported");
  }
  return config;
}

}  // namespace

ModelSource ModelSource::gguf_file(const std::string& path) {
  ModelSource source;
  source.gguf_ = std::make_shared<GgufFile>(path);
  const GgufFile& file = *source.gguf_;
  source.config_ = gguf_model_config(file);
  source.specs_ = parameter_specs(source.config_);
  // llama.cpp's converter interleaves the Q and K rows of "llama" files (Mistral
  // models included) for its RoPE; "qwen2" files keep HF's order (NeoX RoPE).
  // llama.cpp has no "mistral" architecture: such files are read in HF order,
  // as transformers' GGUF loading reads them.
  const bool interleaved = file.get_string("general.architecture") == "llama";
  std::set<std::string> used;
  if (source.config_.rope_scaling.type == RopeScaling::Type::FrequencyFactors) used.insert("rope_freqs.weight");
  if (source.config_.rope_scaling.type == RopeScaling::Type::LongRope) {
    used.insert("rope_factors_long.weight");
    used.insert("rope_factors_short.weight");
  }
  for (const ParamSpec& spec : source.specs_) {
    const std::string name = gguf_tensor_name(spec.name, source.config_.architecture);
    const GgufTensor* tensor = file.find_tensor(name);
    if (!tensor) fail(path, ": tensor '", name, "' (", spec.name, ") is missing");
    if (tensor->shape() != spec.shape) {
      fail(path, ": tensor '", name, "' has shape ", shape_text(tensor->shape()), " (GGUF dimensions reversed), ",
           "the metadata implies ", shape_text(spec.shape), " for ", spec.name);
    }
    if (!ggml_type_dequantizable(tensor->type)) {
      fail(path, ": tensor '", name, "' has type ", ggml_type_name(tensor->type), ", which qft cannot de-quantize");
    }
    GgufSlot slot{tensor, 0};
    if (interleaved && (name.find(".attn_q.") != std::string::npos)) slot.unpermute_heads = source.config_.num_heads;
    if (interleaved && (name.find(".attn_k.") != std::string::npos)) slot.unpermute_heads = source.config_.num_kv_heads;
    source.gguf_slots_.push_back(slot);
    used.insert(name);
  }
  std::string unused;
  for (const GgufTensor& tensor : file.tensors()) {
    if (!used.count(tensor.name)) unused += (unused.empty() ? "'" : ", '") + tensor.name + "'";
  }
  if (!unused.empty()) fail(path, ": tensors this model layout does not use: ", unused);
  return source;
}

ModelSource ModelSource::open(const std::string& path) {
  namespace fs = std::filesystem;
  std::error_code error;
  if (fs::is_directory(path, error)) return hf_directory(path);
  if (!fs::exists(path, error)) fail(path, ": no such file or directory");
  return gguf_file(path);
}

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
  if (gguf_) {
    const GgufSlot& slot = gguf_slots_.at(index);
    gguf_->dequantize(*slot.tensor, out);
    if (spec.role == ParamRole::Norm && gguf_norm_shift(config_) != 0) {
      const size_t count = static_cast<size_t>(shape_numel(spec.shape));
      for (size_t i = 0; i < count; ++i) out[i] -= gguf_norm_shift(config_);
    }
    if (slot.unpermute_heads > 0) {
      const int64_t rows = spec.shape[0], cols = spec.shape.size() > 1 ? spec.shape[1] : 1;
      unpermute_head_rows(out, slot.unpermute_heads, rows / slot.unpermute_heads, cols);
    }
    return;
  }
  if (checkpoint_) {
    convert_to_f32(out, checkpoint_->tensor(spec.name));
    return;
  }
  const size_t count = static_cast<size_t>(shape_numel(spec.shape));
  switch (spec.role) {
    case ParamRole::Embedding:
    case ParamRole::LmHead:
    case ParamRole::Linear:
      fill_normal(out, 0, count, kInitStddev, seed_, static_cast<uint32_t>(index));
      break;
    case ParamRole::Norm:
      std::fill(out, out + count, 1.0f - config_.norm_offset());  // a scale of one
      break;
    case ParamRole::Bias:
      std::fill(out, out + count, 0.0f);
      break;
  }
}

void ModelSource::fill_rows(size_t index, float* out, int first, int rows) const {
  const ParamSpec& spec = specs_.at(index);
  if (spec.shape.size() != 2) throw std::logic_error(spec.name + " has no rows to read");
  const int64_t cols = spec.shape[1];
  if (gguf_) {
    const GgufSlot& slot = gguf_slots_.at(index);
    if (slot.unpermute_heads > 0) throw std::logic_error(spec.name + ": interleaved rows are read whole");
    gguf_->dequantize(*slot.tensor, out, first, rows);
    return;
  }
  if (checkpoint_) {
    TensorRecord record = checkpoint_->tensor(spec.name);
    const size_t row_bytes = dtype_size(record.dtype) * static_cast<size_t>(cols);
    record.data += static_cast<size_t>(first) * row_bytes;
    record.shape = {rows, cols};
    record.nbytes = static_cast<size_t>(rows) * row_bytes;
    convert_to_f32(out, record);
    return;
  }
  fill_normal(out, static_cast<size_t>(first) * cols, static_cast<size_t>(rows) * cols, kInitStddev, seed_,
              static_cast<uint32_t>(index));
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

LoadedModel load_model(const std::string& path) {
  const ModelSource source = ModelSource::open(path);
  return {source.config(), load_fp32_weights(source)};
}

}  // namespace qft
