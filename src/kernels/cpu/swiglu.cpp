// The gated activations: element-wise, in chunks a thread each, through
// the vector exponentials of vector_math.h.
#include <algorithm>

#include "kernels/cpu/vector_math.h"
#include "kernels/kernels.h"

namespace qft::kernels {
namespace {

constexpr size_t kChunk = 1 << 14;

template <class Chunk>
void in_chunks(size_t n, Chunk&& chunk) {
#pragma omp parallel for schedule(static)
  for (size_t begin = 0; begin < n; begin += kChunk) chunk(begin, std::min(kChunk, n - begin));
}

}  // namespace

void swiglu_forward(float* out, const float* gate, const float* up, size_t n) {
  in_chunks(n, [&](size_t b, size_t count) { vmath::silu_mul(out + b, gate + b, up + b, count); });
}

void swiglu_backward(float* dgate, float* dup, const float* dout, const float* gate, const float* up,
                     size_t n) {
  in_chunks(n, [&](size_t b, size_t count) {
    vmath::silu_mul_backward(dgate + b, dup + b, dout + b, gate + b, up + b, count);
  });
}

void geglu_forward(float* out, const float* gate, const float* up, size_t n) {
  in_chunks(n, [&](size_t b, size_t count) { vmath::gelu_mul(out + b, gate + b, up + b, count); });
}

void geglu_backward(float* dgate, float* dup, const float* dout, const float* gate, const float* up,
                    size_t n) {
  in_chunks(n, [&](size_t b, size_t count) {
    vmath::gelu_mul_backward(dgate + b, dup + b, dout + b, gate + b, up + b, count);
  });
}

}  // namespace qft::kernels
