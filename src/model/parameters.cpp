#include "model/parameters.h"

#include <cmath>
#include <cstring>

#include "core/error.h"
#include "kernels/kernels.h"

namespace qft {

std::string layer_param_name(int layer, const std::string& suffix) {
  return "model.layers." + std::to_string(layer) + "." + suffix;
}

std::vector<ParamSpec> parameter_specs(const ModelConfig& config) {
  const int64_t C = config.hidden_size, I = config.intermediate_size;
  const int64_t Q = config.q_dim(), KV = config.kv_dim(), V = config.vocab_size;
  std::vector<ParamSpec> specs;
  specs.push_back({"model.embed_tokens.weight", {V, C}, ParamRole::Embedding});
  const auto linear = [&](int layer, const std::string& module, int64_t out, int64_t in, bool bias) {
    specs.push_back({layer_param_name(layer, module + ".weight"), {out, in}, ParamRole::Linear});
    if (bias) specs.push_back({layer_param_name(layer, module + ".bias"), {out}, ParamRole::Bias});
  };
  for (int layer = 0; layer < config.num_layers; ++layer) {
    specs.push_back({layer_param_name(layer, "input_layernorm.weight"), {C}, ParamRole::Norm});
    if (config.fused_projections()) {
      linear(layer, "self_attn.qkv_proj", Q + 2 * KV, C, config.qkv_bias);
    } else {
      linear(layer, "self_attn.q_proj", Q, C, config.qkv_bias);
      linear(layer, "self_attn.k_proj", KV, C, config.qkv_bias);
      linear(layer, "self_attn.v_proj", KV, C, config.qkv_bias);
    }
    linear(layer, "self_attn.o_proj", C, Q, config.o_bias);
    specs.push_back({layer_param_name(layer, "post_attention_layernorm.weight"), {C}, ParamRole::Norm});
    if (config.sandwich_norms()) {
      specs.push_back({layer_param_name(layer, "pre_feedforward_layernorm.weight"), {C}, ParamRole::Norm});
    }
    if (config.fused_projections()) {
      linear(layer, "mlp.gate_up_proj", 2 * I, C, config.mlp_bias);
    } else {
      linear(layer, "mlp.gate_proj", I, C, config.mlp_bias);
      linear(layer, "mlp.up_proj", I, C, config.mlp_bias);
    }
    linear(layer, "mlp.down_proj", C, I, config.mlp_bias);
    if (config.sandwich_norms()) {
      specs.push_back({layer_param_name(layer, "post_feedforward_layernorm.weight"), {C}, ParamRole::Norm});
    }
  }
  specs.push_back({"model.norm.weight", {C}, ParamRole::Norm});
  if (!config.tie_word_embeddings) specs.push_back({"lm_head.weight", {V, C}, ParamRole::LmHead});
  return specs;
}

namespace {

std::vector<size_t> spec_offsets(const std::vector<ParamSpec>& specs) {
  std::vector<size_t> offsets{0};
  for (const ParamSpec& spec : specs) {
    // Each parameter starts on a 64-byte boundary, for aligned vector loads.
    const size_t padded = (static_cast<size_t>(shape_numel(spec.shape)) + 15) / 16 * 16;
    offsets.push_back(offsets.back() + padded);
  }
  return offsets;
}

}  // namespace

size_t ParamSet::bytes(const std::vector<ParamSpec>& specs) { return spec_offsets(specs).back() * sizeof(float); }

std::vector<size_t> ParamSet::offsets(const std::vector<ParamSpec>& specs) { return spec_offsets(specs); }

ParamSet::ParamSet(MemCategory category, std::vector<ParamSpec> specs)
    : specs_(std::move(specs)), offsets_(spec_offsets(specs_)), storage_(category, offsets_.back()) {
  for (size_t i = 0; i < specs_.size(); ++i) index_.emplace(specs_[i].name, i);
}

ParamSet::ParamSet(std::vector<ParamSpec> specs, std::vector<float*> values)
    : specs_(std::move(specs)), offsets_(spec_offsets(specs_)), views_(std::move(values)) {
  if (views_.size() != specs_.size()) fail("a parameter view needs one pointer per parameter");
  for (size_t i = 0; i < specs_.size(); ++i) index_.emplace(specs_[i].name, i);
}

float* ParamSet::find(const std::string& name) {
  const auto found = index_.find(name);
  return found == index_.end() ? nullptr : data(found->second);
}

float* ParamSet::get(const std::string& name) {
  float* pointer = find(name);
  if (!pointer) fail("no parameter named '", name, "'");
  return pointer;
}

void ParamSet::zero() {
  if (views_.empty()) return kernels::zero(storage_.data(), storage_.size() * sizeof(float));
  for (size_t i = 0; i < specs_.size(); ++i) kernels::zero(views_[i], numel(i) * sizeof(float));
}

const char* linear_module(Linear which) {
  switch (which) {
    case Linear::Q: return "self_attn.q_proj";
    case Linear::K: return "self_attn.k_proj";
    case Linear::V: return "self_attn.v_proj";
    case Linear::O: return "self_attn.o_proj";
    case Linear::Gate: return "mlp.gate_proj";
    case Linear::Up: return "mlp.up_proj";
    case Linear::Down: return "mlp.down_proj";
    case Linear::QKV: return "self_attn.qkv_proj";
    case Linear::GateUp: return "mlp.gate_up_proj";
  }
  return "?";
}

std::vector<Linear> linears_of(const ModelConfig& config) {
  if (config.fused_projections()) return {Linear::QKV, Linear::O, Linear::GateUp, Linear::Down};
  return {Linear::Q, Linear::K, Linear::V, Linear::O, Linear::Gate, Linear::Up, Linear::Down};
}

LinearParams& linear_of(LayerParams& layer, Linear which) {
  switch (which) {
    case Linear::Q: return layer.q;
    case Linear::K: return layer.k;
    case Linear::V: return layer.v;
    case Linear::O: return layer.o;
    case Linear::Gate: return layer.gate;
    case Linear::Up: return layer.up;
    case Linear::Down: return layer.down;
    case Linear::QKV: return layer.qkv;
    case Linear::GateUp: return layer.gate_up;
  }
  throw std::logic_error("unknown linear");
}

const LinearParams& linear_of(const LayerParams& layer, Linear which) {
  return linear_of(const_cast<LayerParams&>(layer), which);
}

ModelParams bind_model_params(const ModelConfig& config, ParamSet& params) {
  const auto lookup = [&](const std::string& name) { return params.find(name); };
  ModelParams model;
  model.head = bind_head_params(config, lookup);
  for (int layer = 0; layer < config.num_layers; ++layer) model.layers.push_back(bind_layer_params(layer, lookup));
  return model;
}

std::optional<std::string> first_nonfinite(const ParamSet& set) {
  for (size_t i = 0; i < set.specs().size(); ++i) {
    const float* values = set.data(i);
    const size_t count = set.numel(i);
    for (size_t j = 0; j < count; ++j) {
      if (!std::isfinite(values[j])) {
        return set.specs()[i].name + " (element " + std::to_string(j) + " of " + std::to_string(count) + ")";
      }
    }
  }
  return std::nullopt;
}

}  // namespace qft
