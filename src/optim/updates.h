#pragma once
// The per-element updates of every optimizer, as operations over plain
// arrays (outputs first): the optimizers (optim/*.cpp) and stores
// (train/*_store.cpp) orchestrate them and never touch an element
// themselves, so a device can implement them beside these CPU ones. QLion's
// update of INT8 rows is optim/qlion.h.
#include <cmath>
#include <cstddef>
#include <cstdint>

#include "optim/optimizer.h"
#include "quant/dynamic_map.h"

namespace qft {

// ---- Lion (Chen et al. 2023) on n elements in place: c = β1·m + (1−β1)·g;
// w ← w·(1 − lr·λ) − lr·sign(c); m ← β2·m + (1−β2)·g. lion_update runs on
// the calling thread (QLion calls it per row); lion_step splits a tensor
// over the threads.
void lion_update(float* w, float* m, const float* g, size_t n, float lr, const OptimizerSettings& settings);
void lion_step(float* w, float* m, const float* g, size_t n, float lr, const OptimizerSettings& settings);

// ---- AdamW's per-step constants (torch.optim.AdamW: bias corrections
// folded into the step size and the denominator), and its update of one element.
struct AdamWStep {
  float beta1, beta2, eps, step_size, sqrt_correction2, decay;
  static AdamWStep at(const OptimizerSettings& settings, int64_t step, float lr);
  // m, v updated from g; returns the new weight.
  float update(float w, float& m, float& v, float g) const {
    m = beta1 * m + (1.0f - beta1) * g;
    v = beta2 * v + (1.0f - beta2) * g * g;
    return w * decay - step_size * m / (std::sqrt(v) / sqrt_correction2 + eps);
  }
};
// AdamW on n elements in place.
void adamw_step(float* w, float* m, float* v, const float* g, size_t n, const AdamWStep& adam);

// ---- 8-bit AdamW: both moments as codes of bitsandbytes' dynamic code
// books with an FP32 absmax per block of kBlockwiseBlock values (m signed, v
// unsigned). Each block is de-quantized, updated in FP32 and quantized again
// with its new absmax.
inline constexpr size_t kBlockwiseBlock = 256;
struct BlockwiseMoments {
  uint8_t* m_codes;  // (n)
  uint8_t* v_codes;  // (n)
  float* m_absmax;   // (blocks)
  float* v_absmax;   // (blocks)
};
struct BlockwiseCodeBooks {
  const CodeBook& signed_book;
  const CodeBook& unsigned_book;
  const CodeBookEncoder& signed_encoder;
  const CodeBookEncoder& unsigned_encoder;
};
void adamw8bit_step(float* w, const BlockwiseMoments& moments, const float* g, size_t n,
                    const BlockwiseCodeBooks& books, const AdamWStep& adam);

// ---- mixed precision (BF16 weights and gradients, FP32 masters and moments).
// grad (n) = bf16(grad + g): a micro-batch's gradient added in.
void accumulate_bf16(uint16_t* grad, const float* g, size_t n);
// The values forward and backward use, from the masters (n): BF16 weights
// (matrices), or BF16-rounded FP32 values (norms and biases, held as FP32).
void round_to_bf16(uint16_t* out, const float* master, size_t n);
void round_through_bf16(float* out, const float* master, size_t n);
// out (n) = in (n) widened to FP32.
void widen_bf16(float* out, const uint16_t* in, size_t n);
// AdamW on the masters from the BF16 gradient, which is cleared; the used
// values rewritten: bf16 (matrices) or, when it is null, vector.
void mixed_adamw_step(float* master, float* m, float* v, uint16_t* grad, uint16_t* bf16, float* vector, size_t n,
                      const AdamWStep& adam);

}  // namespace qft
