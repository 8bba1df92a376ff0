#include <cmath>
#include <vector>

#include "core/float16.h"
#include "kernels/cpu/vector_math.h"
#include "kernels/kernels.h"

namespace qft::kernels {
namespace {

// Row n of x (H, D): each head's (first half, second half) pairs rotated by
// ±angle into out (H, D) (which may be x).
void rotate_row(float* out, const float* x, int position, const float* cos, const float* sin, int H, int D,
                float direction) {
  const int half = D / 2;
  const float* c = cos + static_cast<size_t>(position) * half;
  const float* s = sin + static_cast<size_t>(position) * half;
  for (int h = 0; h < H; ++h) {
    const float* first = x + static_cast<size_t>(h) * D;
    const float* second = first + half;
    float* out_first = out + static_cast<size_t>(h) * D;
    float* out_second = out_first + half;
    for (int i = 0; i < half; ++i) {
      const float a = first[i], b = second[i], si = direction * s[i];
      out_first[i] = a * c[i] - b * si;
      out_second[i] = b * c[i] + a * si;
    }
  }
}

void rotate(float* x, const int* positions, const float* cos, const float* sin, int N, int H, int D,
            float direction) {
  const size_t row = static_cast<size_t>(H) * D;
#pragma omp parallel for schedule(static)
  for (int n = 0; n < N; ++n) rotate_row(x + n * row, x + n * row, positions[n], cos, sin, H, D, direction);
}

}  // namespace

void rope_tables(float* cos, float* sin, int max_positions, int D, const float* inverse_frequencies,
                 float attention_factor) {
  const int half = D / 2;
#pragma omp parallel for schedule(static)
  for (int i = 0; i < half; ++i) {
    // HF computes the inverse frequency in float32; the angle and its
    // cosine are taken in double so the table is as exact as float allows.
    std::vector<double> angles(max_positions), c(max_positions), s(max_positions);
    for (int p = 0; p < max_positions; ++p) angles[p] = static_cast<double>(p) * inverse_frequencies[i];
    vmath::sincos(c.data(), s.data(), angles.data(), static_cast<size_t>(max_positions));
    for (int p = 0; p < max_positions; ++p) {
      cos[static_cast<size_t>(p) * half + i] = static_cast<float>(c[p] * attention_factor);
      sin[static_cast<size_t>(p) * half + i] = static_cast<float>(s[p] * attention_factor);
    }
  }
}

void rope_forward(float* x, const int* positions, const float* cos, const float* sin, int N, int H,
                  int D) {
  rotate(x, positions, cos, sin, N, H, D, 1.0f);
}

void rope_forward(uint16_t* out, const float* x, const int* positions, const float* cos, const float* sin, int N,
                  int H, int D) {
  const size_t row = static_cast<size_t>(H) * D;
#pragma omp parallel
  {
    std::vector<float> rotated(row);  // (H, D) one row in FP32
#pragma omp for schedule(static)
    for (int n = 0; n < N; ++n) {
      rotate_row(rotated.data(), x + n * row, positions[n], cos, sin, H, D, 1.0f);
      float_to_bf16_row(out + n * row, rotated.data(), row);
    }
  }
}

void rope_backward(float* dx, const int* positions, const float* cos, const float* sin, int N,
                   int H, int D) {
  // The rotation is orthogonal: its transpose is the rotation by −angle.
  rotate(dx, positions, cos, sin, N, H, D, -1.0f);
}

}  // namespace qft::kernels
