// The gated activations: element-wise, in chunks a thread each, through
// the vector exponentials of vector_math.h.
#include <algorithm>
#include <vector>

#include "core/float16.h"
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

// out (n) rounded to BF16 from what `activation` writes in FP32, a chunk at a time.
template <class Activation>
void in_bf16_chunks(uint16_t* out, size_t n, Activation&& activation) {
  in_chunks(n, [&](size_t begin, size_t count) {
    thread_local std::vector<float> chunk(kChunk);
    activation(chunk.data(), begin, count);
    float_to_bf16_row(out + begin, chunk.data(), count);
  });
}

}  // namespace

void swiglu_forward(float* out, const float* gate, const float* up, size_t n) {
  in_chunks(n, [&](size_t b, size_t count) { vmath::silu_mul(out + b, gate + b, up + b, count); });
}

void swiglu_forward(uint16_t* out, const float* gate, const float* up, size_t n) {
  in_bf16_chunks(out, n, [&](float* chunk, size_t b, size_t count) { vmath::silu_mul(chunk, gate + b, up + b, count); });
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

void geglu_forward(uint16_t* out, const float* gate, const float* up, size_t n) {
  in_bf16_chunks(out, n, [&](float* chunk, size_t b, size_t count) { vmath::gelu_mul(chunk, gate + b, up + b, count); });
}

void geglu_backward(float* dgate, float* dup, const float* dout, const float* gate, const float* up,
                    size_t n) {
  in_chunks(n, [&](size_t b, size_t count) {
    vmath::gelu_mul_backward(dgate + b, dup + b, dout + b, gate + b, up + b, count);
  });
}

}  // namespace qft::kernels
