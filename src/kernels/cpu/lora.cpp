#include <cmath>
#include <cstring>
#include <vector>

#include "kernels/cpu/gemm.h"
#include "kernels/kernels.h"
#include "quant/philox.h"

namespace qft::kernels {

void dropout_apply(float* x, const DropoutMask& mask, int N, int C) {
  if (mask.p <= 0.0f) return;
  const float keep_scale = 1.0f / (1.0f - mask.p);
  const PhiloxKey key = philox_key(mask.uniforms.seed);
#pragma omp parallel
  {
    std::vector<float> uniforms(C);  // (C)
#pragma omp for schedule(static)
    for (int n = 0; n < N; ++n) {
      philox_uniforms16(uniforms.data(), C, key, static_cast<uint32_t>(n), mask.uniforms.stream[0], mask.uniforms.stream[1]);
      float* row = x + static_cast<size_t>(n) * C;
      for (int c = 0; c < C; ++c) row[c] = uniforms[c] >= mask.p ? row[c] * keep_scale : 0.0f;
    }
  }
}

namespace {

// dropped (N, IC) = dropout(inp); without dropout the input itself.
const float* dropout_input(float* dropped, const float* inp, const DropoutMask& mask, int N, int IC) {
  if (mask.p <= 0.0f) return inp;
  std::memcpy(dropped, inp, static_cast<size_t>(N) * IC * sizeof(float));
  dropout_apply(dropped, mask, N, IC);
  return dropped;
}

}  // namespace

void lora_forward(float* out, float* low, float* dropped, const float* inp, const float* a,
                  const float* b, const DropoutMask& mask, int N, int IC, int OC, int R, float scale) {
  const float* x = dropout_input(dropped, inp, mask, N, IC);  // (N, IC)
  // low (N, R) = x · Aᵀ
  gemm(false, true, N, R, IC, 1.0f, x, IC, a, IC, 0.0f, low, R);
  // out (N, OC) += scale · low · Bᵀ
  gemm(false, true, N, OC, R, scale, low, R, b, R, 1.0f, out, OC);
}

void lora_backward(float* dinp, float* da, float* db, float* low, float* dlow, float* dropped,
                   const float* dout, const float* inp, const float* a, const float* b,
                   const DropoutMask& mask, int N, int IC, int OC, int R, float scale) {
  // The forward's low-rank activations, rebuilt: cheaper than keeping them (R ≪ IC).
  const float* x = dropout_input(dropped, inp, mask, N, IC);  // (N, IC)
  gemm(false, true, N, R, IC, 1.0f, x, IC, a, IC, 0.0f, low, R);
  // db (OC, R) += scale · doutᵀ · low
  gemm(true, false, OC, R, N, scale, dout, OC, low, R, 1.0f, db, R);
  // dlow (N, R) = scale · dout · B
  gemm(false, false, N, R, OC, scale, dout, OC, b, R, 0.0f, dlow, R);
  // da (R, IC) += dlowᵀ · x
  gemm(true, false, R, IC, N, 1.0f, dlow, R, x, IC, 1.0f, da, IC);
  if (mask.p <= 0.0f) {
    // dinp (N, IC) += dlow · A
    gemm(false, false, N, IC, R, 1.0f, dlow, R, a, IC, 1.0f, dinp, IC);
    return;
  }
  // dropped (N, IC) = dropout'(dlow · A): the same mask, the same scale.
  gemm(false, false, N, IC, R, 1.0f, dlow, R, a, IC, 0.0f, dropped, IC);
  dropout_apply(dropped, mask, N, IC);
  const size_t count = static_cast<size_t>(N) * IC;
#pragma omp parallel for schedule(static)
  for (size_t i = 0; i < count; ++i) dinp[i] += dropped[i];
}

void lora_initialise(float* a, int R, int IC, const PhiloxStream& uniforms) {
  const PhiloxKey key = philox_key(uniforms.seed);
  const size_t count = static_cast<size_t>(R) * IC;
  const float bound = 1.0f / std::sqrt(static_cast<float>(IC));
  philox_uniforms16(a, static_cast<int64_t>(count), key, uniforms.stream[0], uniforms.stream[1], 0);
  for (size_t k = 0; k < count; ++k) a[k] = (2.0f * a[k] - 1.0f) * bound;
}

void lora_merge(float* weight, const float* a, const float* b, int OC, int IC, int R, float scale) {
#pragma omp parallel for schedule(static)
  for (int o = 0; o < OC; ++o) {
    float* row = weight + static_cast<size_t>(o) * IC;
    for (int r = 0; r < R; ++r) {
      const float factor = scale * b[static_cast<size_t>(o) * R + r];
      const float* a_row = a + static_cast<size_t>(r) * IC;
      for (int i = 0; i < IC; ++i) row[i] += factor * a_row[i];
    }
  }
}

}  // namespace qft::kernels
