#pragma once
// The learning-rate schedule of qft finetune: linear warm-up from 0 to the
// peak over warmup_steps, then cosine decay to peak · min_ratio at the last
// step (the paper's and most instruction-tuning recipes').
namespace qft {

struct LrSchedule {
  float peak = 2e-5f;
  int total_steps = 1;
  int warmup_steps = 0;
  float min_ratio = 0.0f;

  // step counts from 1.
  float at(int step) const;
};

}  // namespace qft
