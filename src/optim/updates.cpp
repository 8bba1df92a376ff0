#include "optim/updates.h"

#include <algorithm>

#include "core/float16.h"
#include "core/parallel.h"

namespace qft {

void lion_update(float* w, float* m, const float* g, size_t n, float lr, const OptimizerSettings& settings) {
  const float beta1 = settings.beta1, beta2 = settings.beta2;
  const float decay = 1.0f - lr * settings.weight_decay;
#pragma omp simd
  for (size_t i = 0; i < n; ++i) {
    const float c = beta1 * m[i] + (1.0f - beta1) * g[i];
    const float sign = static_cast<float>((c > 0.0f) - (c < 0.0f));
    w[i] = w[i] * decay - lr * sign;
    m[i] = beta2 * m[i] + (1.0f - beta2) * g[i];
  }
}

void lion_step(float* w, float* m, const float* g, size_t n, float lr, const OptimizerSettings& settings) {
  constexpr size_t kChunk = 1 << 16;
  const int64_t chunks = static_cast<int64_t>((n + kChunk - 1) / kChunk);
#pragma omp parallel for schedule(static)
  for (int64_t chunk = 0; chunk < chunks; ++chunk) {
    const size_t begin = static_cast<size_t>(chunk) * kChunk;
    lion_update(w + begin, m + begin, g + begin, std::min(kChunk, n - begin), lr, settings);
  }
}

AdamWStep AdamWStep::at(const OptimizerSettings& settings, int64_t step, float lr) {
  const double correction1 = 1.0 - std::pow(static_cast<double>(settings.beta1), step);
  const double correction2 = 1.0 - std::pow(static_cast<double>(settings.beta2), step);
  return {settings.beta1, settings.beta2, settings.eps, static_cast<float>(lr / correction1),
          static_cast<float>(std::sqrt(correction2)), 1.0f - lr * settings.weight_decay};
}

void adamw_step(float* w, float* m, float* v, const float* g, size_t n, const AdamWStep& adam) {
#pragma omp parallel for simd schedule(static)
  for (size_t i = 0; i < n; ++i) w[i] = adam.update(w[i], m[i], v[i], g[i]);
}

namespace {

// One block [begin, end) of 8-bit AdamW, its absmaxes at `block`.
void adamw8bit_block(float* w, const BlockwiseMoments& moments, const float* g, size_t begin, size_t end, size_t block,
                     const BlockwiseCodeBooks& books, const AdamWStep& adam) {
  float m[kBlockwiseBlock], v[kBlockwiseBlock];
  float m_max = 0.0f, v_max = 0.0f;
  for (size_t i = begin; i < end; ++i) {
    // De-quantize, then AdamW in FP32.
    float& mi = m[i - begin];
    float& vi = v[i - begin];
    mi = books.signed_book[moments.m_codes[i]] * moments.m_absmax[block];
    vi = books.unsigned_book[moments.v_codes[i]] * moments.v_absmax[block];
    w[i] = adam.update(w[i], mi, vi, g[i]);
    m_max = std::max(m_max, std::abs(mi));
    v_max = std::max(v_max, vi);
  }
  moments.m_absmax[block] = m_max;
  moments.v_absmax[block] = v_max;
  for (size_t i = begin; i < end; ++i) {
    moments.m_codes[i] = books.signed_encoder.encode(m_max > 0 ? m[i - begin] / m_max : 0.0f);
    moments.v_codes[i] = books.unsigned_encoder.encode(v_max > 0 ? v[i - begin] / v_max : 0.0f);
  }
}

}  // namespace

void adamw8bit_step(float* w, const BlockwiseMoments& moments, const float* g, size_t n,
                    const BlockwiseCodeBooks& books, const AdamWStep& adam) {
  const int64_t blocks = static_cast<int64_t>((n + kBlockwiseBlock - 1) / kBlockwiseBlock);
  parallel_for(blocks, [&](int64_t block) {
    const size_t begin = static_cast<size_t>(block) * kBlockwiseBlock;
    adamw8bit_block(w, moments, g, begin, std::min(begin + kBlockwiseBlock, n), static_cast<size_t>(block), books, adam);
  });
}

void accumulate_bf16(uint16_t* grad, const float* g, size_t n) {
#pragma omp parallel for simd schedule(static)
  for (size_t j = 0; j < n; ++j) grad[j] = float_to_bf16(bf16_to_float(grad[j]) + g[j]);
}

void round_to_bf16(uint16_t* out, const float* master, size_t n) {
  for (size_t j = 0; j < n; ++j) out[j] = float_to_bf16(master[j]);
}

void round_through_bf16(float* out, const float* master, size_t n) {
  for (size_t j = 0; j < n; ++j) out[j] = bf16_to_float(float_to_bf16(master[j]));
}

void widen_bf16(float* out, const uint16_t* in, size_t n) {
#pragma omp parallel for simd schedule(static)
  for (size_t j = 0; j < n; ++j) out[j] = bf16_to_float(in[j]);
}

void mixed_adamw_step(float* master, float* m, float* v, uint16_t* grad, uint16_t* bf16, float* vector, size_t n,
                      const AdamWStep& adam) {
#pragma omp parallel for schedule(static)
  for (size_t j = 0; j < n; ++j) {
    const float w = adam.update(master[j], m[j], v[j], bf16_to_float(grad[j]));
    master[j] = w;
    grad[j] = 0;
    const uint16_t rounded = float_to_bf16(w);
    if (bf16) bf16[j] = rounded;
    else vector[j] = bf16_to_float(rounded);
  }
}

}  // namespace qft
