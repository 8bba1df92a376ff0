#pragma once
// LoRA (Hu et al. 2021) as PEFT implements it: every target linear keeps its
// weight W frozen and learns W + (alpha / r) · B·A, A (r, in) initialised
// Kaiming-uniform (PEFT: U(−1/√in, 1/√in)), B (out, r) zero, dropout on the
// adapter's input only. The frozen base is FP32, or QFT's hybrid INT8 form
// (rounded to nearest once, de-quantized one matrix at a time: no FP32 copy
// of the model). Only the adapters have gradients; an FP32 optimizer updates
// them between steps.
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "io/state_file.h"
#include "model/parameter_store.h"
#include "model/weights.h"
#include "train/settings.h"

namespace qft {

// PEFT's module names: "q_proj", "k_proj", …, "down_proj".
const char* peft_module(Linear which);
// "q_proj,v_proj" → targets in model order; throws naming an unknown module.
std::vector<Linear> parse_lora_targets(const std::string& list);
std::string lora_targets_text(const std::vector<Linear>& targets);  // "q_proj,v_proj"

// The adapters' parameters by PEFT name (without PEFT's "base_model.model."
// prefix): "model.layers.L.self_attn.q_proj.lora_A.weight" (r, in) and
// "….lora_B.weight" (out, r), per layer and target, in model order.
std::vector<ParamSpec> lora_adapter_specs(const ModelConfig& config, const LoraSettings& settings);

// Bytes a LoraStore allocates.
struct LoraMemory {
  size_t base = 0;       // FP32 parameters, or hybrid matrices + FP32 norms and biases
  size_t adapters = 0;   // A and B
  size_t grads = 0;      // their gradients
  size_t workspace = 0;  // one de-quantized matrix (INT8 base)
};

class LoraStore final : public ParameterStore {
 public:
  // settings.lora's adapters; an INT8 base by settings.qft; settings.seed
  // keys A's initialisation and the dropout masks.
  static LoraMemory memory(const ModelConfig& config, const TrainingSettings& settings);
  LoraStore(const ModelSource& source, const TrainingSettings& settings);
  ~LoraStore() override;

  const LayerParams& layer_weights(int layer) override { return base_->layer_weights(layer); }
  kernels::Operand linear_weight(int layer, Linear which) override { return base_->linear_weight(layer, which); }
  void embed(float* out, const int* tokens, int N) override { base_->embed(out, tokens, N); }
  const HeadParams& head_weights() override { return base_->head_weights(); }
  int head_block_rows() override { return base_->head_block_rows(); }
  kernels::Operand lm_head_rows(int first, int rows) override { return base_->lm_head_rows(first, rows); }
  const LayerParams& layer_grads(int layer) override { return base_->layer_grads(layer); }
  float* linear_grad(int layer, Linear which) override { return base_->linear_grad(layer, which); }
  void linear_grad_done(int layer, Linear which) override { base_->linear_grad_done(layer, which); }
  void layer_grads_done(int layer) override { base_->layer_grads_done(layer); }
  const HeadParams& head_grads() override { return base_->head_grads(); }
  void head_grads_done() override { base_->head_grads_done(); }
  float* lm_head_grad(int first, int rows) override { return base_->lm_head_grad(first, rows); }
  void lm_head_grad_done(int first, int rows) override { base_->lm_head_grad_done(first, rows); }
  float* embedding_grad(int first, int rows) override { return base_->embedding_grad(first, rows); }
  void embedding_grad_done(int first, int rows) override { base_->embedding_grad_done(first, rows); }
  const LoraAdapter* adapter(int layer, Linear which) override;

  // The dropout masks of micro-batch `index` (from 0) of step `step`: a
  // function of (seed, step, index, layer, linear, row, column).
  void begin_micro_batch(int step, int index);

  const LoraSettings& settings() const { return settings_; }
  ParamSet& adapters() { return adapters_; }
  const ParamSet& adapters() const { return adapters_; }
  ParamSet& adapter_grads() { return grads_; }
  // Parameter `index` of the model with its adapter merged: W + scale · B·A, out (numel).
  void merged(size_t index, float* out);
  // XXH64 over the base's FP32 values as loaded: a checkpoint names its base by it.
  uint64_t base_fingerprint() const { return fingerprint_; }

 private:
  class FrozenInt8;
  void bind_adapters();
  void initialise_adapters();
  void load_initial_adapter(const std::string& directory);

  LoraSettings settings_;
  uint64_t seed_ = 0;
  ModelConfig config_;
  std::vector<ParamSpec> specs_;
  std::unique_ptr<ParamSet> fp32_base_;  // FP32 base only
  FrozenInt8* int8_base_ = nullptr;      // INT8 base only: owned by base_
  std::unique_ptr<ParameterStore> base_;
  ParamSet adapters_;
  ParamSet grads_;
  std::vector<LoraAdapter> views_;  // per layer × linear; rank 0 where there is no adapter
  std::map<std::string, size_t> adapter_of_weight_;  // a target weight's name → its view
  uint64_t fingerprint_ = 0;
};

}  // namespace qft
