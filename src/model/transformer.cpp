#include "model/transformer.h"

#include <algorithm>
#include <cstring>

#include "core/carver.h"
#include "core/error.h"

namespace qft {
namespace {

// Bounds on the logits the head materialises at once: a chunk of rows ×
// the vocabulary, or all rows × a block of the vocabulary.
constexpr size_t kLogitsChunkFloats = size_t{1} << 24;
constexpr size_t kLogitsBlockFloats = size_t{1} << 22;

void zero(float* values, size_t count) { kernels::zero(values, count * sizeof(float)); }

int logits_chunk_rows(const ModelConfig& config, int N) {
  const int rows = static_cast<int>(kLogitsChunkFloats / config.vocab_size);
  return std::clamp(rows, 1, std::max(N, 1));
}

// The vocabulary rows of one LM head block over N rows: the store's block,
// bounded by kLogitsBlockFloats; 0 when the head runs whole.
int vocabulary_block_rows(const ModelConfig& config, int N, const TransformerOptions& options) {
  if (options.head_block_rows <= 0 || options.head_block_rows >= config.vocab_size) return 0;
  const int rows = static_cast<int>(std::min<size_t>(options.head_block_rows, kLogitsBlockFloats / std::max(N, 1)));
  if (rows < 1) fail("a batch of ", N, " rows is more than the LM head's logits block holds (", kLogitsBlockFloats, ")");
  return rows;
}

// The logits scratch: (chunk rows, V), or (N, block rows) over vocabulary blocks.
size_t logits_floats(const ModelConfig& config, int N, const TransformerOptions& options) {
  const int block = vocabulary_block_rows(config, N, options);
  if (block > 0) return static_cast<size_t>(N) * block;
  return static_cast<size_t>(logits_chunk_rows(config, N)) * config.vocab_size;
}

// The MLP's gated activation (SwiGLU or GeGLU), forward (out (n) in FP32 or
// BF16) and backward; the kernels' contracts (kernels.h).
template <class T>
void gate_forward(Activation activation, T* out, const float* gate, const float* up, size_t n) {
  if (activation == Activation::Silu) return kernels::swiglu_forward(out, gate, up, n);
  kernels::geglu_forward(out, gate, up, n);
}

void gate_backward(Activation activation, float* dgate, float* dup, const float* dout, const float* gate,
                   const float* up, size_t n) {
  if (activation == Activation::Silu) return kernels::swiglu_backward(dgate, dup, dout, gate, up, n);
  kernels::geglu_backward(dgate, dup, dout, gate, up, n);
}

}  // namespace

bool bf16_activations(const TransformerOptions& options) {
  return kernels::compute() == kernels::Compute::BF16 && options.adapter_rank == 0;
}

void linear_forward_blocks(std::initializer_list<RowBlock> outputs, kernels::Operand inp, kernels::Operand weight,
                           const float* bias, int N, int IC) {
  size_t first = 0;
  for (const RowBlock& block : outputs) {
    kernels::linear_forward(block.values, inp, weight.from_row(first, IC), bias ? bias + first : nullptr, N, IC,
                            block.rows);
    first += block.rows;
  }
}

std::vector<int> linear_row_blocks(const ModelConfig& c, Linear which) {
  switch (which) {
    case Linear::Q: return {c.q_dim()};
    case Linear::K:
    case Linear::V: return {c.kv_dim()};
    case Linear::O:
    case Linear::Down: return {c.hidden_size};
    case Linear::Gate:
    case Linear::Up: return {c.intermediate_size};
    case Linear::QKV: return {c.q_dim(), c.kv_dim(), c.kv_dim()};
    case Linear::GateUp: return {c.intermediate_size, c.intermediate_size};
  }
  return {};
}

// Gradient scratch of one layer, the forward temporary and the logits chunk.
struct Transformer::Scratch {
  float* tmp;      // (N, C) projection output before the residual add
  float* dresid;   // (N, C)
  float* dln;      // (N, C)
  float* dattn;    // (N, H·D)
  float* dq;       // (N, H·D)
  float* dk;       // (N, KV·D)
  float* dv;       // (N, KV·D)
  float* dhidden;  // (N, I), where dattn … dv are
  float* logits;   // (R, V) in row chunks, or (N, block rows) in vocabulary blocks
};

Transformer::Scratch Transformer::carve_scratch(Carver& carver, const ModelConfig& c, int N, bool gradients,
                                                size_t logits_floats) {
  const size_t n = static_cast<size_t>(N);
  Scratch s{};
  s.tmp = carver.take(n * c.hidden_size);
  if (gradients) {
    s.dresid = carver.take(n * c.hidden_size);
    s.dln = carver.take(n * c.hidden_size);
    // The MLP's backward is done with dhidden before attention's begins, so
    // the attention gradients share its room.
    const auto carve_attention = [&](Carver& room) {
      s.dattn = room.take(n * c.q_dim());
      s.dq = room.take(n * c.q_dim());
      s.dk = room.take(n * c.kv_dim());
      s.dv = room.take(n * c.kv_dim());
    };
    Carver measure(nullptr);
    carve_attention(measure);
    s.dhidden = carver.take(std::max(measure.used(), n * c.intermediate_size));
    Carver shared(s.dhidden);
    carve_attention(shared);
  }
  s.logits = carver.take(logits_floats);
  return s;
}

Transformer::AdapterScratch Transformer::carve_adapter_scratch(Carver& carver, const ModelConfig& c, int N,
                                                              int rank) {
  if (rank == 0) return {};
  const size_t n = static_cast<size_t>(N);
  const int largest_input = std::max({c.hidden_size, c.q_dim(), c.intermediate_size});
  AdapterScratch s;
  s.dropped = carver.take(n * largest_input);
  s.low = carver.take(n * rank);
  s.dlow = carver.take(n * rank);
  return s;
}

Transformer::LayerActivations Transformer::carve_layer(Carver& carver, const ModelConfig& c, int N, bool bf16) {
  const size_t n = static_cast<size_t>(N);
  const auto input = [&](size_t count) {
    ProductInput values;
    if (bf16) values.bf16 = reinterpret_cast<uint16_t*>(carver.take((count + 1) / 2));
    else values.fp32 = carver.take(count);
    return values;
  };
  LayerActivations a;
  a.ln1 = input(n * c.hidden_size);
  a.rstd1 = carver.take(n);
  a.q = input(n * c.q_dim());
  a.k = input(n * c.kv_dim());
  a.v = input(n * c.kv_dim());
  a.attn = carver.take(n * c.q_dim());
  a.lse = carver.take(n * c.num_heads);
  a.mid = carver.take(n * c.hidden_size);
  a.ln2 = input(n * c.hidden_size);
  a.rstd2 = carver.take(n);
  a.gate = carver.take(n * c.intermediate_size);
  a.up = carver.take(n * c.intermediate_size);
  a.hidden = input(n * c.intermediate_size);
  if (c.sandwich_norms()) {
    a.attn_proj = carver.take(n * c.hidden_size);
    a.attn_proj_rstd = carver.take(n);
    a.mlp_proj = carver.take(n * c.hidden_size);
    a.mlp_proj_rstd = carver.take(n);
  } else {
    a.attn_proj = a.attn_proj_rstd = a.mlp_proj = a.mlp_proj_rstd = nullptr;
  }
  return a;
}

KvCache::KvCache(const ModelConfig& config, int capacity)
    : capacity(capacity),
      row_floats(static_cast<size_t>(config.kv_dim())),
      keys_(MemCategory::Activations, static_cast<size_t>(config.num_layers) * capacity * config.kv_dim()),
      values_(MemCategory::Activations, static_cast<size_t>(config.num_layers) * capacity * config.kv_dim()) {}

Transformer::Transformer(const ModelConfig& config, ParamSet& weights, ParamSet* grads,
                         TransformerOptions options)
    : config_(config),
      options_(options),
      owned_store_(std::make_unique<Fp32ParameterStore>(config, weights, grads)),
      store_(*owned_store_),
      has_grads_(grads != nullptr) {}

Transformer::Transformer(const ModelConfig& config, ParameterStore& store, TransformerOptions options)
    : config_(config), options_(options), store_(store), has_grads_(true) {
  options_.head_block_rows = store.head_block_rows() < config.vocab_size ? store.head_block_rows() : 0;
}

Transformer::~Transformer() = default;

TransformerMemory Transformer::memory(const ModelConfig& c, int N, int max_length, bool training,
                                      const TransformerOptions& options) {
  const size_t n = static_cast<size_t>(N);
  TransformerMemory memory;
  memory.residual_floats = (c.num_layers + 1) * n * c.hidden_size;
  memory.final_norm_floats = n * c.hidden_size;
  memory.final_rstd_floats = n;
  const bool bf16 = bf16_activations(options);
  Carver layer(nullptr);
  carve_layer(layer, c, N, bf16);
  memory.layer_floats = layer.used();
  memory.stored_layers = training && !options.checkpointing ? c.num_layers : 1;
  Carver scratch(nullptr);
  carve_scratch(scratch, c, N, true, logits_floats(c, N, options));
  memory.scratch_floats = scratch.used();
  Carver adapter(nullptr);
  carve_adapter_scratch(adapter, c, N, options.adapter_rank);
  memory.adapter_floats = adapter.used();
  memory.attention_floats = kernels::attention_workspace_floats(attention_shape(c, N, max_length, 0));
  const int vocabulary_block = vocabulary_block_rows(c, N, options);
  memory.loss_doubles = n + 1 + (vocabulary_block > 0 ? kernels::kCrossEntropyStats * n : 0);
  // Every linear layer's products and the LM head's (attention stages its own in its workspace).
  kernels::GemmOperands products =
      vocabulary_block > 0
          ? kernels::linear_gemm_operands(N, c.hidden_size, vocabulary_block, false, options.bf16_weights)
          : kernels::linear_gemm_operands(logits_chunk_rows(c, N), c.hidden_size, c.vocab_size, false,
                                          options.bf16_weights);
  for (const Linear which : linears_of(c)) {
    const int inputs = which == Linear::O ? c.q_dim() : which == Linear::Down ? c.intermediate_size : c.hidden_size;
    const bool bf16_input = bf16 && which != Linear::O;  // attention's output stays FP32 for its backward
    for (const int rows : linear_row_blocks(c, which)) {
      products =
          kernels::largest(products, kernels::linear_gemm_operands(N, inputs, rows, bf16_input, options.bf16_weights));
    }
  }
  memory.compute_staging_bytes = kernels::compute_staging_bytes(products);
  memory.rope_positions = std::max(max_length, c.max_position_embeddings);
  memory.rope_floats = rope_table_floats(c.rope_scaling, c.head_dim, memory.rope_positions);
  return memory;
}

size_t TransformerMemory::activation_bytes() const {
  return (residual_floats + final_norm_floats + final_rstd_floats + stored_layers * layer_floats) * sizeof(float);
}

size_t TransformerMemory::workspace_bytes() const {
  return (scratch_floats + attention_floats + rope_floats + adapter_floats) * sizeof(float) +
         loss_doubles * sizeof(double) + compute_staging_bytes;
}

void Transformer::ensure_rope_tables(int positions) {
  if (positions <= rope_positions_) return;
  const ModelConfig& c = config_;
  rope_positions_ = std::max(positions, c.max_position_embeddings);
  const size_t floats = rope_table_floats(c.rope_scaling, c.head_dim, rope_positions_) / 2;
  rope_cos_ = Buffer<float>(MemCategory::Workspace, floats);
  rope_sin_ = Buffer<float>(MemCategory::Workspace, floats);
  fill_rope_tables(rope_cos_.data(), rope_sin_.data(), rope_positions_, c.head_dim,
                   rope_frequencies(c.rope_scaling, c.head_dim, c.rope_theta, c.max_position_embeddings));
}

void Transformer::prepare(const Batch& batch, bool training) {
  if (batch.predicted == 0) fail("the batch predicts no tokens: each sequence needs at least 2");
  if (training && !has_grads_) fail("this model was built without gradients");
  const ModelConfig& c = config_;
  const int N = batch.size();
  batch_ = &batch;
  cache_ = nullptr;
  rows_ = N;
  residual_slots_ = c.num_layers + 1;
  training_ = training;
  bf16_activations_ = bf16_activations(options_);
  const TransformerMemory sizes = memory(c, N, batch.max_length, training, options_);
  ensure_rope_tables(batch.max_length);
  rope_rows_.assign(batch.positions.begin(), batch.positions.end());
  const RopeFrequencies rope = rope_frequencies(c.rope_scaling, c.head_dim, c.rope_theta, c.max_position_embeddings);
  if (!rope.long_inverse.empty()) {
    for (const kernels::SequenceSpan& sequence : batch.sequences) {
      if (sequence.length <= rope.long_beyond) continue;
      for (int row = sequence.start; row < sequence.start + sequence.length; ++row) rope_rows_[row] += rope_positions_;
    }
  }
  ensure_capacity(residuals_, MemCategory::Activations, sizes.residual_floats);
  ensure_capacity(final_norm_out_, MemCategory::Activations, sizes.final_norm_floats);
  ensure_capacity(final_rstd_, MemCategory::Activations, sizes.final_rstd_floats);
  ensure_capacity(layer_storage_, MemCategory::Activations, sizes.stored_layers * sizes.layer_floats);
  layers_.clear();
  for (size_t layer = 0; layer < sizes.stored_layers; ++layer) {
    Carver carver(layer_storage_.data() + layer * sizes.layer_floats);
    layers_.push_back(carve_layer(carver, c, N, bf16_activations_));
  }
  ensure_capacity(scratch_buffer_, MemCategory::Workspace, sizes.scratch_floats);
  Carver scratch_carver(scratch_buffer_.data());
  scratch_ = std::make_unique<Scratch>(carve_scratch(scratch_carver, c, N, true, logits_floats(c, N, options_)));
  ensure_capacity(adapter_buffer_, MemCategory::Workspace, sizes.adapter_floats);
  Carver adapter_carver(adapter_buffer_.data());
  adapter_scratch_ = carve_adapter_scratch(adapter_carver, c, N, options_.adapter_rank);
  ensure_capacity(attention_workspace_, MemCategory::Workspace, sizes.attention_floats);
  ensure_capacity(losses_, MemCategory::Workspace, sizes.loss_doubles);
}

// Two residual slices, one layer's activations, the forward's temporary, one
// row of logits; the attention scratch grows in steps of 256 positions.
void Transformer::prepare_cached(int N, const KvCache& cache, bool long_rope) {
  const ModelConfig& c = config_;
  batch_ = nullptr;
  rows_ = N;
  residual_slots_ = 2;
  training_ = false;
  bf16_activations_ = false;
  ensure_rope_tables(cache.capacity);
  rope_rows_.resize(N);
  for (int i = 0; i < N; ++i) rope_rows_[i] = cache.length + i + (long_rope ? rope_positions_ : 0);
  const size_t n = static_cast<size_t>(N);
  ensure_capacity(residuals_, MemCategory::Activations, 2 * n * c.hidden_size);
  ensure_capacity(final_norm_out_, MemCategory::Activations, c.hidden_size);
  ensure_capacity(final_rstd_, MemCategory::Activations, 1);
  Carver layer_size(nullptr);
  carve_layer(layer_size, c, N, false);
  ensure_capacity(layer_storage_, MemCategory::Activations, layer_size.used());
  Carver layer_carver(layer_storage_.data());
  layers_.assign(1, carve_layer(layer_carver, c, N, false));
  Carver scratch_size(nullptr);
  carve_scratch(scratch_size, c, N, false, c.vocab_size);
  ensure_capacity(scratch_buffer_, MemCategory::Workspace, scratch_size.used());
  Carver scratch_carver(scratch_buffer_.data());
  scratch_ = std::make_unique<Scratch>(carve_scratch(scratch_carver, c, N, false, c.vocab_size));
  const int keys = (cache.length + N + 255) / 256 * 256;
  ensure_capacity(attention_workspace_, MemCategory::Workspace,
                  kernels::attention_cached_workspace_floats(N, keys - N, c.num_heads));
}

float* Transformer::residual(int layer) {
  return residuals_.data() + static_cast<size_t>(layer % residual_slots_) * rows_ * config_.hidden_size;
}

Transformer::LayerActivations& Transformer::activations_for(int layer) {
  return layers_.size() == 1 ? layers_[0] : layers_[layer];
}

kernels::AttentionShape Transformer::attention_shape(const ModelConfig& c, int N, int max_length, int layer) {
  return {N,           c.num_heads,           c.num_kv_heads,           c.head_dim,
          max_length,  c.attention_scale(),   c.attn_logit_softcapping, c.attention_window(layer)};
}

void Transformer::linear_forward(int layer, Linear which, float* out, const ProductInput& inp, int IC, int OC) {
  const int N = rows_;
  kernels::linear_forward(out, inp.operand(), store_.linear_weight(layer, which),
                          linear_of(store_.layer_weights(layer), which).bias, N, IC, OC);
  const LoraAdapter* adapter = store_.adapter(layer, which);
  if (!adapter) return;
  const AdapterScratch& s = adapter_scratch_;
  if (adapter->rank != options_.adapter_rank) fail("the adapters' rank differs from the transformer's");
  const kernels::DropoutMask dropout = training_ ? adapter->dropout : kernels::DropoutMask{};
  kernels::lora_forward(out, s.low, s.dropped, inp.fp32, adapter->a, adapter->b, dropout, N, IC, OC, adapter->rank,
                        adapter->scale);
}

void Transformer::linear_backward(int layer, Linear which, float* dinp, const float* dout, const ProductInput& inp,
                                  int IC, int OC) {
  const int N = rows_;
  const kernels::Operand weight = store_.linear_weight(layer, which);
  kernels::linear_backward(dinp, store_.linear_grad(layer, which), linear_of(store_.layer_grads(layer), which).bias,
                           dout, inp.operand(), weight, N, IC, OC);
  if (const LoraAdapter* adapter = store_.adapter(layer, which)) {
    const AdapterScratch& s = adapter_scratch_;
    kernels::lora_backward(dinp, adapter->grad_a, adapter->grad_b, s.low, s.dlow, s.dropped, dout, inp.fp32, adapter->a,
                           adapter->b, adapter->dropout, N, IC, OC, adapter->rank, adapter->scale);
  }
  store_.linear_grad_done(layer, which);
}

void Transformer::fused_forward(int layer, Linear which, std::initializer_list<RowBlock> outputs,
                                const ProductInput& inp, int IC) {
  linear_forward_blocks(outputs, inp.operand(), store_.linear_weight(layer, which),
                        linear_of(store_.layer_weights(layer), which).bias, rows_, IC);
}

void Transformer::fused_backward(int layer, Linear which, float* dinp, std::initializer_list<RowBlock> douts,
                                 const ProductInput& inp, int IC) {
  const kernels::Operand weight = store_.linear_weight(layer, which);
  float* dweight = store_.linear_grad(layer, which);
  float* dbias = linear_of(store_.layer_grads(layer), which).bias;
  size_t first = 0;
  for (const RowBlock& block : douts) {
    kernels::linear_backward(dinp, dweight ? dweight + first * IC : nullptr, dbias ? dbias + first : nullptr,
                             block.values, inp.operand(), weight.from_row(first, IC), rows_, IC, block.rows);
    first += block.rows;
  }
  store_.linear_grad_done(layer, which);
}

void Transformer::layer_forward(int layer, LayerActivations& a, const float* x_in, float* x_out) {
  const ModelConfig& c = config_;
  const LayerParams& w = store_.layer_weights(layer);
  const int N = rows_, C = c.hidden_size, Q = c.q_dim(), KV = c.kv_dim(), I = c.intermediate_size;
  float* tmp = scratch_->tmp;  // (N, C)
  const auto linear = [&](Linear which, float* out, const ProductInput& inp, int in, int out_features) {
    linear_forward(layer, which, out, inp, in, out_features);
  };

  const float offset = c.norm_offset();
  norm_into(a.ln1, a.rstd1, x_in, w.input_norm);
  // The projections' FP32 outputs: saved as they are, or (BF16 activations)
  // in the gradients' scratch, free until backward, and rounded into place.
  float* q = a.q.fp32 ? a.q.fp32 : scratch_->dq;  // (N, H·D)
  float* k = a.k.fp32 ? a.k.fp32 : scratch_->dk;  // (N, KV·D)
  float* v = a.v.fp32 ? a.v.fp32 : scratch_->dv;  // (N, KV·D)
  if (c.fused_projections()) {
    fused_forward(layer, Linear::QKV, {{q, Q}, {k, KV}, {v, KV}}, a.ln1, C);
  } else {
    linear(Linear::Q, q, a.ln1, C, Q);
    linear(Linear::K, k, a.ln1, C, KV);
    linear(Linear::V, v, a.ln1, C, KV);
  }
  position_into(a, q, k, v);
  attend(layer, a);
  if (c.sandwich_norms()) {
    linear(Linear::O, a.attn_proj, {a.attn}, Q, C);
    kernels::rmsnorm_forward(tmp, a.attn_proj_rstd, a.attn_proj, w.attn_out_norm, N, C, c.rms_norm_eps, offset);
  } else {
    linear(Linear::O, tmp, {a.attn}, Q, C);
  }
  kernels::residual_forward(a.mid, x_in, tmp, static_cast<size_t>(N) * C);

  norm_into(a.ln2, a.rstd2, a.mid, w.mlp_norm);
  if (c.fused_projections()) {
    fused_forward(layer, Linear::GateUp, {{a.gate, I}, {a.up, I}}, a.ln2, C);
  } else {
    linear(Linear::Gate, a.gate, a.ln2, C, I);
    linear(Linear::Up, a.up, a.ln2, C, I);
  }
  if (a.hidden.bf16) gate_forward(c.activation, a.hidden.bf16, a.gate, a.up, static_cast<size_t>(N) * I);
  else gate_forward(c.activation, a.hidden.fp32, a.gate, a.up, static_cast<size_t>(N) * I);
  if (c.sandwich_norms()) {
    linear(Linear::Down, a.mlp_proj, a.hidden, I, C);
    kernels::rmsnorm_forward(tmp, a.mlp_proj_rstd, a.mlp_proj, w.mlp_out_norm, N, C, c.rms_norm_eps, offset);
  } else {
    linear(Linear::Down, tmp, a.hidden, I, C);
  }
  kernels::residual_forward(x_out, a.mid, tmp, static_cast<size_t>(N) * C);
}

void Transformer::attend(int layer, LayerActivations& a) {
  const ModelConfig& c = config_;
  const int N = rows_;
  if (!cache_) {
    kernels::attention_forward(a.attn, a.lse, attention_workspace_.data(), a.q.operand(), a.k.operand(),
                               a.v.operand(), batch_->layout(), attention_shape(c, N, batch_->max_length, layer));
    return;
  }
  KvCache& cache = *cache_;
  const size_t rows = static_cast<size_t>(N) * c.kv_dim();
  kernels::copy(cache.keys(layer) + static_cast<size_t>(cache.length) * c.kv_dim(), a.k.fp32, rows * sizeof(float));
  kernels::copy(cache.values(layer) + static_cast<size_t>(cache.length) * c.kv_dim(), a.v.fp32, rows * sizeof(float));
  kernels::attention_cached(a.attn, attention_workspace_.data(), a.q.fp32, cache.keys(layer), cache.values(layer), N,
                            cache.length, c.num_heads, c.num_kv_heads, c.head_dim, c.attention_scale(),
                            c.attn_logit_softcapping, c.attention_window(layer));
}

void Transformer::norm_into(const ProductInput& out, float* rstd, const float* x, const float* weight) {
  const ModelConfig& c = config_;
  if (out.bf16) {
    kernels::rmsnorm_forward(out.bf16, rstd, x, weight, rows_, c.hidden_size, c.rms_norm_eps, c.norm_offset());
  } else {
    kernels::rmsnorm_forward(out.fp32, rstd, x, weight, rows_, c.hidden_size, c.rms_norm_eps, c.norm_offset());
  }
}

void Transformer::position_into(LayerActivations& a, float* q, float* k, float* v) {
  const ModelConfig& c = config_;
  const float* cos = rope_cos_.data();
  const float* sin = rope_sin_.data();
  if (!a.q.bf16) {
    kernels::rope_forward(q, rope_rows(), cos, sin, rows_, c.num_heads, c.head_dim);
    kernels::rope_forward(k, rope_rows(), cos, sin, rows_, c.num_kv_heads, c.head_dim);
    return;
  }
  kernels::rope_forward(a.q.bf16, q, rope_rows(), cos, sin, rows_, c.num_heads, c.head_dim);
  kernels::rope_forward(a.k.bf16, k, rope_rows(), cos, sin, rows_, c.num_kv_heads, c.head_dim);
  kernels::round_to_bf16(a.v.bf16, v, static_cast<size_t>(rows_) * c.kv_dim());
}

void Transformer::layer_backward(int layer, const LayerActivations& a, const float* x_in, float* dresid) {
  const ModelConfig& c = config_;
  const LayerParams& w = store_.layer_weights(layer);
  const LayerParams& g = store_.layer_grads(layer);
  const Batch& batch = *batch_;
  const Scratch& s = *scratch_;
  const int N = batch.size(), C = c.hidden_size, Q = c.q_dim(), KV = c.kv_dim(), I = c.intermediate_size;
  const size_t n = static_cast<size_t>(N);
  // Each weight gradient is handed back as soon as it is complete.
  const auto linear = [&](Linear which, float* dinp, const float* dout, const ProductInput& inp, int in, int out) {
    linear_backward(layer, which, dinp, dout, inp, in, out);
  };

  const float offset = c.norm_offset();
  // The gradient of a block's projection: dresid itself, or through Gemma-2's
  // norm of the projection's output (into s.dln, free until the block's norm).
  const auto projection_gradient = [&](float* dnorm_weight, const float* proj, const float* norm_weight,
                                       const float* rstd) -> const float* {
    if (!c.sandwich_norms()) return dresid;
    zero(s.dln, n * C);
    kernels::rmsnorm_backward(s.dln, dnorm_weight, dresid, proj, norm_weight, rstd, N, C, offset);
    return s.dln;
  };

  // MLP block: dresid holds the gradient of x_out = mid + down(hidden), normed in Gemma-2.
  const float* ddown = projection_gradient(g.mlp_out_norm, a.mlp_proj, w.mlp_out_norm, a.mlp_proj_rstd);
  zero(s.dhidden, n * I);
  linear(Linear::Down, s.dhidden, ddown, a.hidden, I, C);
  // The gate and up activations are not needed again: their gradients replace them.
  float* dgate = a.gate;  // (N, I)
  float* dup = a.up;      // (N, I)
  gate_backward(c.activation, dgate, dup, s.dhidden, a.gate, a.up, n * I);
  zero(s.dln, n * C);
  if (c.fused_projections()) {
    fused_backward(layer, Linear::GateUp, s.dln, {{dgate, I}, {dup, I}}, a.ln2, C);
  } else {
    linear(Linear::Gate, s.dln, dgate, a.ln2, C, I);
    linear(Linear::Up, s.dln, dup, a.ln2, C, I);
  }
  kernels::rmsnorm_backward(dresid, g.mlp_norm, s.dln, a.mid, w.mlp_norm, a.rstd2, N, C, offset);

  // Attention block: dresid now holds the gradient of mid = x_in + o(attn), normed in Gemma-2.
  const float* dproj = projection_gradient(g.attn_out_norm, a.attn_proj, w.attn_out_norm, a.attn_proj_rstd);
  zero(s.dattn, n * Q);
  linear(Linear::O, s.dattn, dproj, {a.attn}, Q, C);
  kernels::attention_backward(s.dq, s.dk, s.dv, attention_workspace_.data(), s.dattn, a.attn, a.q.operand(),
                              a.k.operand(), a.v.operand(), a.lse, batch.layout(),
                              attention_shape(c, N, batch.max_length, layer));
  kernels::rope_backward(s.dq, rope_rows(), rope_cos_.data(), rope_sin_.data(), N, c.num_heads, c.head_dim);
  kernels::rope_backward(s.dk, rope_rows(), rope_cos_.data(), rope_sin_.data(), N, c.num_kv_heads, c.head_dim);
  zero(s.dln, n * C);
  if (c.fused_projections()) {
    fused_backward(layer, Linear::QKV, s.dln, {{s.dq, Q}, {s.dk, KV}, {s.dv, KV}}, a.ln1, C);
  } else {
    linear(Linear::Q, s.dln, s.dq, a.ln1, C, Q);
    linear(Linear::K, s.dln, s.dk, a.ln1, C, KV);
    linear(Linear::V, s.dln, s.dv, a.ln1, C, KV);
  }
  kernels::rmsnorm_backward(dresid, g.input_norm, s.dln, x_in, w.input_norm, a.rstd1, N, C, offset);
}

double Transformer::head_forward_backward(bool training, int64_t denominator) {
  const ModelConfig& c = config_;
  const Scratch& s = *scratch_;
  const int N = batch_->size(), C = c.hidden_size;
  const float* x_final = residual(c.num_layers);  // (N, C)
  float* normed = final_norm_out_.data();         // (N, C)
  const float* final_norm = store_.head_weights().final_norm;
  kernels::rmsnorm_forward(normed, final_rstd_.data(), x_final, final_norm, N, C, c.rms_norm_eps, c.norm_offset());

  const float grad_scale = static_cast<float>(1.0 / static_cast<double>(denominator));
  double* row_losses = losses_.data();  // (N)
  double* loss_sum = row_losses + N;    // (1)
  kernels::zero(loss_sum, sizeof(double));
  if (training) zero(s.dln, static_cast<size_t>(N) * C);
  const bool in_blocks = vocabulary_block_rows(c, N, options_) > 0;
  if (in_blocks) {
    head_by_vocabulary(normed, row_losses, grad_scale, training);
  } else {
    head_by_rows(normed, row_losses, grad_scale, training);
  }
  if (training) {
    zero(s.dresid, static_cast<size_t>(N) * C);
    kernels::rmsnorm_backward(s.dresid, store_.head_grads().final_norm, s.dln, x_final, final_norm,
                              final_rstd_.data(), N, C, c.norm_offset());
    store_.head_grads_done();
    // Whole, the head's gradient follows the final norm's, so the first one
    // checked is small; in blocks the first block comes first. A NaN from the
    // forward pass reaches either, before anything is updated.
    if (!in_blocks) store_.lm_head_grad_done(0, c.vocab_size);
  }
  return *loss_sum / static_cast<double>(denominator);
}

void Transformer::head_by_rows(const float* normed, double* row_losses, float grad_scale, bool training) {
  const ModelConfig& c = config_;
  const Scratch& s = *scratch_;
  const int N = batch_->size(), C = c.hidden_size, V = c.vocab_size;
  const int* targets = batch_->targets.data();  // (N)
  const kernels::Operand lm_head = store_.lm_head_rows(0, V);
  float* lm_head_grad = training ? store_.lm_head_grad(0, V) : nullptr;  // (V, C)
  const int chunk = logits_chunk_rows(c, N);
  for (int r0 = 0; r0 < N; r0 += chunk) {
    const int rows = std::min(chunk, N - r0);
    const float* rows_in = normed + static_cast<size_t>(r0) * C;  // (rows, C)
    kernels::linear_forward(s.logits, rows_in, lm_head, nullptr, rows, C, V);
    if (training) {
      kernels::cross_entropy_forward_backward(row_losses + r0, s.logits, targets + r0, rows, V, grad_scale,
                                              c.final_logit_softcapping);
      kernels::sum_in_order(row_losses + N, row_losses + r0, rows);
      kernels::linear_backward(s.dln + static_cast<size_t>(r0) * C, lm_head_grad, nullptr, s.logits, rows_in,
                               lm_head, rows, C, V);
    } else {
      kernels::cross_entropy_rows(row_losses + r0, s.logits, targets + r0, rows, V, c.final_logit_softcapping);
    }
  }
  if (!training) kernels::sum_in_order(row_losses + N, row_losses, N);
}

// The first pass folds each block's logits into every row's log-sum-exp and
// loss; the second makes each block's logits again, turns them into their
// gradient and hands the block's weight gradient over before the next.
void Transformer::head_by_vocabulary(const float* normed, double* row_losses, float grad_scale, bool training) {
  const ModelConfig& c = config_;
  const Scratch& s = *scratch_;
  const int N = batch_->size(), C = c.hidden_size, V = c.vocab_size;
  const int block = vocabulary_block_rows(c, N, options_);
  const int* targets = batch_->targets.data();  // (N)
  double* stats = row_losses + N + 1;           // (N, kCrossEntropyStats)
  kernels::cross_entropy_block_start(stats, N);
  for (int v0 = 0; v0 < V; v0 += block) {
    const int rows = std::min(block, V - v0);
    kernels::linear_forward(s.logits, normed, store_.lm_head_rows(v0, rows), nullptr, N, C, rows);  // (N, rows)
    kernels::cross_entropy_block_fold(stats, s.logits, targets, N, rows, v0, c.final_logit_softcapping);
  }
  kernels::cross_entropy_block_finish(row_losses, stats, targets, N);
  kernels::sum_in_order(row_losses + N, row_losses, N);
  if (!training) return;
  for (int v0 = 0; v0 < V; v0 += block) {
    const int rows = std::min(block, V - v0);
    const kernels::Operand lm_head = store_.lm_head_rows(v0, rows);  // (rows, C)
    kernels::linear_forward(s.logits, normed, lm_head, nullptr, N, C, rows);
    kernels::cross_entropy_block_backward(s.logits, stats, targets, N, rows, v0, grad_scale,
                                          c.final_logit_softcapping);
    kernels::linear_backward(s.dln, store_.lm_head_grad(v0, rows), nullptr, s.logits, normed, lm_head, N, C, rows);
    store_.lm_head_grad_done(v0, rows);
  }
}

void Transformer::embedding_backward(float* dresid) {
  const ModelConfig& c = config_;
  const int N = batch_->size(), V = c.vocab_size;
  const int block = std::min(V, store_.head_block_rows());
  bool scaled = false;
  for (int v0 = 0; v0 < V; v0 += block) {
    const int rows = std::min(block, V - v0);
    if (float* grad = store_.embedding_grad(v0, rows)) {  // (rows, C)
      if (!scaled && c.embedding_scale() != 1.0f) {
        kernels::scale_forward(dresid, static_cast<size_t>(N) * c.hidden_size, c.embedding_scale());
      }
      scaled = true;
      kernels::embedding_backward(grad, dresid, batch_->tokens.data(), N, c.hidden_size, v0, rows);
    }
    store_.embedding_grad_done(v0, rows);
  }
}

void Transformer::forward(const int* tokens) {
  store_.embed(residual(0), tokens, rows_);
  if (config_.embedding_scale() != 1.0f) {
    kernels::scale_forward(residual(0), static_cast<size_t>(rows_) * config_.hidden_size, config_.embedding_scale());
  }
  for (int layer = 0; layer < config_.num_layers; ++layer) {
    layer_forward(layer, activations_for(layer), residual(layer), residual(layer + 1));
  }
}

double Transformer::forward_backward(const Batch& batch, int64_t denominator) {
  prepare(batch, true);
  forward(batch.tokens.data());
  const double loss = head_forward_backward(true, denominator > 0 ? denominator : batch.predicted);
  float* dresid = scratch_->dresid;  // (N, C)
  for (int layer = config_.num_layers - 1; layer >= 0; --layer) {
    LayerActivations& acts = activations_for(layer);
    if (options_.checkpointing) layer_forward(layer, acts, residual(layer), scratch_->tmp);
    layer_backward(layer, acts, residual(layer), dresid);
    store_.layer_grads_done(layer);
  }
  embedding_backward(dresid);
  return loss;
}

double Transformer::loss(const Batch& batch) {
  prepare(batch, false);
  forward(batch.tokens.data());
  return head_forward_backward(false, batch.predicted);
}

std::vector<double> Transformer::token_losses(const Batch& batch) {
  prepare(batch, false);
  forward(batch.tokens.data());
  head_forward_backward(false, batch.predicted);
  return std::vector<double>(losses_.data(), losses_.data() + batch.size());
}

const float* Transformer::forward_cached(const int* tokens, int N, KvCache& cache, bool long_rope) {
  if (cache.length + N > cache.capacity) fail("the cache holds ", cache.capacity, " positions, not ", cache.length + N);
  const ModelConfig& c = config_;
  prepare_cached(N, cache, long_rope);
  cache_ = &cache;
  forward(tokens);
  cache_ = nullptr;
  cache.length += N;
  const float* last = residual(c.num_layers) + static_cast<size_t>(N - 1) * c.hidden_size;  // (C)
  ensure_capacity(logits_, MemCategory::Workspace, c.vocab_size);
  kernels::rmsnorm_forward(final_norm_out_.data(), final_rstd_.data(), last, store_.head_weights().final_norm, 1,
                           c.hidden_size, c.rms_norm_eps, c.norm_offset());
  const int block = std::min(c.vocab_size, store_.head_block_rows());
  for (int v0 = 0; v0 < c.vocab_size; v0 += block) {
    const int rows = std::min(block, c.vocab_size - v0);
    kernels::linear_forward(logits_.data() + v0, final_norm_out_.data(), store_.lm_head_rows(v0, rows), nullptr, 1,
                            c.hidden_size, rows);
  }
  if (c.final_logit_softcapping > 0) kernels::softcap_forward(logits_.data(), c.vocab_size, c.final_logit_softcapping);
  return logits_.data();
}

}  // namespace qft
