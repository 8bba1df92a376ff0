#include <omp.h>

#include <cmath>
#include <vector>

#include "core/float16.h"
#include "kernels/kernels.h"

namespace qft::kernels {

namespace {

// y (C) and rstd of one row x (C).
void normalize_row(float* y, float* rstd, const float* x, const float* weight, int C, float eps, float offset) {
  float sum_squares = 0.0f;
  for (int c = 0; c < C; ++c) sum_squares += x[c] * x[c];
  const float r = 1.0f / std::sqrt(sum_squares / C + eps);
  *rstd = r;
  for (int c = 0; c < C; ++c) y[c] = (offset + weight[c]) * (x[c] * r);
}

}  // namespace

void rmsnorm_forward(float* out, float* rstd, const float* inp, const float* weight, int N, int C,
                     float eps, float offset) {
#pragma omp parallel for schedule(static)
  for (int n = 0; n < N; ++n) {
    normalize_row(out + static_cast<size_t>(n) * C, rstd + n, inp + static_cast<size_t>(n) * C, weight, C, eps, offset);
  }
}

void rmsnorm_forward(uint16_t* out, float* rstd, const float* inp, const float* weight, int N, int C,
                     float eps, float offset) {
#pragma omp parallel
  {
    std::vector<float> row(C);  // (C) one row in FP32, in L1
#pragma omp for schedule(static)
    for (int n = 0; n < N; ++n) {
      normalize_row(row.data(), rstd + n, inp + static_cast<size_t>(n) * C, weight, C, eps, offset);
      float_to_bf16_row(out + static_cast<size_t>(n) * C, row.data(), C);
    }
  }
}

void rmsnorm_backward(float* dinp, float* dweight, const float* dout, const float* inp,
                      const float* weight, const float* rstd, int N, int C, float offset) {
  // dweight is reduced over rows through fixed per-chunk partials, so the
  // result does not depend on thread timing.
  const int chunks = omp_get_max_threads();
  std::vector<float> partial(static_cast<size_t>(chunks) * C, 0.0f);
#pragma omp parallel for schedule(static, 1)
  for (int chunk = 0; chunk < chunks; ++chunk) {
    float* dw = partial.data() + static_cast<size_t>(chunk) * C;
    const int begin = static_cast<int>(static_cast<int64_t>(N) * chunk / chunks);
    const int end = static_cast<int>(static_cast<int64_t>(N) * (chunk + 1) / chunks);
    for (int n = begin; n < end; ++n) {
      const float* x = inp + static_cast<size_t>(n) * C;
      const float* dy = dout + static_cast<size_t>(n) * C;
      float* dx = dinp + static_cast<size_t>(n) * C;
      const float r = rstd[n];
      float dot = 0.0f;  // Σ dy·w·x̂
      for (int c = 0; c < C; ++c) {
        const float normalized = x[c] * r;
        dot += dy[c] * (offset + weight[c]) * normalized;
        dw[c] += dy[c] * normalized;
      }
      const float mean_dot = dot / C;
      for (int c = 0; c < C; ++c) {
        dx[c] += r * (dy[c] * (offset + weight[c]) - x[c] * r * mean_dot);
      }
    }
  }
  if (!dweight) return;
  for (int chunk = 0; chunk < chunks; ++chunk) {
    const float* dw = partial.data() + static_cast<size_t>(chunk) * C;
    for (int c = 0; c < C; ++c) dweight[c] += dw[c];
  }
}

}  // namespace qft::kernels
