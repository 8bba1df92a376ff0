#include "kernels/cpu/vector_math.h"

#include <immintrin.h>
#include <sleef.h>

#include <type_traits>

namespace qft::kernels::vmath {
namespace {

// A vector of floats as wide as the build allows, with what the kernels
// below need; the lanes that remain after the last full vector go one at a
// time through SLEEF's scalar functions.
#if defined(__AVX512F__)
struct Lanes {
  static constexpr int kWidth = 16;
  __m512 v;
  static Lanes load(const float* p) { return {_mm512_loadu_ps(p)}; }
  static Lanes all(float x) { return {_mm512_set1_ps(x)}; }
  void store(float* p) const { _mm512_storeu_ps(p, v); }
  Lanes exp() const { return {Sleef_expf16_u10(v)}; }
  Lanes tanh() const { return {Sleef_tanhf16_u10(v)}; }
  Lanes operator+(Lanes b) const { return {_mm512_add_ps(v, b.v)}; }
  Lanes operator-(Lanes b) const { return {_mm512_sub_ps(v, b.v)}; }
  Lanes operator*(Lanes b) const { return {_mm512_mul_ps(v, b.v)}; }
  Lanes operator/(Lanes b) const { return {_mm512_div_ps(v, b.v)}; }
};
#elif defined(__AVX2__)
struct Lanes {
  static constexpr int kWidth = 8;
  __m256 v;
  static Lanes load(const float* p) { return {_mm256_loadu_ps(p)}; }
  static Lanes all(float x) { return {_mm256_set1_ps(x)}; }
  void store(float* p) const { _mm256_storeu_ps(p, v); }
  Lanes exp() const { return {Sleef_expf8_u10(v)}; }
  Lanes tanh() const { return {Sleef_tanhf8_u10(v)}; }
  Lanes operator+(Lanes b) const { return {_mm256_add_ps(v, b.v)}; }
  Lanes operator-(Lanes b) const { return {_mm256_sub_ps(v, b.v)}; }
  Lanes operator*(Lanes b) const { return {_mm256_mul_ps(v, b.v)}; }
  Lanes operator/(Lanes b) const { return {_mm256_div_ps(v, b.v)}; }
};
#else
struct Lanes {
  static constexpr int kWidth = 1;
  float v;
  static Lanes load(const float* p) { return {*p}; }
  static Lanes all(float x) { return {x}; }
  void store(float* p) const { *p = v; }
  Lanes exp() const { return {Sleef_expf_u10(v)}; }
  Lanes tanh() const { return {Sleef_tanhf_u10(v)}; }
  Lanes operator+(Lanes b) const { return {v + b.v}; }
  Lanes operator-(Lanes b) const { return {v - b.v}; }
  Lanes operator*(Lanes b) const { return {v * b.v}; }
  Lanes operator/(Lanes b) const { return {v / b.v}; }
};
#endif

// The lanes of x added in order, lane 0 first, in T.
template <class T>
T lane_sum(Lanes x) {
  alignas(64) float lanes[Lanes::kWidth];
  x.store(lanes);
  T total = 0;
  for (float lane : lanes) total += lane;
  return total;
}

// One lane's worth, for the tail.
struct Scalar {
  float v;
  static Scalar load(const float* p) { return {*p}; }
  static Scalar all(float x) { return {x}; }
  void store(float* p) const { *p = v; }
  Scalar exp() const { return {Sleef_expf_u10(v)}; }
  Scalar tanh() const { return {Sleef_tanhf_u10(v)}; }
  Scalar operator+(Scalar b) const { return {v + b.v}; }
  Scalar operator-(Scalar b) const { return {v - b.v}; }
  Scalar operator*(Scalar b) const { return {v * b.v}; }
  Scalar operator/(Scalar b) const { return {v / b.v}; }
};

// body(i, Lanes) for every full vector from 0, then body(i, Scalar) for the rest.
template <class Body>
void for_lanes(size_t n, Body&& body) {
  size_t i = 0;
  for (; i + Lanes::kWidth <= n; i += Lanes::kWidth) body(i, Lanes{});
  for (; i < n; ++i) body(i, Scalar{});
}

template <class V>
V silu(V g) {
  return g / (V::all(1.0f) + (V::all(0.0f) - g).exp());
}

constexpr float kSqrt2OverPi = 0.7978845608028654f, kGeluCubic = 0.044715f;

template <class V>
V gelu_tanh_inner(V g) {
  return (V::all(kSqrt2OverPi) * (g + V::all(kGeluCubic) * g * g * g)).tanh();
}

}  // namespace

float exp_sum(float* x, int n, float shift) {
  Lanes total = Lanes::all(0.0f);
  float tail = 0.0f;
  for_lanes(static_cast<size_t>(n), [&](size_t i, auto lanes) {
    using V = decltype(lanes);
    const V e = (V::load(x + i) - V::all(shift)).exp();
    e.store(x + i);
    if constexpr (std::is_same_v<V, Lanes>) total = total + e;
    else tail += e.v;
  });
  return lane_sum<float>(total) + tail;
}

double exp_sum_double(const float* x, int n, float shift) {
  double total = 0.0;
  for_lanes(static_cast<size_t>(n), [&](size_t i, auto lanes) {
    using V = decltype(lanes);
    const V e = (V::load(x + i) - V::all(shift)).exp();
    if constexpr (std::is_same_v<V, Lanes>) total += lane_sum<double>(e);
    else total += e.v;
  });
  return total;
}

void exp_scale(float* x, int n, float shift, float scale) {
  for_lanes(static_cast<size_t>(n), [&](size_t i, auto lanes) {
    using V = decltype(lanes);
    ((V::load(x + i) - V::all(shift)).exp() * V::all(scale)).store(x + i);
  });
}

void silu_mul(float* out, const float* gate, const float* up, size_t n) {
  for_lanes(n, [&](size_t i, auto lanes) {
    using V = decltype(lanes);
    (silu(V::load(gate + i)) * V::load(up + i)).store(out + i);
  });
}

void silu_mul_backward(float* dgate, float* dup, const float* dout, const float* gate, const float* up, size_t n) {
  for_lanes(n, [&](size_t i, auto lanes) {
    using V = decltype(lanes);
    const V g = V::load(gate + i), u = V::load(up + i), d = V::load(dout + i);  // read before writing: may alias
    const V one = V::all(1.0f);
    const V sigmoid = one / (one + (V::all(0.0f) - g).exp());
    (d * g * sigmoid).store(dup + i);
    (d * u * sigmoid * (one + g * (one - sigmoid))).store(dgate + i);
  });
}

void gelu_mul(float* out, const float* gate, const float* up, size_t n) {
  for_lanes(n, [&](size_t i, auto lanes) {
    using V = decltype(lanes);
    const V g = V::load(gate + i);
    (V::all(0.5f) * g * (V::all(1.0f) + gelu_tanh_inner(g)) * V::load(up + i)).store(out + i);
  });
}

void gelu_mul_backward(float* dgate, float* dup, const float* dout, const float* gate, const float* up, size_t n) {
  for_lanes(n, [&](size_t i, auto lanes) {
    using V = decltype(lanes);
    const V g = V::load(gate + i), u = V::load(up + i), d = V::load(dout + i);  // read before writing: may alias
    const V one = V::all(1.0f), half = V::all(0.5f);
    const V t = gelu_tanh_inner(g);
    const V gelu = half * g * (one + t);
    const V dgelu = half * (one + t) + half * g * (one - t * t) * V::all(kSqrt2OverPi) *
                                           (one + V::all(3.0f * kGeluCubic) * g * g);
    (d * gelu).store(dup + i);
    (d * u * dgelu).store(dgate + i);
  });
}

void softcap(float* x, size_t n, float cap) {
  for_lanes(n, [&](size_t i, auto lanes) {
    using V = decltype(lanes);
    (V::all(cap) * (V::load(x + i) / V::all(cap)).tanh()).store(x + i);
  });
}

void sincos(double* cos, double* sin, const double* angle, size_t n) {
  size_t i = 0;
#if defined(__AVX512F__)
  for (; i + 8 <= n; i += 8) {
    const Sleef___m512d_2 both = Sleef_sincosd8_u10(_mm512_loadu_pd(angle + i));
    _mm512_storeu_pd(sin + i, both.x);
    _mm512_storeu_pd(cos + i, both.y);
  }
#elif defined(__AVX2__)
  for (; i + 4 <= n; i += 4) {
    const Sleef___m256d_2 both = Sleef_sincosd4_u10(_mm256_loadu_pd(angle + i));
    _mm256_storeu_pd(sin + i, both.x);
    _mm256_storeu_pd(cos + i, both.y);
  }
#endif
  for (; i < n; ++i) {
    const Sleef_double2 both = Sleef_sincos_u10(angle[i]);
    sin[i] = both.x;
    cos[i] = both.y;
  }
}

}  // namespace qft::kernels::vmath
