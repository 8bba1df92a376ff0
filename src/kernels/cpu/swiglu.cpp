#include <cmath>

#include "kernels/kernels.h"

namespace qft::kernels {

void swiglu_forward(float* out, const float* gate, const float* up, size_t n) {
#pragma omp parallel for simd schedule(static)
  for (size_t i = 0; i < n; ++i) {
    const float g = gate[i];
    out[i] = g / (1.0f + std::exp(-g)) * up[i];
  }
}

void swiglu_backward(float* dgate, float* dup, const float* dout, const float* gate, const float* up,
                     size_t n) {
#pragma omp parallel for simd schedule(static)
  for (size_t i = 0; i < n; ++i) {
    const float g = gate[i], u = up[i], d = dout[i];  // read before writing: in place is allowed
    const float sigmoid = 1.0f / (1.0f + std::exp(-g));
    dup[i] = d * g * sigmoid;
    dgate[i] = d * u * sigmoid * (1.0f + g * (1.0f - sigmoid));
  }
}

namespace {

constexpr float kSqrt2OverPi = 0.7978845608028654f, kGeluCubic = 0.044715f;

}  // namespace

void geglu_forward(float* out, const float* gate, const float* up, size_t n) {
#pragma omp parallel for simd schedule(static)
  for (size_t i = 0; i < n; ++i) {
    const float g = gate[i];
    out[i] = 0.5f * g * (1.0f + std::tanh(kSqrt2OverPi * (g + kGeluCubic * g * g * g))) * up[i];
  }
}

void geglu_backward(float* dgate, float* dup, const float* dout, const float* gate, const float* up,
                    size_t n) {
#pragma omp parallel for simd schedule(static)
  for (size_t i = 0; i < n; ++i) {
    const float g = gate[i], u = up[i], d = dout[i];  // read before writing: in place is allowed
    const float t = std::tanh(kSqrt2OverPi * (g + kGeluCubic * g * g * g));
    const float gelu = 0.5f * g * (1.0f + t);
    const float dgelu = 0.5f * (1.0f + t) + 0.5f * g * (1.0f - t * t) * kSqrt2OverPi * (1.0f + 3.0f * kGeluCubic * g * g);
    dup[i] = d * gelu;
    dgate[i] = d * u * dgelu;
  }
}

}  // namespace qft::kernels
