#include "eval/scorer.h"

#include <algorithm>
#include <cmath>

#include "core/error.h"
#include "dist/world.h"
#include "model/generator.h"
#include "model/transformer.h"

namespace qft {

GeneratorScorer::GeneratorScorer(const ModelConfig& config, ParamSet& weights)
    : config_(config), store_(config, weights, nullptr) {}

GeneratorScorer::~GeneratorScorer() = default;

std::vector<double> GeneratorScorer::operator()(const std::vector<int>& context, const std::vector<int>& candidates) {
  if (context.empty()) fail("a next-token score needs a context");
  const int needed = static_cast<int>(context.size());
  if (!generator_ || needed > capacity_) {
    // Doubled (up to the model's context length) so rising lengths reallocate rarely.
    capacity_ = std::max({needed, std::min(2 * capacity_, config_.max_position_embeddings), 256});
    generator_.reset();  // its cache is freed before the larger one is taken
    generator_ = std::make_unique<Generator>(config_, store_, capacity_);
  }
  generator_->reset();
  const float* logits = generator_->append(context);
  const int V = config_.vocab_size;
  double max_logit = logits[0];
  for (int v = 1; v < V; ++v) max_logit = std::max<double>(max_logit, logits[v]);
  double total = 0.0;
  for (int v = 0; v < V; ++v) total += std::exp(logits[v] - max_logit);
  const double log_normalizer = max_logit + std::log(total);
  std::vector<double> result;
  for (int candidate : candidates) {
    if (candidate < 0 || candidate >= V) fail("token id ", candidate, " is outside the vocabulary");
    result.push_back(logits[candidate] - log_normalizer);
  }
  return result;
}

TokenScorer transformer_scorer(Transformer& transformer) {
  return [&transformer](const Batch& batch) { return transformer.token_losses(batch); };
}

int64_t ScoredSequence::scored_count() const {
  int64_t count = 0;
  for (size_t i = 1; i < tokens.size(); ++i) count += scored[i] != 0;
  return count;
}

Batch make_scored_batch(const std::vector<const ScoredSequence*>& sequences) {
  Batch batch;
  for (const ScoredSequence* sequence : sequences) {
    if (sequence->scored.size() != sequence->tokens.size()) fail("a scored sequence needs one flag per token");
    // The last token is a target only: feeding it would compute a row whose
    // prediction nobody reads.
    const int length = static_cast<int>(sequence->tokens.size()) - 1;
    if (length < 1) continue;
    batch.sequences.push_back({batch.size(), length});
    batch.max_length = std::max(batch.max_length, length);
    for (int i = 0; i < length; ++i) {
      const bool scored = sequence->scored[i + 1] != 0;
      batch.tokens.push_back(sequence->tokens[i]);
      batch.positions.push_back(i);
      batch.targets.push_back(scored ? sequence->tokens[i + 1] : -1);
      batch.predicted += scored;
    }
  }
  return batch;
}

std::vector<std::vector<double>> score_groups(const std::vector<std::vector<ScoredSequence>>& groups,
                                              const TokenScorer& scorer, size_t batch_tokens,
                                              const std::function<void(size_t, size_t)>& progress) {
  std::vector<std::vector<double>> sums(groups.size());
  for (size_t g = 0; g < groups.size(); ++g) sums[g].assign(groups[g].size(), 0.0);

  // Sequences that score something, in order; each batch is a run of groups.
  // Data-parallel, rank r scores batches r, r + N, … and the sums are shared.
  const dist::World& world = dist::world();
  size_t batches = 0;
  std::vector<const ScoredSequence*> pending;
  std::vector<std::pair<size_t, size_t>> owners;  // (group, index) of each pending sequence
  size_t pending_tokens = 0, first_pending_group = 0;
  auto run = [&](size_t groups_done) {
    if (!pending.empty() && batches++ % world.size() == static_cast<size_t>(world.rank())) {
      const Batch batch = make_scored_batch(pending);
      const std::vector<double> losses = scorer(batch);
      if (losses.size() != static_cast<size_t>(batch.size())) fail("the scorer returned ", losses.size(), " losses for ", batch.size(), " rows");
      for (size_t s = 0; s < pending.size(); ++s) {
        const auto& span = batch.sequences[s];
        double sum = 0.0;
        for (int i = 0; i < span.length; ++i) sum += losses[span.start + i];
        sums[owners[s].first][owners[s].second] = sum;
      }
    }
    pending.clear();
    owners.clear();
    pending_tokens = 0;
    first_pending_group = groups_done;
    if (progress) progress(groups_done, groups.size());
  };
  for (size_t g = 0; g < groups.size(); ++g) {
    size_t group_tokens = 0;
    for (const ScoredSequence& sequence : groups[g]) {
      if (sequence.scored_count() > 0) group_tokens += sequence.tokens.size() - 1;
    }
    if (pending_tokens > 0 && pending_tokens + group_tokens > batch_tokens) run(g);
    for (size_t s = 0; s < groups[g].size(); ++s) {
      if (groups[g][s].scored_count() == 0) continue;
      pending.push_back(&groups[g][s]);
      owners.emplace_back(g, s);
    }
    pending_tokens += group_tokens;
  }
  if (first_pending_group < groups.size() || !pending.empty()) run(groups.size());
  world.sum(sums);
  return sums;
}

}  // namespace qft
