#pragma once
// Named parameters (HF names) in one tagged allocation, and typed views of a
// LLaMA-family model resolved by name.
#include <cstdint>
#include <map>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

#include "core/memory.h"
#include "core/shape.h"
#include "model/config.h"

namespace qft {

enum class ParamRole { Embedding, LmHead, Linear, Norm, Bias };

struct ParamSpec {
  std::string name;
  Shape shape;
  ParamRole role;
};

// Every parameter of the model, in HF order and naming.
std::vector<ParamSpec> parameter_specs(const ModelConfig& config);

class ParamSet {
 public:
  ParamSet(MemCategory category, std::vector<ParamSpec> specs);
  // A view: parameter i's values at values[i], owned elsewhere (a data-parallel
  // rank's share of a larger set). all() is unavailable; offset() keeps the
  // layout an owning set of these specs would have.
  ParamSet(std::vector<ParamSpec> specs, std::vector<float*> values);
  // Bytes a set of these parameters allocates, and where each starts (in floats; one more: the end).
  static size_t bytes(const std::vector<ParamSpec>& specs);
  static std::vector<size_t> offsets(const std::vector<ParamSpec>& specs);

  const std::vector<ParamSpec>& specs() const { return specs_; }
  float* data(size_t index) { return views_.empty() ? storage_.data() + offsets_[index] : views_[index]; }
  const float* data(size_t index) const { return views_.empty() ? storage_.data() + offsets_[index] : views_[index]; }
  // Where parameter `index` starts in the storage (each 64-byte aligned): the
  // layout of per-value optimizer state kept beside the set.
  size_t offset(size_t index) const { return offsets_[index]; }
  size_t numel(size_t index) const { return static_cast<size_t>(shape_numel(specs_[index].shape)); }
  // Throws naming the parameter when absent.
  float* get(const std::string& name);
  float* find(const std::string& name);  // nullptr when absent

  // The whole storage of an owning set (a view's is null); padding between
  // parameters stays zero.
  float* all() { return storage_.data(); }
  const float* all() const { return storage_.data(); }
  size_t total_numel() const { return offsets_.back(); }
  void zero();

 private:
  std::vector<ParamSpec> specs_;
  std::vector<size_t> offsets_;
  std::map<std::string, size_t> index_;
  Buffer<float> storage_;
  std::vector<float*> views_;  // a view's values
};

// The first parameter (in HF order) holding NaN or Inf, as "NAME (element
// I of N)"; nullopt when every value is finite.
std::optional<std::string> first_nonfinite(const ParamSet& set);

struct LinearParams {
  float* weight = nullptr;  // (out, in)
  float* bias = nullptr;    // (out) or nullptr
};

struct LayerParams {
  float* input_norm = nullptr;  // (C) before attention
  LinearParams q, k, v, o;
  LinearParams qkv;  // (Q + 2·KV, C): Phi-3's fused q, k, v rows, else absent
  float* attn_out_norm = nullptr;  // (C) of attention's output (Gemma-2), else nullptr
  float* mlp_norm = nullptr;       // (C) before the MLP
  LinearParams gate, up, down;
  LinearParams gate_up;  // (2·I, C): Phi-3's fused gate and up rows, else absent
  float* mlp_out_norm = nullptr;  // (C) of the MLP's output (Gemma-2), else nullptr
};

enum class Linear { Q, K, V, O, Gate, Up, Down, QKV, GateUp };
// Every linear a layer may have; a model has those linears_of() names.
inline constexpr Linear kLinears[] = {Linear::Q,    Linear::K,  Linear::V,    Linear::O,     Linear::Gate,
                                      Linear::Up,   Linear::Down, Linear::QKV, Linear::GateUp};
const char* linear_module(Linear which);  // "self_attn.q_proj", …
// The linears each layer of this model stores, in parameter order.
std::vector<Linear> linears_of(const ModelConfig& config);

LinearParams& linear_of(LayerParams& layer, Linear which);
const LinearParams& linear_of(const LayerParams& layer, Linear which);

struct HeadParams {
  float* embed = nullptr;       // (V, C)
  float* final_norm = nullptr;  // (C)
  float* lm_head = nullptr;     // (V, C); the embedding when tied
};

struct ModelParams {
  HeadParams head;
  std::vector<LayerParams> layers;
};

// Resolves every view by HF name through `lookup` (nullptr: absent); norm
// weights are required.
template <class Lookup>
LayerParams bind_layer_params(int layer, Lookup&& lookup);
template <class Lookup>
HeadParams bind_head_params(const ModelConfig& config, Lookup&& lookup);
ModelParams bind_model_params(const ModelConfig& config, ParamSet& params);

std::string layer_param_name(int layer, const std::string& suffix);

template <class Lookup>
LayerParams bind_layer_params(int layer, Lookup&& lookup) {
  const auto required = [&](const std::string& suffix) {
    const std::string name = layer_param_name(layer, suffix);
    float* pointer = lookup(name);
    if (!pointer) throw std::logic_error("no parameter named '" + name + "'");
    return pointer;
  };
  // Linear weights may be absent: stores that materialise them one at a
  // time hand them out separately.
  const auto linear = [&](const std::string& module) {
    return LinearParams{lookup(layer_param_name(layer, module + ".weight")),
                        lookup(layer_param_name(layer, module + ".bias"))};
  };
  LayerParams p;
  p.input_norm = required("input_layernorm.weight");
  // LLaMA's post_attention_layernorm is the MLP's input norm; Gemma-2 norms
  // attention's output with it and has pre-/post_feedforward_layernorm.
  if (lookup(layer_param_name(layer, "pre_feedforward_layernorm.weight"))) {
    p.attn_out_norm = required("post_attention_layernorm.weight");
    p.mlp_norm = required("pre_feedforward_layernorm.weight");
    p.mlp_out_norm = required("post_feedforward_layernorm.weight");
  } else {
    p.mlp_norm = required("post_attention_layernorm.weight");
  }
  for (Linear which : kLinears) linear_of(p, which) = linear(linear_module(which));
  return p;
}

template <class Lookup>
HeadParams bind_head_params(const ModelConfig& config, Lookup&& lookup) {
  HeadParams head{lookup("model.embed_tokens.weight"), lookup("model.norm.weight"),
                  config.tie_word_embeddings ? nullptr : lookup("lm_head.weight")};
  if (config.tie_word_embeddings) head.lm_head = head.embed;
  if (!head.embed || !head.final_norm || !head.lm_head) throw std::logic_error("head parameters missing");
  return head;
}

}  // namespace qft
