#include "model/generator.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <numeric>

#include "core/error.h"

namespace qft {
namespace {

constexpr int kChunk = 256;  // prompt tokens per forward pass

}  // namespace

Generator::Generator(const ModelConfig& config, ParameterStore& store, int max_positions)
    : config_(config),
      transformer_(config, store),
      cache_(config, max_positions),
      rope_(rope_frequencies(config.rope_scaling, config.head_dim, config.rope_theta, config.max_position_embeddings)) {}

const float* Generator::append(const std::vector<int>& tokens) {
  if (tokens.empty()) fail("nothing to append");
  if (cache_.length + static_cast<int>(tokens.size()) > cache_.capacity) {
    fail("the context would hold ", cache_.length + tokens.size(), " tokens; the limit is ", cache_.capacity);
  }
  for (int token : tokens) {
    if (token < 0 || token >= config_.vocab_size) fail("token id ", token, " is outside the vocabulary");
  }
  const int end = cache_.length + static_cast<int>(tokens.size());
  const bool long_rope = !rope_.long_inverse.empty() && end > rope_.long_beyond;
  if (long_rope && cache_.length > 0 && cache_.length <= rope_.long_beyond) {
    // transformers drops the cache here and runs the whole context again.
    std::vector<int> context = context_;
    reset();
    forward(context, true);
  }
  forward(tokens, long_rope);
  return logits_;
}

void Generator::forward(const std::vector<int>& tokens, bool long_rope) {
  if (!rope_.long_inverse.empty()) context_.insert(context_.end(), tokens.begin(), tokens.end());
  for (size_t begin = 0; begin < tokens.size(); begin += kChunk) {
    const int N = static_cast<int>(std::min<size_t>(kChunk, tokens.size() - begin));
    logits_ = transformer_.forward_cached(tokens.data() + begin, N, cache_, long_rope);
  }
}

int sample_token(const float* logits, int V, const SamplingSettings& settings, std::mt19937_64& generator) {
  if (settings.temperature <= 0.0f) return static_cast<int>(std::max_element(logits, logits + V) - logits);
  const float max = *std::max_element(logits, logits + V);
  std::vector<std::pair<double, int>> probabilities(V);
  double total = 0.0;
  for (int i = 0; i < V; ++i) {
    probabilities[i] = {std::exp((static_cast<double>(logits[i]) - max) / settings.temperature), i};
    total += probabilities[i].first;
  }
  std::sort(probabilities.begin(), probabilities.end(), std::greater<>());
  // The nucleus: the most likely tokens whose mass first reaches top_p.
  double kept = 0.0;
  size_t size = 0;
  while (size < probabilities.size() && (size == 0 || kept < settings.top_p * total)) kept += probabilities[size++].first;
  double draw = std::uniform_real_distribution<double>(0.0, kept)(generator);
  for (size_t i = 0; i < size; ++i) {
    draw -= probabilities[i].first;
    if (draw < 0.0) return probabilities[i].second;
  }
  return probabilities[size - 1].second;
}

}  // namespace qft
