#pragma once
// Autoregressive inference with a key/value cache: the prompt is fed in
// chunks, then one token at a time; each call returns the next-token logits.
#include <cstdint>
#include <random>
#include <vector>

#include "core/memory.h"
#include "model/config.h"
#include "model/parameter_store.h"

namespace qft {

class Generator {
 public:
  // Positions beyond max_positions are refused.
  Generator(const ModelConfig& config, ParameterStore& store, int max_positions);

  // Appends tokens to the context; returns the logits (V) that follow the last one.
  // With longrope, a context growing past original_max_position_embeddings is
  // recomputed with the long factors, as transformers' Phi-3 generate does.
  const float* append(const std::vector<int>& tokens);
  int position() const { return position_; }
  void reset() { position_ = 0, context_.clear(); }

 private:
  // `long_rope`: the longrope rows of the RoPE tables.
  void forward_chunk(const int* tokens, int N, bool long_rope);
  void forward(const std::vector<int>& tokens, bool long_rope);

  ModelConfig config_;
  ParameterStore& store_;
  int max_positions_;
  int position_ = 0;
  RopeFrequencies rope_;
  std::vector<int> context_;         // the tokens so far, kept for longrope's recomputation
  Buffer<float> k_cache_, v_cache_;  // (L, max_positions, KV·D)
  Buffer<float> rope_cos_, rope_sin_;  // (max_positions, D/2); longrope: short, then long rows
  Buffer<float> workspace_;
  Buffer<float> logits_;  // (V)
};

struct SamplingSettings {
  float temperature = 0.0f;  // 0: greedy
  float top_p = 1.0f;
};

// The next token from logits (V): the argmax at temperature 0, else a draw
// from the tempered distribution restricted to its top-p nucleus.
int sample_token(const float* logits, int V, const SamplingSettings& settings, std::mt19937_64& generator);

}  // namespace qft
