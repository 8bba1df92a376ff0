#pragma once
// What evaluation asks of a model: −log p(target) for every row of a packed
// batch. Everything above it (perplexity, multiple choice) goes through a
// TokenScorer, so tests can swap the transformer for a function whose
// log-likelihoods are known by hand.
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <vector>

#include "data/batch.h"
#include "model/config.h"
#include "model/parameter_store.h"
#include "model/parameters.h"

namespace qft {

class Generator;
class Transformer;

// (N): −log p(batch.targets[i] | the rows before i in its sequence), 0 where
// targets[i] < 0 (Transformer::token_losses).
using TokenScorer = std::function<std::vector<double>(const Batch& batch)>;
TokenScorer transformer_scorer(Transformer& transformer);

// log p(candidate | context) for each candidate token after one context.
// Multiple-choice questions whose choices are all single tokens after one
// shared context (MMLU's " A" … " D") need one forward of the context for
// every choice this way, instead of one forward per choice.
using NextTokenScorer =
    std::function<std::vector<double>(const std::vector<int>& context, const std::vector<int>& candidates)>;

// A NextTokenScorer over FP32 weights through a KV-cache Generator (the
// logits of the context's last position, log-softmax in double); the cache
// grows to the longest context seen.
class GeneratorScorer {
 public:
  GeneratorScorer(const ModelConfig& config, ParamSet& weights);
  ~GeneratorScorer();
  std::vector<double> operator()(const std::vector<int>& context, const std::vector<int>& candidates);

 private:
  ModelConfig config_;
  Fp32ParameterStore store_;
  std::unique_ptr<Generator> generator_;
  int capacity_ = 0;
};

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
