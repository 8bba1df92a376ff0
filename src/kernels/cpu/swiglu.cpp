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

}  // namespace qft::kernels
