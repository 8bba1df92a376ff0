#include <algorithm>
#include <cstring>

#include "kernels/cpu/gemm.h"
#include "kernels/kernels.h"

namespace qft::kernels {
namespace {

// c = alpha · op(a) · op(weight) + beta · c, the weight in whichever precision it arrived.
void gemm_by(WeightMatrix weight, bool transpose_a, bool transpose_b, int M, int N, int K, float alpha,
             const float* a, int lda, int ldb, float beta, float* c, int ldc) {
  if (weight.bf16) return gemm(transpose_a, transpose_b, M, N, K, alpha, a, lda, weight.bf16, ldb, beta, c, ldc);
  gemm(transpose_a, transpose_b, M, N, K, alpha, a, lda, weight.fp32, ldb, beta, c, ldc);
}

}  // namespace

WeightMatrix WeightMatrix::from_row(size_t first, int cols) const {
  const size_t offset = first * static_cast<size_t>(cols);
  return bf16 ? WeightMatrix(bf16 + offset) : WeightMatrix(fp32 + offset);
}

void linear_forward(float* out, const float* inp, WeightMatrix weight, const float* bias, int N, int IC, int OC) {
  float beta = 0.0f;
  if (bias) {
#pragma omp parallel for schedule(static)
    for (int n = 0; n < N; ++n) std::memcpy(out + static_cast<size_t>(n) * OC, bias, OC * sizeof(float));
    beta = 1.0f;
  }
  // out (N, OC) = inp (N, IC) · weight (OC, IC)ᵀ
  gemm_by(weight, false, true, N, OC, IC, 1.0f, inp, IC, IC, beta, out, OC);
}

// forward: inp (N, IC), weight (OC, IC); dinp: dout (N, OC), weight;
// dweight: doutᵀ (N, OC), inp (N, IC).
GemmOperands linear_gemm_operands(int N, int IC, int OC, bool bf16_weight) {
  const size_t n = static_cast<size_t>(N);
  // Where oneDNN has no BF16 matmul even a BF16 weight is staged (widened).
  const size_t weight = bf16_weight && native_bf16_matmul() ? 0 : static_cast<size_t>(OC) * IC;
  return {n * std::max(IC, OC), std::max(weight, n * IC)};
}

void linear_backward(float* dinp, float* dweight, float* dbias, const float* dout, const float* inp,
                     WeightMatrix weight, int N, int IC, int OC) {
  if (dinp) {
    // dinp (N, IC) += dout (N, OC) · weight (OC, IC)
    gemm_by(weight, false, false, N, IC, OC, 1.0f, dout, OC, IC, 1.0f, dinp, IC);
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
