#pragma once
// Autoregressive inference with a key/value cache: the prompt is fed in
// chunks, then one token at a time, through the transformer's own layers
// (Transformer::forward_cached); each call returns the next-token logits.
#include <cstdint>
#include <random>
#include <vector>

#include "model/config.h"
#include "model/parameter_store.h"
#include "model/rope.h"
#include "model/transformer.h"

namespace qft {

class Generator {
 public:
  // Positions beyond max_positions are refused.
  Generator(const ModelConfig& config, ParameterStore& store, int max_positions);

  // Appends tokens to the context; returns the logits (V) that follow the last one.
  // With longrope, a context growing past original_max_position_embeddings is
  // recomputed with the long factors, as transformers' Phi-3 generate does.
  const float* append(const std::vector<int>& tokens);
  int position() const { return cache_.length; }
  void reset() { cache_.length = 0, context_.clear(); }

 private:
  // `long_rope`: the longrope rows of the RoPE tables.
  void forward(const std::vector<int>& tokens, bool long_rope);

  ModelConfig config_;
  Transformer transformer_;
  KvCache cache_;
  RopeFrequencies rope_;
  std::vector<int> context_;  // the tokens so far, kept for longrope's recomputation
  const float* logits_ = nullptr;  // (V) after the last token
};

struct SamplingSettings {
  float temperature = 0.0f;  // 0: greedy
  float top_p = 1.0f;
};

// The next token from logits (V): the argmax at temperature 0, else a draw
// from the tempered distribution restricted to its top-p nucleus.
int sample_token(const float* logits, int V, const SamplingSettings& settings, std::mt19937_64& generator);

}  // namespace qft
