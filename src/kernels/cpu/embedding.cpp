#include <cstring>

#include "core/float16.h"
#include "kernels/kernels.h"

namespace qft::kernels {

void embedding_forward(float* out, const int* tokens, const float* table, int N, int C) {
#pragma omp parallel for schedule(static)
  for (int n = 0; n < N; ++n) {
    std::memcpy(out + static_cast<size_t>(n) * C, table + static_cast<size_t>(tokens[n]) * C,
                C * sizeof(float));
  }
}

void embedding_forward(float* out, const int* tokens, const uint16_t* table, int N, int C) {
#pragma omp parallel for schedule(static)
  for (int n = 0; n < N; ++n) {
    const uint16_t* row = table + static_cast<size_t>(tokens[n]) * C;
    for (int c = 0; c < C; ++c) out[static_cast<size_t>(n) * C + c] = bf16_to_float(row[c]);
  }
}

void embedding_backward(float* dtable, const float* dout, const int* tokens, int N, int C, int first, int rows) {
  // Serial over rows: a token may repeat, and the work is tiny next to the GEMMs.
  for (int n = 0; n < N; ++n) {
    if (tokens[n] < first || tokens[n] >= first + rows) continue;
    float* row = dtable + static_cast<size_t>(tokens[n] - first) * C;
    const float* grad = dout + static_cast<size_t>(n) * C;
    for (int c = 0; c < C; ++c) row[c] += grad[c];
  }
}

}  // namespace qft::kernels
