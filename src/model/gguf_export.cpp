#include "model/gguf_export.h"

#include <filesystem>
#include <nlohmann/json.hpp>

#include "core/error.h"
#include "io/atomic_file.h"
#include "model/gguf_layout.h"
#include "model/parameters.h"
#include "text/tokenizer.h"

namespace qft {
namespace {

// llama.cpp's general.file_type for the matrices' type.
uint32_t file_type(GgmlType type) {
  switch (type) {
    case GgmlType::F32: return 0;
    case GgmlType::F16: return 1;
    case GgmlType::Q8_0: return 7;
    case GgmlType::BF16: return 32;
    default: fail("no GGUF file type for ", ggml_type_name(type));
  }
}

const char* gguf_architecture(Architecture architecture) {
  switch (architecture) {
    case Architecture::Qwen2: return "qwen2";
    case Architecture::Gemma2: return "gemma2";
    case Architecture::Phi3: return "phi3";
    default: return "llama";  // llama.cpp runs Mistral's dense models as "llama"
  }
}

// llama.cpp's Gemma-2 has no query_pre_attn_scalar: it scales by 1/√head_dim
// (hidden_size / heads for the 46-layer 27B). A model it would run
// differently is refused rather than exported wrong.
void add_gemma2_hyper_parameters(GgufWriter& writer, const ModelConfig& c) {
  const int llama_cpp_scalar = c.num_layers == 46 ? c.hidden_size / c.num_heads : c.head_dim;
  if (c.query_pre_attn_scalar != static_cast<float>(llama_cpp_scalar)) {
    fail("GGUF export: query_pre_attn_scalar ", c.query_pre_attn_scalar, " differs from the ", llama_cpp_scalar,
         " llama.cpp's gemma2 uses (GGUF has no key for it)");
  }
  if (c.attn_logit_softcapping > 0) writer.add_float32("gemma2.attn_logit_softcapping", c.attn_logit_softcapping);
  if (c.final_logit_softcapping > 0) writer.add_float32("gemma2.final_logit_softcapping", c.final_logit_softcapping);
  if (c.sliding_window > 0) writer.add_uint32("gemma2.attention.sliding_window", c.sliding_window);
}

// As llama.cpp's converter writes Phi-3: its original context, its window (0:
// none), and for longrope the cos/sin factor (the factors are tensors).
void add_phi3_hyper_parameters(GgufWriter& writer, const ModelConfig& c) {
  writer.add_uint32("phi3.rope.scaling.original_context_length",
                    c.original_max_position_embeddings > 0 ? c.original_max_position_embeddings : c.max_position_embeddings);
  writer.add_uint32("phi3.attention.sliding_window", c.sliding_window);
  if (c.rope_scaling.type == RopeScaling::Type::LongRope) {
    const RopeFrequencies rope = rope_frequencies(c.rope_scaling, c.head_dim, c.rope_theta, c.max_position_embeddings);
    writer.add_float32("phi3.rope.scaling.attn_factor", rope.attention_factor);
  }
}

void add_hyper_parameters(GgufWriter& writer, const ModelConfig& c, const GgufExport& options) {
  const std::string arch = gguf_architecture(c.architecture);
  const std::string p = arch + ".";
  writer.add_string("general.architecture", arch);
  if (!options.name.empty()) writer.add_string("general.name", options.name);
  writer.add_uint32("general.file_type", file_type(options.matrix_type));
  writer.add_uint32(p + "context_length", c.max_position_embeddings);
  writer.add_uint32(p + "embedding_length", c.hidden_size);
  writer.add_uint32(p + "block_count", c.num_layers);
  writer.add_uint32(p + "feed_forward_length", c.intermediate_size);
  writer.add_uint32(p + "attention.head_count", c.num_heads);
  writer.add_uint32(p + "attention.head_count_kv", c.num_kv_heads);
  writer.add_float32(p + "attention.layer_norm_rms_epsilon", c.rms_norm_eps);
  writer.add_float32(p + "rope.freq_base", c.rope_theta);
  writer.add_uint32(p + "rope.dimension_count", c.head_dim);
  if (c.rope_scaling.type == RopeScaling::Type::Linear || c.rope_scaling.type == RopeScaling::Type::Yarn) {
    writer.add_string(p + "rope.scaling.type", rope_type_name(c.rope_scaling.type));
    writer.add_float32(p + "rope.scaling.factor", c.rope_scaling.factor);
    if (c.rope_scaling.type == RopeScaling::Type::Yarn) {
      if (c.rope_scaling.attention_factor > 0 || c.rope_scaling.beta_fast != 32 || c.rope_scaling.beta_slow != 1) {
        fail("GGUF export: YaRN with a non-default attention_factor, beta_fast or beta_slow has no llama.cpp metadata here");
      }
      writer.add_uint32(p + "rope.scaling.original_context_length", c.max_position_embeddings);
    }
  }
  if (c.head_dim * c.num_heads != c.hidden_size || c.gemma()) {  // llama.cpp's converter always writes Gemma-2's
    writer.add_uint32(p + "attention.key_length", c.head_dim);
    writer.add_uint32(p + "attention.value_length", c.head_dim);
  }
  writer.add_uint32(p + "vocab_size", c.vocab_size);
  if (c.gemma()) add_gemma2_hyper_parameters(writer, c);
  if (c.architecture == Architecture::Phi3) add_phi3_hyper_parameters(writer, c);
}

}  // namespace

GgmlType parse_gguf_matrix_type(const std::string& name) {
  if (name == "bf16") return GgmlType::BF16;
  if (name == "f16") return GgmlType::F16;
  if (name == "f32") return GgmlType::F32;
  if (name == "q8_0") return GgmlType::Q8_0;
  fail("unknown GGUF dtype '", name, "' (expected bf16, f16, f32 or q8_0)");
}

namespace {

// The file's metadata and tensor list, and for each tensor the heads whose
// rows llama.cpp wants interleaved (0: none).
struct GgufModel {
  GgufWriter writer;
  std::vector<int> interleave_heads;
  // Tensors after the parameters: Llama-3's rope_freqs.weight, Phi-3's
  // rope_factors_long/short.weight, when the scaling needs them.
  std::vector<std::vector<float>> rope_factors;
};

GgufModel gguf_model(const ModelConfig& config, const GgufExport& options) {
  GgufModel model;
  add_hyper_parameters(model.writer, config, options);
  if (options.add_tokenizer) options.add_tokenizer(model.writer);
  const bool interleaved = config.architecture == Architecture::Llama || config.architecture == Architecture::Mistral;
  for (const ParamSpec& spec : parameter_specs(config)) {
    GgmlType type = GgmlType::F32;
    if (spec.shape.size() == 2) {
      // Rows that do not fill Q8_0 blocks fall back to F16, as llama.cpp's converter does.
      type = options.matrix_type == GgmlType::Q8_0 && spec.shape[1] % 32 != 0 ? GgmlType::F16 : options.matrix_type;
    }
    model.writer.add_tensor(gguf_tensor_name(spec.name, config.architecture), spec.shape, type);
    int heads = 0;
    if (interleaved && spec.name.find(".self_attn.q_proj.") != std::string::npos) heads = config.num_heads;
    if (interleaved && spec.name.find(".self_attn.k_proj.") != std::string::npos) heads = config.num_kv_heads;
    model.interleave_heads.push_back(heads);
  }
  // Llama-3's RoPE scaling goes in llama.cpp's per-frequency divisors, after the parameters.
  const std::vector<float> divisors = llama_cpp_frequency_factors(config.rope_scaling, config.head_dim, config.rope_theta);
  const auto add_factors = [&](const char* name, const std::vector<float>& factors) {
    model.writer.add_tensor(name, {config.head_dim / 2}, GgmlType::F32);
    model.rope_factors.push_back(factors);
  };
  if (!divisors.empty()) add_factors("rope_freqs.weight", divisors);
  if (config.rope_scaling.type == RopeScaling::Type::LongRope) {
    if (config.architecture != Architecture::Phi3) fail("GGUF export: longrope is written for Phi-3 (phi3) only");
    add_factors("rope_factors_long.weight", config.rope_scaling.long_factors);
    add_factors("rope_factors_short.weight", config.rope_scaling.short_factors);
  }
  return model;
}

std::string directory_of(const std::string& path) {
  return std::filesystem::absolute(path).parent_path().string();
}

}  // namespace

uint64_t export_gguf_bytes(const ModelConfig& config, const GgufExport& options) {
  return gguf_model(config, options).writer.file_bytes();
}

void export_gguf_model(const std::string& path, const ModelConfig& config,
                       const std::function<void(size_t, float*)>& fill, const GgufExport& options) {
  const GgufModel model = gguf_model(config, options);
  require_free_space(directory_of(path), model.writer.file_bytes(), "the export " + path);
  const std::vector<ParamSpec> specs = parameter_specs(config);
  model.writer.write(path, [&](size_t i, float* out) {
    if (i >= specs.size()) {
      const std::vector<float>& factors = model.rope_factors.at(i - specs.size());
      std::copy(factors.begin(), factors.end(), out);
      return;
    }
    fill(i, out);
    if (specs[i].role == ParamRole::Norm && gguf_norm_shift(config) != 0) {
      const size_t count = static_cast<size_t>(shape_numel(specs[i].shape));
      for (size_t j = 0; j < count; ++j) out[j] += gguf_norm_shift(config);
    }
    const int heads = model.interleave_heads[i];
    if (heads == 0) return;
    const int64_t rows = specs[i].shape[0];
    const int64_t cols = specs[i].shape.size() == 2 ? specs[i].shape[1] : 1;
    permute_head_rows(out, heads, rows / heads, cols);
  });
}

void add_gguf_tokenizer(GgufWriter& writer, const Tokenizer& tokenizer) {
  if (tokenizer.kind() != "byte-level BPE") {
    fail("exporting a ", tokenizer.kind(), " tokenizer to GGUF is not supported (byte-level BPE only)");
  }
  const nlohmann::json json = tokenizer.to_tokenizer_json();
  std::vector<std::string> tokens;
  std::vector<int32_t> types;
  for (int id = 0; id < tokenizer.vocab_size(); ++id) {
    tokens.push_back(tokenizer.id_to_token(id));
    types.push_back(tokenizer.is_special(id) ? 3 : 1);  // control : normal
  }
  std::vector<std::string> merges;
  for (const auto& merge : json.at("model").at("merges")) {
    merges.push_back(merge.is_string() ? merge.get<std::string>() : merge[0].get<std::string>() + " " + merge[1].get<std::string>());
  }
  writer.add_string("tokenizer.ggml.model", "gpt2");
  writer.add_string("tokenizer.ggml.pre", gguf_pre_name(json));
  writer.add_string_array("tokenizer.ggml.tokens", tokens);
  writer.add_int32_array("tokenizer.ggml.token_type", types);
  writer.add_string_array("tokenizer.ggml.merges", merges);
  if (tokenizer.bos_id()) writer.add_uint32("tokenizer.ggml.bos_token_id", *tokenizer.bos_id());
  if (tokenizer.eos_id()) writer.add_uint32("tokenizer.ggml.eos_token_id", *tokenizer.eos_id());
  if (tokenizer.pad_id()) writer.add_uint32("tokenizer.ggml.padding_token_id", *tokenizer.pad_id());
  const std::vector<int> empty = tokenizer.encode("", true);
  writer.add_bool("tokenizer.ggml.add_bos_token", !empty.empty() && empty.front() == tokenizer.bos_id());
  if (!tokenizer.chat_template().empty()) writer.add_string("tokenizer.chat_template", tokenizer.chat_template());
}

void copy_gguf_tokenizer(GgufWriter& writer, const GgufFile& source) {
  for (const auto& [key, value] : source.metadata()) {
    if (key.rfind("tokenizer.", 0) == 0) writer.add_value(key, value);
  }
}

}  // namespace qft
