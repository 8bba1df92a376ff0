#include "train/training.h"

#include "core/error.h"
#include "model/transformer.h"
#include "train/mixed_store.h"

namespace qft {
namespace {

int64_t predicted_tokens(const std::vector<Batch>& micro_batches) {
  int64_t total = 0;
  for (const Batch& batch : micro_batches) total += batch.predicted;
  if (total == 0) fail("the step predicts no tokens: each sequence needs at least 2");
  return total;
}

// Summed over micro-batches with one shared denominator: the gradient of the
// global batch's mean loss.
double forward_backward_all(Transformer& transformer, const std::vector<Batch>& micro_batches) {
  const int64_t denominator = predicted_tokens(micro_batches);
  double loss = 0.0;
  for (const Batch& batch : micro_batches) {
    if (batch.predicted > 0) loss += transformer.forward_backward(batch, denominator);
  }
  return loss;
}

class Fp32Training final : public Training {
 public:
  Fp32Training(const ModelSource& source, const TrainingSettings& settings)
      : config_(source.config()),
        weights_(load_fp32_weights(source)),
        grads_(MemCategory::Gradients, source.specs()),
        transformer_(config_, *weights_, &grads_, {.checkpointing = settings.checkpointing}),
        optimizer_(make_optimizer(settings.fp32, source.specs(), weights_->total_numel())) {}

  double step(int, float lr, const std::vector<Batch>& micro_batches) override {
    grads_.zero();
    const double loss = forward_backward_all(transformer_, micro_batches);
    optimizer_->step(*weights_, grads_, lr);
    return loss;
  }

  void save(const std::string& directory) override {
    save_hf_model(directory, config_, [&](size_t i, float* out) { parameter(i, out); });
  }
  double evaluate(const Batch& batch) override { return transformer_.loss(batch); }
  void parameter(size_t index, float* out) override {
    std::copy(weights_->data(index), weights_->data(index) + weights_->numel(index), out);
  }

 private:
  ModelConfig config_;
  std::unique_ptr<ParamSet> weights_;
  ParamSet grads_;
  Transformer transformer_;
  std::unique_ptr<Optimizer> optimizer_;
};

class QftTraining final : public Training {
 public:
  QftTraining(const ModelSource& source, const TrainingSettings& settings)
      : config_(source.config()),
        store_(source, settings.qft),
        transformer_(config_, store_, {.checkpointing = settings.checkpointing}),
        grad_accum_(settings.grad_accum) {}

  double step(int step, float lr, const std::vector<Batch>& micro_batches) override {
    if (static_cast<int>(micro_batches.size()) != grad_accum_) {
      fail("expected ", grad_accum_, " micro-batches per step, got ", micro_batches.size());
    }
    store_.begin_step(step, lr);
    const double loss = forward_backward_all(transformer_, micro_batches);
    store_.end_step();
    return loss;
  }

  void new_epoch() override { store_.refresh_thresholds(); }

  void save(const std::string& directory) override {
    save_hf_model(directory, config_, [&](size_t i, float* out) { parameter(i, out); });
  }
  double evaluate(const Batch& batch) override { return transformer_.loss(batch); }
  void parameter(size_t index, float* out) override { store_.dequantize(index, out); }

 private:
  ModelConfig config_;
  QftStore store_;
  Transformer transformer_;
  int grad_accum_;
};

class MixedPrecisionTraining final : public Training {
 public:
  MixedPrecisionTraining(const ModelSource& source, const TrainingSettings& settings)
      : config_(source.config()),
        store_(source, settings.fp32),
        transformer_(config_, store_, {.checkpointing = settings.checkpointing}) {}

  double step(int, float lr, const std::vector<Batch>& micro_batches) override {
    store_.begin_step();
    const double loss = forward_backward_all(transformer_, micro_batches);
    store_.end_step(lr);
    return loss;
  }

  void save(const std::string& directory) override {
    save_hf_model(directory, config_, [&](size_t i, float* out) { parameter(i, out); });
  }
  double evaluate(const Batch& batch) override { return transformer_.loss(batch); }
  void parameter(size_t index, float* out) override { store_.master(index, out); }

 private:
  ModelConfig config_;
  MixedPrecisionStore store_;
  Transformer transformer_;
};

}  // namespace

std::unique_ptr<Training> make_training(const ModelSource& source, const TrainingSettings& settings) {
  if (settings.grad_accum < 1) fail("--grad-accum must be at least 1");
  if (settings.optimizer == "qlion") {
    TrainingSettings qlion = settings;
    qlion.qft.lion = settings.fp32;
    qlion.qft.grad_accum = settings.grad_accum;
    return std::make_unique<QftTraining>(source, qlion);
  }
  if (settings.optimizer == "lion" || settings.optimizer == "adamw" || settings.optimizer == "adamw8bit") {
    return std::make_unique<Fp32Training>(source, settings);
  }
  if (settings.optimizer == "mixed-adamw") return std::make_unique<MixedPrecisionTraining>(source, settings);
  fail("unknown optimizer '", settings.optimizer, "' (expected qlion, lion, adamw, adamw8bit or mixed-adamw)");
}

}  // namespace qft
