#pragma once
// Exponentials and their kin for the CPU kernels, a vector at a time:
// SLEEF's 1.0-ULP functions (Shibata & Petrogalli, "SLEEF: A Portable
// Vectorized Library of C Standard Mathematical Functions", IEEE TPDS 2020),
// 16 floats an instruction with AVX-512, 8 with AVX2, one at a time
// otherwise — in place of glibc's scalar calls. Every sum is added up in a
// fixed order (lanes, then the lanes in order), so results do not depend
// on the thread that computes them.
#include <cstddef>

namespace qft::kernels::vmath {

// x (n) = exp(x − shift); returns Σ of the new values.
float exp_sum(float* x, int n, float shift);
// Σ exp(x − shift) over x (n), accumulated in double; x is not changed.
double exp_sum_double(const float* x, int n, float shift);
// x (n) = exp(x − shift) · scale.
void exp_scale(float* x, int n, float shift, float scale);

// SwiGLU: out (n) = silu(gate) · up, silu(g) = g / (1 + exp(−g)); its
// gradients (written, not accumulated; they may alias gate and up).
void silu_mul(float* out, const float* gate, const float* up, size_t n);
void silu_mul_backward(float* dgate, float* dup, const float* dout, const float* gate, const float* up, size_t n);
// GeGLU with PyTorch's tanh approximation: out (n) = gelu_tanh(gate) · up; its gradients.
void gelu_mul(float* out, const float* gate, const float* up, size_t n);
void gelu_mul_backward(float* dgate, float* dup, const float* dout, const float* gate, const float* up, size_t n);
// x (n) = cap · tanh(x / cap).
void softcap(float* x, size_t n, float cap);

// cos (n) and sin (n) of angle (n), in double.
void sincos(double* cos, double* sin, const double* angle, size_t n);

}  // namespace qft::kernels::vmath
