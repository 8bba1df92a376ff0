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
#include <cstddef>

#include "kernels/kernels.h"

namespace qft::kernels {

// Where a product stages its rounded operands: `bytes` at `data` (a task's
// own scratch, carved by its kernel), or — left empty — buffers of the
// calling thread, grown to its largest product (accounted as workspace).
struct GemmStaging {
  void* data = nullptr;
  size_t bytes = 0;
};
// Bytes one staged operand value takes under the compute set now: 0 in FP32
// compute, 2 (BF16) where oneDNN multiplies BF16, 4 (rounded FP32 for sgemm)
// elsewhere. A product of a (M, K) and b (K, N) stages (M·K + K·N) of them.
size_t gemm_staging_value_bytes();

// x (rows, cols, dense) for several products that read it as their `a`: in
// BF16 compute with oneDNN's BF16 matmul rounded once, into the calling
// thread's staging of `a` operands (valid until a product stages another
// `a`); otherwise x as it is.
Operand round_once(const float* x, int rows, int cols);

// Row-major c (M, N) = alpha · op(a) · op(b) + beta · c, op(x) = x or xᵀ.
// An operand already in BF16 is multiplied as it is in BF16 compute and
// widened (exactly) in FP32 compute.
void gemm(bool transpose_a, bool transpose_b, int M, int N, int K, float alpha, Operand a, int lda, Operand b,
          int ldb, float beta, float* c, int ldc, GemmStaging staging = {});

}  // namespace qft::kernels
