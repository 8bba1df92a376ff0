#pragma once
// Forward and backward of a LLaMA-family decoder over a packed batch, one
// hand-written pass per layer, with optional per-layer recomputation.
#include <initializer_list>
#include <memory>
#include <vector>

#include "core/carver.h"
#include "core/memory.h"
#include "data/batch.h"
#include "model/config.h"
#include "model/parameter_store.h"
#include "model/parameters.h"

namespace qft {

// One stored linear whose output rows are several tensors, in row order
// (Phi-3's fused qkv_proj and gate_up_proj): block i is values (N, rows).
struct RowBlock {
  float* values;
  int rows;
};
// block_i = inp (N, IC) · weight[block i's rows]ᵀ + bias[those rows] (bias may be null).
void linear_forward_blocks(std::initializer_list<RowBlock> outputs, kernels::Operand inp, kernels::Operand weight,
                           const float* bias, int N, int IC);
// The output row counts of each GEMM a model's linear `which` makes: one
// block, or Phi-3's q/k/v and gate/up.
std::vector<int> linear_row_blocks(const ModelConfig& config, Linear which);

struct TransformerOptions {
  // Keep only each layer's input and recompute the rest during backward.
  bool checkpointing = false;
  // The rank of the store's LoRA adapters (0: none), which sizes their scratch.
  int adapter_rank = 0;
  // The store hands its linear weights and LM head over in BF16 (a
  // TensorStore in BF16 compute), so BF16 compute stages no copy of them.
  bool bf16_weights = false;
  // The store's head_block_rows() where it is less than the vocabulary (0:
  // the whole LM head at once): the head then runs over vocabulary blocks.
  // For a memory plan; a transformer takes it from its store.
  int head_block_rows = 0;
};

// Whether a transformer with these options keeps the activations that only
// products read (the norms' outputs, q, k and v after RoPE, the gated
// activation) in BF16, rounded by the kernels that produce them: in BF16
// compute, without adapters (whose dropout works on FP32 inputs). The
// products see the same values either way.
bool bf16_activations(const TransformerOptions& options);

// Floats the transformer allocates for a batch of N rows, so a memory plan
// and the allocation share one description.
struct TransformerMemory {
  size_t residual_floats = 0, final_norm_floats = 0, final_rstd_floats = 0;
  size_t layer_floats = 0, stored_layers = 0;
  size_t scratch_floats = 0, attention_floats = 0, rope_floats = 0, adapter_floats = 0;
  size_t loss_doubles = 0;  // each row's loss, their sum, and the statistics of vocabulary blocks
  size_t compute_staging_bytes = 0;  // BF16 compute's rounded operands (kernels.h)
  int rope_positions = 0;
  size_t activation_bytes() const;
  size_t workspace_bytes() const;
};

// Keys and values (after RoPE) of every layer at the positions so far, for
// generation: Transformer::forward_cached appends to it.
struct KvCache {
  KvCache(const ModelConfig& config, int capacity);
  float* keys(int layer) { return keys_.data() + static_cast<size_t>(layer) * capacity * row_floats; }      // (capacity, KV·D)
  float* values(int layer) { return values_.data() + static_cast<size_t>(layer) * capacity * row_floats; }  // (capacity, KV·D)

  int capacity;    // positions it holds
  int length = 0;  // positions filled
  size_t row_floats;

 private:
  Buffer<float> keys_, values_;  // (L, capacity, KV·D)
};

class Transformer {
 public:
  static TransformerMemory memory(const ModelConfig& config, int N, int max_length, bool training,
                                  const TransformerOptions& options);

  // FP32 weights and gradients; `grads` may be null for a forward-only model.
  Transformer(const ModelConfig& config, ParamSet& weights, ParamSet* grads,
              TransformerOptions options = {});
  // Weights and gradients through a store (QFT's INT8 state).
  Transformer(const ModelConfig& config, ParameterStore& store, TransformerOptions options = {});
  ~Transformer();

  // Summed next-token loss over the batch's predicted positions divided by
  // `denominator` (default: their count); the gradient of that value is added
  // into the gradient set, so several batches can share one mean.
  double forward_backward(const Batch& batch, int64_t denominator = 0);
  // The same mean loss, without gradients or stored activations.
  double loss(const Batch& batch);
  // (N): −log p(target) of every row of the batch, 0 where nothing is
  // predicted (target < 0); what evaluation sums per sequence or choice.
  std::vector<double> token_losses(const Batch& batch);
  // Generation: tokens (N) at positions cache.length … through the layers,
  // each attending to the cache, to which their keys and values are added;
  // returns the logits (V) that follow the last. long_rope: positions in
  // longrope's long-factor rows of the RoPE tables.
  const float* forward_cached(const int* tokens, int N, KvCache& cache, bool long_rope);

  const ModelConfig& config() const { return config_; }

 private:
  // An activation only products read: FP32, or BF16 (one of the two).
  struct ProductInput {
    float* fp32 = nullptr;
    uint16_t* bf16 = nullptr;
    kernels::Operand operand() const { return bf16 ? kernels::Operand(bf16) : kernels::Operand(fp32); }
  };
  // One layer's saved activations, views into the activation buffer.
  struct LayerActivations {
    ProductInput ln1;  // (N, C)
    float* rstd1;      // (N)
    ProductInput q;    // (N, H·D) after RoPE
    ProductInput k;    // (N, KV·D) after RoPE
    ProductInput v;    // (N, KV·D)
    float* attn;       // (N, H·D)
    float* lse;        // (H, N)
    float* mid;        // (N, C) residual stream after attention
    ProductInput ln2;  // (N, C)
    float* rstd2;      // (N)
    float* gate;       // (N, I)
    float* up;         // (N, I)
    ProductInput hidden;  // (N, I) silu(gate)·up (or gelu_tanh)
    // Gemma-2's sandwich norms only (else nullptr): the projections' outputs
    // before their norms, and the norms' statistics.
    float* attn_proj;       // (N, C) o_proj's output
    float* attn_proj_rstd;  // (N)
    float* mlp_proj;        // (N, C) down_proj's output
    float* mlp_proj_rstd;   // (N)
  };
  struct Scratch;
  // LoRA's scratch: the adapter's input after dropout and its low-rank products.
  struct AdapterScratch {
    float* dropped;  // (N, largest IC)
    float* low;      // (N, R)
    float* dlow;     // (N, R)
  };

  static LayerActivations carve_layer(Carver& carver, const ModelConfig& config, int N, bool bf16);
  // With gradients for backward (and loss evaluation), or only the forward's
  // temporary; logits for that many rows at a time.
  static Scratch carve_scratch(Carver& carver, const ModelConfig& config, int N, bool gradients, size_t logits_floats);
  static AdapterScratch carve_adapter_scratch(Carver& carver, const ModelConfig& config, int N, int rank);
  void prepare(const Batch& batch, bool training);
  void prepare_cached(int N, const KvCache& cache, bool long_rope);
  // RoPE tables of at least `positions` rows.
  void ensure_rope_tables(int positions);
  float* residual(int layer);  // (N, C) input of `layer`; layer L feeds the final norm
  LayerActivations& activations_for(int layer);
  static kernels::AttentionShape attention_shape(const ModelConfig& config, int N, int max_length, int layer);
  // out (N, OC) = the linear (and its adapter) of inp (N, IC).
  void linear_forward(int layer, Linear which, float* out, const ProductInput& inp, int IC, int OC);
  // dinp (N, IC) += the input gradient; the weight's (and adapter's) gradients are handed over.
  void linear_backward(int layer, Linear which, float* dinp, const float* dout, const ProductInput& inp, int IC,
                       int OC);
  // A fused linear (no adapter): its outputs, and backward from the blocks' gradients.
  void fused_forward(int layer, Linear which, std::initializer_list<RowBlock> outputs, const ProductInput& inp, int IC);
  void fused_backward(int layer, Linear which, float* dinp, std::initializer_list<RowBlock> douts,
                      const ProductInput& inp, int IC);
  // out (N, C) = RMSNorm of x, in out's precision.
  void norm_into(const ProductInput& out, float* rstd, const float* x, const float* weight);
  // q, k and v from their projections' FP32 outputs: RoPE'd (and rounded) into place.
  void position_into(LayerActivations& a, float* q, float* k, float* v);
  const int* rope_rows() const { return rope_rows_.data(); }  // (N) rows of the RoPE tables

  void forward(const int* tokens);
  void layer_forward(int layer, LayerActivations& acts, const float* x_in, float* x_out);
  // acts.attn of acts.q over the batch's keys and values, or with a cache
  // over every cached position (acts.k and acts.v added to it first).
  void attend(int layer, LayerActivations& acts);
  // dresid (N, C): gradient of the layer's output in, of its input out.
  void layer_backward(int layer, const LayerActivations& acts, const float* x_in, float* dresid);
  // Final norm, LM head and loss; when training, also their backward,
  // leaving the gradient of the last residual in the scratch. Each row's
  // loss stays in losses_.
  double head_forward_backward(bool training, int64_t denominator);
  // The LM head and the loss in chunks of rows (the whole head at once) or
  // over vocabulary blocks (two passes: each row's log-sum-exp, then each
  // block's gradient); row_losses (N) and their sum after them; dln (N, C)
  // += the gradient of the normed rows.
  void head_by_rows(const float* normed, double* row_losses, float grad_scale, bool training);
  void head_by_vocabulary(const float* normed, double* row_losses, float grad_scale, bool training);
  // The embedding's gradient from dresid (N, C), block by block.
  void embedding_backward(float* dresid);

  ModelConfig config_;
  TransformerOptions options_;
  std::unique_ptr<ParameterStore> owned_store_;
  ParameterStore& store_;
  bool has_grads_;

  const Batch* batch_ = nullptr;  // a packed batch's pass; nullptr in a cached one
  KvCache* cache_ = nullptr;      // a cached pass's
  int rows_ = 0;                  // N: the pass's rows
  int residual_slots_ = 0;        // L + 1, or 2 that the layers of a cached pass alternate between
  bool training_ = false;
  bool bf16_activations_ = false;  // this pass's (a cached one keeps FP32 ones)
  int rope_positions_ = 0;
  Buffer<float> rope_cos_, rope_sin_;  // (positions, D/2); longrope: short, then long rows
  std::vector<int> rope_rows_;         // (N) each row's position, + positions where longrope's long factors apply
  Buffer<float> residuals_;            // (L+1, N, C)
  Buffer<float> layer_storage_;        // L layers of activations, or 1 to recompute into
  std::vector<LayerActivations> layers_;
  Buffer<float> final_norm_out_, final_rstd_;  // (N, C), (N)
  Buffer<float> scratch_buffer_;
  std::unique_ptr<Scratch> scratch_;
  Buffer<float> adapter_buffer_;
  AdapterScratch adapter_scratch_{};
  Buffer<float> attention_workspace_;
  Buffer<double> losses_;  // (N) each row's loss, then (1) their sum
  Buffer<float> logits_;   // (V) a cached pass's last row
};

}  // namespace qft
