#pragma once
// qft train's data: the lines of a token file (one sequence each), B lines
// a micro-batch, handed out in file order and wrapping around at its end (an
// epoch). A checkpoint keeps the next line and what identifies the file.
#include <vector>

#include "data/batch.h"
#include "train/trainer.h"

namespace qft {

class TokenLines final : public TrainingData {
 public:
  TokenLines(std::vector<TokenSequence> lines, int batch_lines);

  PlanShape plan_shape() const override;
  int next_step(int count) override;
  Batch micro_batch(int i) const override { return step_.at(i); }
  int epoch() const override { return epoch_; }
  nlohmann::json position() const override;
  void seek(const nlohmann::json& position, const std::string& where) override;
  const char* command() const override { return "qft train"; }

 private:
  std::vector<TokenSequence> lines_;
  int batch_lines_;
  size_t next_ = 0;  // the next line to hand out
  int epoch_ = 1;
  std::vector<Batch> step_;  // the current step's micro-batches
};

}  // namespace qft
