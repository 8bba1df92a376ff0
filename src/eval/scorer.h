#pragma once
// What evaluation asks of a model: −log p(target) for every row of a packed
// batch. Everything above it (perplexity, multiple choice) goes through a
// TokenScorer, so tests can swap the transformer for a function whose
// log-likelihoods are known by hand.
#include <cstddef>
#include <cstdint>
#include <functional>
#include <vector>

#include "data/batch.h"

namespace qft {

class Transformer;

// (N): −log p(batch.targets[i] | the rows before i in its sequence), 0 where
// targets[i] < 0 (Transformer::token_losses).
using TokenScorer = std::function<std::vector<double>(const Batch& batch)>;
TokenScorer transformer_scorer(Transformer& transformer);

// A token sequence and which of its tokens are scored, each predicted from
// the tokens before it in the sequence (so the first token never is).
struct ScoredSequence {
  std::vector<int> tokens;
  std::vector<uint8_t> scored;  // (tokens): 1 where the token's −log p counts
  int64_t scored_count() const;  // scored tokens after the first
};

// Sequences packed back to back: inputs all but each sequence's last token
// (which is only ever a target), targets the next token where it is scored
// and −1 elsewhere.
Batch make_scored_batch(const std::vector<const ScoredSequence*>& sequences);

// Per group, per sequence: the summed −log p of its scored tokens. Groups are
// packed into batches of about `batch_tokens` tokens; a group is never split
// across batches (a multiple-choice question's choices run in one forward),
// and a group larger than the budget runs alone. Sequences with nothing
// scored get 0 without being run. `progress(done, total)`, if set, is called
// after each batch with the groups finished so far.
std::vector<std::vector<double>> score_groups(const std::vector<std::vector<ScoredSequence>>& groups,
                                              const TokenScorer& scorer, size_t batch_tokens,
                                              const std::function<void(size_t, size_t)>& progress = {});

}  // namespace qft
