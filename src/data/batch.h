#pragma once
// Several token sequences packed back to back, with next-token targets.
#include <cstdint>
#include <string>
#include <vector>

#include "kernels/kernels.h"

namespace qft {

using TokenSequence = std::vector<int>;

struct Batch {
  std::vector<int> tokens;     // (N)
  std::vector<int> targets;    // (N): the next token, or -1 where nothing is predicted
  std::vector<int> positions;  // (N): position within its own sequence
  std::vector<kernels::SequenceSpan> sequences;
  int64_t predicted = 0;  // targets ≥ 0
  int max_length = 0;

  int size() const { return static_cast<int>(tokens.size()); }
  kernels::BatchLayout layout() const { return {sequences.data(), static_cast<int>(sequences.size())}; }
};

// Each sequence predicts its own tokens 1..n−1 from the ones before.
Batch make_batch(const std::vector<TokenSequence>& sequences);

// Whitespace-separated ids in [0, vocab_size); errors start with `where`.
TokenSequence parse_token_ids(const std::string& text, int vocab_size, const std::string& where);

// One sequence per line, whitespace-separated ids in [0, vocab_size); empty
// lines are skipped. Errors name the file and line.
std::vector<TokenSequence> read_token_file(const std::string& path, int vocab_size);

}  // namespace qft
