#pragma once
// How a model trains, one struct per concern, each setting in one place:
// the optimizer and its hyper-parameters, QFT's INT8 storage, LoRA, and the
// run's shape (micro-batches per step, recomputation, the seed). The
// commands fill these from their options; the trainer, the stores and the
// memory plan read them (train/optimizers.h says what each optimizer is).
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "model/parameters.h"
#include "optim/optimizer.h"
#include "quant/quantizer.h"

namespace qft {

enum class OptimizerKind { QLion, Lion, AdamW, AdamW8bit, MixedAdamW };

// QFT's INT8 storage (paper Section 3): QLion's weights, and LoRA's INT8 base.
struct QftSettings {
  float outlier_fraction = 0.01f;  // paper, Appendix C
  Rounding rounding = Rounding::Stochastic;
  // QLion: the INT8 gradient stack even with one micro-batch per step (the
  // paper's pipeline) instead of updating inside backward.
  bool stack_gradients = false;
  // QLion's momentum: 8 bits with one range per row, or 4 bits with one
  // range per 64 values along a row (train/qft_store.cpp says why 64).
  int momentum_bits = 8;
};

// LoRA as PEFT makes it (train/lora_store.h).
struct LoraSettings {
  int rank = 8;
  float alpha = 16.0f;
  float dropout = 0.05f;
  // Every linear LoRA adapts (not Phi-3's fused ones).
  std::vector<Linear> targets = {Linear::Q, Linear::K, Linear::V, Linear::O, Linear::Gate, Linear::Up, Linear::Down};
  bool int8_base = false;       // the frozen base in QFT's hybrid INT8 form (QftSettings), else FP32
  std::string initial_adapter;  // a PEFT adapter directory to start from, or empty
};

// Data-parallel (several ranks, dist::world()): each rank runs its own
// micro-batches; the loss and gradients are those of all ranks' together
// (one shared denominator), each rank updates its share of every parameter
// and the shares are gathered, so every rank holds the same weights.
struct TrainingSettings {
  OptimizerKind optimizer = OptimizerKind::QLion;
  OptimizerSettings hyper;  // its betas, eps, weight decay (optimizer_defaults)
  QftSettings qft;
  int grad_accum = 1;       // micro-batches per step on each rank
  bool checkpointing = false;
  uint64_t seed = 0;        // stochastic rounding; LoRA's initialisation and dropout
  // LoRA: a frozen base with adapters that `optimizer` (adamw, lion or adamw8bit) trains.
  std::optional<LoraSettings> lora;
};

// The micro-batches a memory plan is for, and which data-parallel rank's
// plan (-1: the rank that needs the most).
struct PlanShape {
  int seq_len = 2048;
  int batch = 1;
  int ranks = 1, rank = -1;
};

}  // namespace qft
