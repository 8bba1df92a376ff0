#pragma once
#include <cstdint>

// The one matrix product every CPU kernel uses. In FP32 compute it is
// oneDNN's sgemm, which measured 10–40 % faster than OpenBLAS on this
// project's shapes (bench/gemm_bench, docs/results.md). In BF16 compute both
// operands are rounded to BF16 (nearest even) and multiplied by oneDNN's
// matmul primitive with FP32 accumulation and output — one primitive per
// shape, created once per thread and cached. Where oneDNN has no BF16 matmul
// for the CPU, the BF16-rounded operands go through sgemm: the same rounding,
// without the speed. Inside an OpenMP parallel region it runs
// single-threaded, so per-head attention tasks can call it.
namespace qft::kernels {

// Row-major c (M, N) = alpha · op(a) · op(b) + beta · c, op(x) = x or xᵀ.
void gemm(bool transpose_a, bool transpose_b, int M, int N, int K, float alpha, const float* a, int lda,
          const float* b, int ldb, float beta, float* c, int ldc);
// The same with b already in BF16 (a weight its store rounded): BF16
// compute multiplies it as it is, FP32 compute widens it exactly.
void gemm(bool transpose_a, bool transpose_b, int M, int N, int K, float alpha, const float* a, int lda,
          const uint16_t* b, int ldb, float beta, float* c, int ldc);

}  // namespace qft::kernels
