#include "train/token_lines.h"

#include <algorithm>

#include "core/error.h"
#include "io/state_file.h"

namespace qft {
namespace {

// Identifies the token file's contents, so a resumed run continues on the
// same data from the same line.
std::string tokens_checksum(const std::vector<TokenSequence>& lines) {
  uint64_t hash = lines.size();
  for (const TokenSequence& line : lines) hash = xxh64(line.data(), line.size() * sizeof(int), hash) + line.size();
  return hex64(hash);
}

}  // namespace

TokenLines::TokenLines(std::vector<TokenSequence> lines, int batch_lines)
    : lines_(std::move(lines)), batch_lines_(batch_lines) {
  if (batch_lines_ < 1) fail("--batch must be at least 1");
  if (lines_.empty()) fail("the token file holds no sequence");
}

// The longest line, B lines a micro-batch.
PlanShape TokenLines::plan_shape() const {
  size_t longest = 2;
  for (const TokenSequence& line : lines_) longest = std::max(longest, line.size());
  PlanShape shape;
  shape.seq_len = static_cast<int>(longest);
  shape.batch = batch_lines_;
  return shape;
}

// One new epoch at most per step, however often the lines wrapped.
int TokenLines::next_step(int count) {
  bool new_epoch = false;
  step_.clear();
  for (int b = 0; b < count; ++b) {
    std::vector<TokenSequence> taken;
    for (int i = 0; i < batch_lines_; ++i) {
      if (next_ == lines_.size()) {
        next_ = 0;
        new_epoch = true;
      }
      taken.push_back(lines_[next_++]);
    }
    step_.push_back(make_batch(taken));
  }
  epoch_ += new_epoch;
  return new_epoch ? 1 : 0;
}

nlohmann::json TokenLines::position() const {
  return {{"next_line", next_}, {"lines", lines_.size()}, {"batch", batch_lines_}, {"tokens_checksum", tokens_checksum(lines_)}};
}

// After checking it was taken on the same token file with the same --batch.
void TokenLines::seek(const nlohmann::json& position, const std::string& where) {
  if (position.at("tokens_checksum").get<std::string>() != tokens_checksum(lines_) ||
      position.at("lines").get<size_t>() != lines_.size()) {
    fail(where, ": the checkpoint was taken on other --tokens data (", position.at("lines").get<size_t>(), " lines)");
  }
  if (position.at("batch").get<int>() != batch_lines_) {
    fail(where, ": the checkpoint was taken with --batch ", position.at("batch").get<int>(), ", this run has ", batch_lines_);
  }
  next_ = position.at("next_line").get<size_t>();
  if (next_ > lines_.size()) fail(where, ": next_line ", next_, " is beyond the token file");
}

}  // namespace qft
