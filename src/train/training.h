#pragma once
// One interface over the ways qft trains a model: FP32 AdamW or Lion on
// whole FP32 sets, or QFT (INT8 state, QLion). A step takes the micro-batches
// of one global batch; its loss is the mean over all their predicted tokens.
#include <memory>
#include <string>
#include <vector>

#include "data/batch.h"
#include "model/weights.h"
#include "optim/optimizer.h"
#include "train/qft_store.h"

namespace qft {

struct TrainingSettings {
  std::string optimizer = "qlion";  // qlion | lion | adamw | adamw8bit | mixed-adamw
  OptimizerSettings fp32;           // betas, eps, weight decay (all optimizers)
  QftSettings qft;                  // qlion only; lion settings come from fp32
  int grad_accum = 1;
  bool checkpointing = false;
};

class Training {
 public:
  virtual ~Training() = default;
  // One optimizer step (step counts from 1); returns the mean loss.
  virtual double step(int step, float lr, const std::vector<Batch>& micro_batches) = 0;
  // Called at each epoch boundary after the first.
  virtual void new_epoch() {}
  // Saves the model as an HF directory (FP32 safetensors).
  virtual void save(const std::string& directory) = 0;
  // The mean loss over the batch's predicted tokens, without training.
  virtual double evaluate(const Batch& batch) = 0;
  // Parameter `index` (of parameter_specs) in FP32: what an export writes.
  virtual void parameter(size_t index, float* out) = 0;
};

std::unique_ptr<Training> make_training(const ModelSource& source, const TrainingSettings& settings);

}  // namespace qft
