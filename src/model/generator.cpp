#include "model/generator.h"

#include <omp.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <numeric>

#include "core/carver.h"
#include "core/error.h"
#include "kernels/kernels.h"
#include "model/transformer.h"

namespace qft {
namespace {

constexpr int kChunk = 256;  // prompt tokens per forward chunk

struct Views {
  float *x, *ln, *rstd, *q, *k, *v, *attn, *tmp, *gate, *up, *hidden, *scores;
};

Views carve(Carver& carver, const ModelConfig& c, int max_positions) {
  const size_t n = kChunk;
  Views w;
  w.x = carver.take(n * c.hidden_size);
  w.ln = carver.take(n * c.hidden_size);
  w.rstd = carver.take(n);
  w.q = carver.take(n * c.q_dim());
  w.k = carver.take(n * c.kv_dim());
  w.v = carver.take(n * c.kv_dim());
  w.attn = carver.take(n * c.q_dim());
  w.tmp = carver.take(n * c.hidden_size);
  w.gate = carver.take(n * c.intermediate_size);
  w.up = carver.take(n * c.intermediate_size);
  w.hidden = carver.take(n * c.intermediate_size);
  w.scores = carver.take(kernels::attention_cached_workspace_floats(kChunk, max_positions - kChunk, c.num_heads));
  return w;
}

}  // namespace

Generator::Generator(const ModelConfig& config, ParameterStore& store, int max_positions)
    : config_(config), store_(store), max_positions_(max_positions) {
  const size_t cache = static_cast<size_t>(config.num_layers) * max_positions * config.kv_dim();
  k_cache_ = Buffer<float>(MemCategory::Activations, cache);
  v_cache_ = Buffer<float>(MemCategory::Activations, cache);
  const size_t table = rope_table_floats(config.rope_scaling, config.head_dim, max_positions) / 2;
  rope_cos_ = Buffer<float>(MemCategory::Workspace, table);
  rope_sin_ = Buffer<float>(MemCategory::Workspace, table);
  rope_ = rope_frequencies(config.rope_scaling, config.head_dim, config.rope_theta, config.max_position_embeddings);
  fill_rope_tables(rope_cos_.data(), rope_sin_.data(), max_positions, config.head_dim, rope_);
  Carver size(nullptr);
  carve(size, config, max_positions);
  workspace_ = Buffer<float>(MemCategory::Workspace, size.used());
  logits_ = Buffer<float>(MemCategory::Workspace, config.vocab_size);
}

const float* Generator::append(const std::vector<int>& tokens) {
  if (tokens.empty()) fail("nothing to append");
  if (position_ + static_cast<int>(tokens.size()) > max_positions_) {
    fail("the context would hold ", position_ + tokens.size(), " tokens; the limit is ", max_positions_);
  }
  for (int token : tokens) {
    if (token < 0 || token >= config_.vocab_size) fail("token id ", token, " is outside the vocabulary");
  }
  const int end = position_ + static_cast<int>(tokens.size());
  const bool long_rope = !rope_.long_inverse.empty() && end > rope_.long_beyond;
  if (long_rope && position_ > 0 && position_ <= rope_.long_beyond) {
    // transformers drops the cache here and runs the whole context again.
    std::vector<int> context = context_;
    reset();
    forward(context, true);
  }
  forward(tokens, long_rope);
  return logits_.data();
}

void Generator::forward(const std::vector<int>& tokens, bool long_rope) {
  if (!rope_.long_inverse.empty()) context_.insert(context_.end(), tokens.begin(), tokens.end());
  for (size_t begin = 0; begin < tokens.size(); begin += kChunk) {
    forward_chunk(tokens.data() + begin, static_cast<int>(std::min<size_t>(kChunk, tokens.size() - begin)), long_rope);
  }
}

// One chunk of N tokens at positions position_ … position_ + N − 1 through
// every layer, filling the caches; leaves the last token's logits.
void Generator::forward_chunk(const int* tokens, int N, bool long_rope) {
  const ModelConfig& c = config_;
  const int C = c.hidden_size, Q = c.q_dim(), KV = c.kv_dim(), I = c.intermediate_size;
  Carver carver(workspace_.data());
  const Views w = carve(carver, c, max_positions_);
  std::vector<int> positions(N);
  std::iota(positions.begin(), positions.end(), position_ + (long_rope ? max_positions_ : 0));  // rows of the RoPE tables

  store_.embed(w.x, tokens, N);
  if (c.embedding_scale() != 1.0f) kernels::scale_forward(w.x, static_cast<size_t>(N) * C, c.embedding_scale());
  const float offset = c.norm_offset();
  for (int layer = 0; layer < c.num_layers; ++layer) {
    const LayerParams& p = store_.layer_weights(layer);
    const auto linear = [&](Linear which, float* out, const float* inp, int in, int out_features) {
      kernels::linear_forward(out, inp, store_.linear_weight(layer, which), linear_of(p, which).bias, N, in, out_features);
    };
    // x += the block's projection, normed first in Gemma-2.
    const auto add_projection = [&](const float* out_norm) {
      if (out_norm) kernels::rmsnorm_forward(w.tmp, w.rstd, w.tmp, out_norm, N, C, c.rms_norm_eps, offset);
      kernels::residual_forward(w.x, w.x, w.tmp, static_cast<size_t>(N) * C);
    };
    float* k_cache = k_cache_.data() + static_cast<size_t>(layer) * max_positions_ * KV;  // (T, KV·D)
    float* v_cache = v_cache_.data() + static_cast<size_t>(layer) * max_positions_ * KV;
    kernels::rmsnorm_forward(w.ln, w.rstd, w.x, p.input_norm, N, C, c.rms_norm_eps, offset);
    if (c.fused_projections()) {
      linear_forward_blocks({{w.q, Q}, {w.k, KV}, {w.v, KV}}, w.ln, store_.linear_weight(layer, Linear::QKV), p.qkv.bias, N, C);
    } else {
      linear(Linear::Q, w.q, w.ln, C, Q);
      linear(Linear::K, w.k, w.ln, C, KV);
      linear(Linear::V, w.v, w.ln, C, KV);
    }
    kernels::rope_forward(w.q, positions.data(), rope_cos_.data(), rope_sin_.data(), N, c.num_heads, c.head_dim);
    kernels::rope_forward(w.k, positions.data(), rope_cos_.data(), rope_sin_.data(), N, c.num_kv_heads, c.head_dim);
    std::memcpy(k_cache + static_cast<size_t>(position_) * KV, w.k, static_cast<size_t>(N) * KV * sizeof(float));
    std::memcpy(v_cache + static_cast<size_t>(position_) * KV, w.v, static_cast<size_t>(N) * KV * sizeof(float));
    kernels::attention_cached(w.attn, w.scores, w.q, k_cache, v_cache, N, position_, c.num_heads, c.num_kv_heads,
                              c.head_dim, c.attention_scale(), c.attn_logit_softcapping, c.attention_window(layer));
    linear(Linear::O, w.tmp, w.attn, Q, C);
    add_projection(p.attn_out_norm);
    kernels::rmsnorm_forward(w.ln, w.rstd, w.x, p.mlp_norm, N, C, c.rms_norm_eps, offset);
    if (c.fused_projections()) {
      linear_forward_blocks({{w.gate, I}, {w.up, I}}, w.ln, store_.linear_weight(layer, Linear::GateUp), p.gate_up.bias, N, C);
    } else {
      linear(Linear::Gate, w.gate, w.ln, C, I);
      linear(Linear::Up, w.up, w.ln, C, I);
    }
    gate_forward(c.activation, w.hidden, w.gate, w.up, static_cast<size_t>(N) * I);
    linear(Linear::Down, w.tmp, w.hidden, I, C);
    add_projection(p.mlp_out_norm);
  }
  const HeadParams& head = store_.head_weights();
  const float* last = w.x + static_cast<size_t>(N - 1) * C;  // (C)
  kernels::rmsnorm_forward(w.ln, w.rstd, last, head.final_norm, 1, C, c.rms_norm_eps, offset);
  kernels::linear_forward(logits_.data(), w.ln, store_.lm_head_weight(), nullptr, 1, C, c.vocab_size);
  if (c.final_logit_softcapping > 0) kernels::softcap_forward(logits_.data(), c.vocab_size, c.final_logit_softcapping);
  position_ += N;
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
