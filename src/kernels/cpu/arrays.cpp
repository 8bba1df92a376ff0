#include <algorithm>
#include <cmath>
#include <cstring>

#include "core/float16.h"
#include "kernels/kernels.h"

namespace qft::kernels {

void zero(void* x, size_t bytes) { std::memset(x, 0, bytes); }

void fill_bytes(void* x, uint8_t value, size_t bytes) { std::memset(x, value, bytes); }

void copy(void* dst, const void* src, size_t bytes) { std::memcpy(dst, src, bytes); }

void round_to_bf16(uint16_t* out, const float* in, size_t n) {
  constexpr size_t kChunk = 1 << 14;
#pragma omp parallel for schedule(static)
  for (size_t begin = 0; begin < n; begin += kChunk) float_to_bf16_row(out + begin, in + begin, std::min(kChunk, n - begin));
}

void find_nonfinite(int64_t* first, const float* x, size_t n) {
  // One pass without branches; the position only once something is wrong.
  float poison = 0.0f;
#pragma omp parallel for simd reduction(+ : poison) schedule(static)
  for (size_t i = 0; i < n; ++i) poison += x[i] * 0.0f;
  if (poison == 0.0f) {
    *first = -1;
    return;
  }
  size_t element = 0;
  while (element < n && std::isfinite(x[element])) ++element;
  *first = static_cast<int64_t>(element);
}

}  // namespace qft::kernels
