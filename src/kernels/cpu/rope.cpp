#include <cmath>
#include <vector>

#include "kernels/cpu/vector_math.h"
#include "kernels/kernels.h"

namespace qft::kernels {
namespace {

// Rotates each head's (first half, second half) pairs by ±angle.
void rotate(float* x, const int* positions, const float* cos, const float* sin, int N, int H, int D,
            float direction) {
  const int half = D / 2;
#pragma omp parallel for schedule(static)
  for (int n = 0; n < N; ++n) {
    const float* c = cos + static_cast<size_t>(positions[n]) * half;
    const float* s = sin + static_cast<size_t>(positions[n]) * half;
    for (int h = 0; h < H; ++h) {
      float* first = x + (static_cast<size_t>(n) * H + h) * D;
      float* second = first + half;
      for (int i = 0; i < half; ++i) {
        const float a = first[i], b = second[i], si = direction * s[i];
        first[i] = a * c[i] - b * si;
        second[i] = b * c[i] + a * si;
      }
    }
  }
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

void rope_backward(float* dx, const int* positions, const float* cos, const float* sin, int N,
                   int H, int D) {
  // The rotation is orthogonal: its transpose is the rotation by −angle.
  rotate(dx, positions, cos, sin, N, H, D, -1.0f);
}

}  // namespace qft::kernels
