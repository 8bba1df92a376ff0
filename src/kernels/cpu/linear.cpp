
#include <algorithm>
#include <cstring>

#include "kernels/cpu/gemm.h"
#include "kernels/kernels.h"

namespace qft::kernels {

void linear_forward(float* out, const float* inp, const float* weight, const float* bias,
                    int N, int IC, int OC) {
  float beta = 0.0f;
  if (bias) {
#pragma omp parallel for schedule(static)
    for (int n = 0; n < N; ++n) std::memcpy(out + static_cast<size_t>(n) * OC, bias, OC * sizeof(float));
    beta = 1.0f;
  }
  // out (N, OC) = inp (N, IC) · weight (OC, IC)ᵀ
  gemm(false, true, N, OC, IC, 1.0f, inp, IC, weight, IC, beta,
              out, OC);
}

// forward: inp (N, IC), weight (OC, IC); dinp: dout (N, OC), weight;
// dweight: doutᵀ (N, OC), inp (N, IC).
GemmOperands linear_gemm_operands(int N, int IC, int OC) {
  const size_t n = static_cast<size_t>(N);
  return {n * std::max(IC, OC), std::max(static_cast<size_t>(OC) * IC, n * IC)};
}

void linear_backward(float* dinp, float* dweight, float* dbias, const float* dout, const float* inp,
                     const float* weight, int N, int IC, int OC) {
  if (dinp) {
    // dinp (N, IC) += dout (N, OC) · weight (OC, IC)
    gemm(false, false, N, IC, OC, 1.0f, dout, OC, weight, IC,
                1.0f, dinp, IC);
  }
  if (dweight) {
    // dweight (OC, IC) += dout (N, OC)ᵀ · inp (N, IC)
    gemm(true, false, OC, IC, N, 1.0f, dout, OC, inp, IC, 1.0f, dweight, IC);
  }
  if (dbias) {
    constexpr int kColumnBlock = 256;
#pragma omp parallel for schedule(static)
    for (int block = 0; block < OC; block += kColumnBlock) {
      const int end = block + kColumnBlock < OC ? block + kColumnBlock : OC;
      for (int n = 0; n < N; ++n) {
        const float* row = dout + static_cast<size_t>(n) * OC;
        for (int o = block; o < end; ++o) dbias[o] += row[o];
      }
    }
  }
}

}  // namespace qft::kernels
