#pragma once
// The one FP32 matrix product every CPU kernel uses: oneDNN's sgemm, which
// measured 10–40 % faster than OpenBLAS on this project's shapes
// (bench/gemm_bench, docs/results.md). Inside an OpenMP parallel region it
// runs single-threaded, so per-head attention tasks can call it.
#include <oneapi/dnnl/dnnl.h>

namespace qft::kernels {

// Row-major c (M, N) = alpha · op(a) · op(b) + beta · c, op(x) = x or xᵀ.
inline void gemm(bool transpose_a, bool transpose_b, int M, int N, int K, float alpha, const float* a,
                 int lda, const float* b, int ldb, float beta, float* c, int ldc) {
  dnnl_sgemm(transpose_a ? 'T' : 'N', transpose_b ? 'T' : 'N', M, N, K, alpha, a, lda, b, ldb, beta, c, ldc);
}

}  // namespace qft::kernels
