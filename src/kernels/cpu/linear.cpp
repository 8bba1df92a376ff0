#include <algorithm>
#include <cstring>

#include "kernels/cpu/gemm.h"
#include "kernels/kernels.h"

namespace qft::kernels {
namespace {

}  // namespace

void linear_forward(float* out, Operand inp, Operand weight, const float* bias, int N, int IC, int OC) {
  float beta = 0.0f;
  if (bias) {
#pragma omp parallel for schedule(static)
    for (int n = 0; n < N; ++n) std::memcpy(out + static_cast<size_t>(n) * OC, bias, OC * sizeof(float));
    beta = 1.0f;
  }
  // out (N, OC) = inp (N, IC) · weight (OC, IC)ᵀ
  gemm(false, true, N, OC, IC, 1.0f, inp, IC, weight, IC, beta, out, OC);
}

// forward: inp (N, IC) as a, weight (OC, IC) as b; dinp: dout (N, OC),
// weight; dweight: doutᵀ (N, OC), inp (N, IC). Where oneDNN has no BF16
// matmul even a BF16 operand is staged (widened).
GemmOperands linear_gemm_operands(int N, int IC, int OC, bool bf16_input, bool bf16_weight) {
  const size_t n = static_cast<size_t>(N);
  const size_t input = bf16_input && native_bf16_matmul() ? 0 : n * IC;
  const size_t weight = bf16_weight && native_bf16_matmul() ? 0 : static_cast<size_t>(OC) * IC;
  return {std::max(input, n * OC), std::max(weight, input)};
}

void linear_backward(float* dinp, float* dweight, float* dbias, const float* dout, Operand inp, Operand weight,
                     int N, int IC, int OC) {
  // Both products read dout as their `a`: rounded once for the two.
  const Operand gradient = dinp && dweight ? round_once(dout, N, OC) : Operand(dout);
  if (dinp) {
    // dinp (N, IC) += dout (N, OC) · weight (OC, IC)
    gemm(false, false, N, IC, OC, 1.0f, gradient, OC, weight, IC, 1.0f, dinp, IC);
  }
  if (dweight) {
    // dweight (OC, IC) += dout (N, OC)ᵀ · inp (N, IC)
    gemm(true, false, OC, IC, N, 1.0f, gradient, OC, inp, IC, 1.0f, dweight, IC);
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
