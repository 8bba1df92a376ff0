#pragma once
// Mixed-precision AdamW, the usual baseline of Table 1: matrices stored and
// used in BF16, gradients accumulated in BF16, an FP32 master copy of every
// parameter and FP32 AdamW moments. Norm weights and biases are used at BF16
// precision too, held in FP32 (they are a tiny part of the model).
#include <memory>
#include <vector>

#include "io/state_file.h"
#include "model/weights.h"
#include "optim/optimizer.h"
#include "train/tensor_store.h"

namespace qft {

struct MixedMemory {
  size_t weights = 0, grads = 0, weight_copies = 0, moments = 0, workspace = 0;
};

class MixedPrecisionStore final : public TensorStore {
 public:
  static MixedMemory memory(const ModelConfig& config);

  MixedPrecisionStore(const ModelSource& source, const OptimizerSettings& adamw);
  ~MixedPrecisionStore() override;

  void begin_step(int step) { start_step(step); }
  // AdamW on the master weights from the accumulated gradients; writes the
  // BF16 weights back and clears the gradients. With apply false (a
  // non-finite step) it only clears them.
  void end_step(float lr, bool apply);
  // Checkpoints: the FP32 master weights, both moments and the step count.
  // The BF16 weights are rounded from the masters again on load (they are
  // exactly that after every step) and the gradients are zero between steps.
  void save_state(StateWriter& writer) const;
  void load_state(const StateReader& reader);

  // The FP32 master value of parameter `index`.
  void master(size_t index, float* out) const;

 private:
  struct Param;

  void load(size_t index, float* out, int first, int rows) const override;
  void load_bf16(size_t index, uint16_t* out, int first, int rows) const override;
  void gather_rows(float* out, size_t index, const int* rows, int N) const override;
  float* vector(size_t index) override;
  void consume(size_t index, const float* grad, int first, int rows) override;
  // BF16 weights (matrices) or BF16-rounded FP32 values (vectors) from the master.
  void round_from_master(size_t index);

  OptimizerSettings adamw_;
  std::vector<std::unique_ptr<Param>> params_;
  int64_t steps_ = 0;
};

}  // namespace qft
