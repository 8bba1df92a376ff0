#pragma once
// Layer kernels: free functions, outputs first, inputs after. Every backward
// accumulates (+=) into parameter gradients and into dinp, so callers zero
// them once and several consumers of one tensor can add their parts.
// The CPU backend lives in kernels/cpu/; another backend implements the same
// declarations. Every pointer is an array on the backend's device; a kernel
// that needs scratch takes it from the caller, sized by a declared function
// of the shapes (never of the thread count), and a reduction (the loss)
// writes to an output array.
#include <cstddef>
#include <cstdint>

namespace qft::kernels {

// ---- the precision of every matrix product (linear layers, the LM head,
// attention): FP32, or BF16 — inputs rounded to BF16, FP32 accumulation
// and output. Everything else (norms, softmax, RoPE, the loss, the residual
// stream, optimizer updates) stays FP32 either way. Set once, before any
// kernel runs; FP32 by default.
enum class Compute { FP32, BF16 };
void set_compute(Compute compute);
Compute compute();
// Whether oneDNN multiplies BF16 natively on this CPU (AVX512-BF16 or AMX);
// without it BF16 compute only rounds the operands and is no faster.
bool native_bf16_matmul();
// The largest operands (elements of a and of b) of one product a kernel
// makes, so a memory plan can size BF16 compute's staging.
struct GemmOperands {
  size_t a = 0, b = 0;
};
GemmOperands largest(GemmOperands x, GemmOperands y);
// Bytes BF16 compute stages the rounded operands of the layer products
// (linear layers, LoRA, the LM head) in: of the largest, grown to as they
// come. 0 in FP32 compute. Attention stages its own in its workspace.
size_t compute_staging_bytes(GemmOperands products);

// ---- whole arrays, for stores and optimizers that must not touch elements
// themselves. x (bytes) = 0, or every byte `value`.
void zero(void* x, size_t bytes);
void fill_bytes(void* x, uint8_t value, size_t bytes);
// dst (bytes) = src (bytes); they do not overlap.
void copy(void* dst, const void* src, size_t bytes);
// first (1) = the index of the first NaN or Inf of x (n), or −1 when every value is finite.
void find_nonfinite(int64_t* first, const float* x, size_t n);

// ---- a matrix a product reads: FP32, or in BF16 compute already BF16 —
// rounded once where it was made (a weight by the store that materialised
// it, an activation by the kernel that produced it), so no product rounds or
// stages it again. The values are those BF16 compute would round the FP32
// ones to, so a product gives the same result either way.
struct Operand {
  const float* fp32 = nullptr;
  const uint16_t* bf16 = nullptr;
  Operand(const float* values) : fp32(values) {}
  Operand(const uint16_t* values) : bf16(values) {}
  // The values from element `offset` on.
  Operand at(size_t offset) const { return bf16 ? Operand(bf16 + offset) : Operand(fp32 + offset); }
  // The rows from `first` on (a block of a fused projection).
  Operand from_row(size_t first, int cols) const { return at(first * static_cast<size_t>(cols)); }
};

// ---- rounding to BF16 (nearest even): out (n) = in (n), for an activation
// whose producer cannot round it itself.
void round_to_bf16(uint16_t* out, const float* in, size_t n);

// ---- linear: out (N, OC) = inp (N, IC) · weight (OC, IC)ᵀ + bias (OC)
void linear_forward(float* out, Operand inp, Operand weight, const float* bias, int N, int IC, int OC);
// dinp (N, IC) += dout · weight; dweight (OC, IC) += doutᵀ · inp; dbias (OC) += Σₙ dout.
// dinp may be nullptr (no input gradient wanted); dweight and dbias may be nullptr (a frozen
// weight, no bias).
void linear_backward(float* dinp, float* dweight, float* dbias, const float* dout, Operand inp,
                     Operand weight, int N, int IC, int OC);
// Forward and backward; `bf16_input`, `bf16_weight`: those arrive in BF16,
// so only the other operands are staged.
GemmOperands linear_gemm_operands(int N, int IC, int OC, bool bf16_input, bool bf16_weight);

// ---- residual: out (n) = a + b. Its backward passes the gradient through.
void residual_forward(float* out, const float* a, const float* b, size_t n);

// ---- scale: x (n) *= factor in place (Gemma's embedding scale); its backward is the same.
void scale_forward(float* x, size_t n, float factor);

// ---- token embedding: out (N, C) = table (V, C)[tokens (N)], from an FP32 or a BF16 table
void embedding_forward(float* out, const int* tokens, const float* table, int N, int C);
void embedding_forward(float* out, const int* tokens, const uint16_t* table, int N, int C);
// dtable (rows, C) += dout (N, C) rows of the tokens in [first, first + rows): a block of the table's gradient.
void embedding_backward(float* dtable, const float* dout, const int* tokens, int N, int C, int first, int rows);

// ---- RMSNorm: out (N, C) = inp · rstd · (offset + weight (C)), rstd (N) = 1/√(mean(inp²) + eps);
// offset 1 is Gemma's norm, whose stored weight is the deviation from one.
void rmsnorm_forward(float* out, float* rstd, const float* inp, const float* weight, int N, int C,
                     float eps, float offset = 0.0f);
// The same with out (N, C) rounded to BF16 as it is written.
void rmsnorm_forward(uint16_t* out, float* rstd, const float* inp, const float* weight, int N, int C,
                     float eps, float offset = 0.0f);
// dweight may be nullptr (a frozen norm).
void rmsnorm_backward(float* dinp, float* dweight, const float* dout, const float* inp,
                      const float* weight, const float* rstd, int N, int C, float offset = 0.0f);

// ---- random numbers as a Philox function of (seed, stream, position), so
// any of them can be made again (quant/philox.h).
struct PhiloxStream {
  uint64_t seed = 0;
  uint32_t stream[2] = {0, 0};
};

// ---- dropout: x (N, C) = x · keep / (1 − p), keep where the element's uniform is ≥ p. The
// uniform of (n, c) is a Philox function of (seed, stream, n, c), so backward rebuilds the
// forward's mask instead of storing it. p = 0: nothing changes.
struct DropoutMask {
  float p = 0.0f;
  PhiloxStream uniforms;
};
void dropout_apply(float* x, const DropoutMask& mask, int N, int C);

// ---- LoRA adapter (PEFT's): out (N, OC) += scale · (dropout(inp) · Aᵀ) · Bᵀ,
// A (R, IC), B (OC, R). Scratch: low (N, R); dropped (N, IC), unused when p = 0.
void lora_forward(float* out, float* low, float* dropped, const float* inp, const float* a,
                  const float* b, const DropoutMask& mask, int N, int IC, int OC, int R, float scale);
// dinp (N, IC) += the adapter's share of the input gradient; da (R, IC), db (OC, R) +=.
// Scratch: low, dlow (N, R); dropped (N, IC), used whatever p is.
void lora_backward(float* dinp, float* da, float* db, float* low, float* dlow, float* dropped,
                   const float* dout, const float* inp, const float* a, const float* b,
                   const DropoutMask& mask, int N, int IC, int OC, int R, float scale);
// LoRA's A (R, IC) initialised as PEFT does (kaiming_uniform_ with
// a = √5): U(−1/√IC, 1/√IC), each value's uniform a Philox function of
// (seed, stream, its index).
void lora_initialise(float* a, int R, int IC, const PhiloxStream& uniforms);
// weight (OC, IC) += scale · B (OC, R) · A (R, IC): the adapter merged in.
void lora_merge(float* weight, const float* a, const float* b, int OC, int IC, int R, float scale);


// ---- RoPE, HF rotate-half convention, applied in place to x (N, H, D).
// cos, sin: (max_positions, D/2) tables; positions (N).
void rope_forward(float* x, const int* positions, const float* cos, const float* sin, int N, int H,
                  int D);
void rope_backward(float* dx, const int* positions, const float* cos, const float* sin, int N,
                   int H, int D);
// out (N, H, D) = x rotated and rounded to BF16; x is not changed.
void rope_forward(uint16_t* out, const float* x, const int* positions, const float* cos, const float* sin, int N,
                  int H, int D);
// Fills the (max_positions, D/2) tables: cos and sin of position × inverse
// frequency (D/2), times attention_factor (YaRN's; 1 otherwise).
void rope_tables(float* cos, float* sin, int max_positions, int D, const float* inverse_frequencies,
                 float attention_factor);

// ---- SwiGLU: out (n) = silu(gate) · up, in FP32 or rounded to BF16
void swiglu_forward(float* out, const float* gate, const float* up, size_t n);
void swiglu_forward(uint16_t* out, const float* gate, const float* up, size_t n);
// dgate, dup (n) are written (not accumulated); they may alias gate and up.
void swiglu_backward(float* dgate, float* dup, const float* dout, const float* gate, const float* up,
                     size_t n);

// ---- GeGLU (Gemma): out (n) = gelu_tanh(gate) · up, with PyTorch's tanh
// approximation gelu_tanh(x) = x/2 · (1 + tanh(√(2/π) · (x + 0.044715 x³))).
void geglu_forward(float* out, const float* gate, const float* up, size_t n);
void geglu_forward(uint16_t* out, const float* gate, const float* up, size_t n);
// As swiglu_backward: written, may alias gate and up.
void geglu_backward(float* dgate, float* dup, const float* dout, const float* gate, const float* up,
                    size_t n);

// ---- final-logit soft-capping (Gemma-2): x (n) = cap · tanh(x / cap) in place.
void softcap_forward(float* x, size_t n, float cap);

// ---- a packed batch: `count` sequences back to back in its rows, in row
// order and not overlapping; positions restart at 0 in each.
struct SequenceSpan {
  int start;
  int length;
};
struct BatchLayout {
  const SequenceSpan* sequences = nullptr;  // (count)
  int count = 0;
};

// ---- causal grouped-query attention over packed sequences. Scores are
// scale · q·k (scale 0: 1/√D), soft-capped to softcap · tanh(score / softcap)
// when softcap > 0 (Gemma-2); with window > 0 a query sees only the `window`
// most recent keys, itself included (Mistral's and Gemma-2's sliding window).
// Rows of q (N, H·D), k and v (N, KV·D) hold the sequences of `batch`.
struct AttentionShape {
  int N;   // total rows
  int H;   // query heads
  int KV;  // key/value heads, H % KV == 0
  int D;   // head dimension
  int max_length;
  float scale = 0.0f;
  float softcap = 0.0f;
  int window = 0;
};
// Floats of scratch that attention_forward/backward need for any batch of N
// rows: each (sequence, head) task has its own, so the size is the shape's.
size_t attention_workspace_floats(const AttentionShape& shape);
// out (N, H·D); lse (H, N): log-sum-exp of each query row's scaled scores,
// kept so backward can rebuild the probabilities without storing them.
// q, k and v only enter products, so they may come in BF16 already.
void attention_forward(float* out, float* lse, float* workspace, Operand q, Operand k, Operand v,
                       const BatchLayout& batch, const AttentionShape& shape);
// dq (N, H·D), dk, dv (N, KV·D) are written (not accumulated).
void attention_backward(float* dq, float* dk, float* dv, float* workspace, const float* dout,
                        const float* out, Operand q, Operand k, Operand v,
                        const float* lse, const BatchLayout& batch, const AttentionShape& shape);

// ---- attention of N new queries over a key/value cache, for generation.
// Query row i sits at position start + i and sees cache rows 0 … start + i
// (the last `window` of them when window > 0); scale and softcap as above.
// out (N, H·D); q (N, H·D); k_cache, v_cache (≥ start + N, KV·D);
// workspace: attention_cached_workspace_floats of them.
size_t attention_cached_workspace_floats(int N, int start, int H);
void attention_cached(float* out, float* workspace, const float* q, const float* k_cache, const float* v_cache,
                      int N, int start, int H, int KV, int D, float scale = 0.0f, float softcap = 0.0f,
                      int window = 0);

// ---- cross-entropy: turns logits (R, V) into dlogits in place and writes
// each row's loss to losses (R). Rows with target < 0 predict nothing: zero
// gradient and loss 0. dlogits = (softmax − onehot) · grad_scale. With
// softcap > 0 the loss is of the capped logits cap · tanh(logit / cap)
// (Gemma-2), and dlogits the gradient through the cap, still in place.
void cross_entropy_forward_backward(double* losses, float* logits, const int* targets, int R, int V,
                                    float grad_scale, float softcap = 0.0f);
// losses (R): each row's loss (0 where target < 0), logits untouched.
void cross_entropy_rows(double* losses, const float* logits, const int* targets, int R, int V,
                        float softcap = 0.0f);
// total (1) += Σ values (n), added up in order.
void sum_in_order(double* total, const double* values, size_t n);

// ---- the same loss over blocks of the vocabulary, for an LM head that exists
// one block of rows at a time: logits (R, Vb) of the entries [first, first + Vb).
// stats (R, kCrossEntropyStats) per row: the running maximum (the log-sum-exp
// once finished), Σ exp(logit − maximum) and the target's logit.
constexpr int kCrossEntropyStats = 3;
void cross_entropy_block_start(double* stats, int R);
// Folds a block into stats; logits are soft-capped in place.
void cross_entropy_block_fold(double* stats, float* logits, const int* targets, int R, int Vb, int first,
                              float softcap = 0.0f);
// losses (R) after the last block; stats then hold each row's log-sum-exp.
void cross_entropy_block_finish(double* losses, double* stats, const int* targets, int R);
// A block's logits (R, Vb) become its dlogits in place, as cross_entropy_forward_backward's.
void cross_entropy_block_backward(float* logits, const double* stats, const int* targets, int R, int Vb, int first,
                                  float grad_scale, float softcap = 0.0f);

}  // namespace qft::kernels
