#include "core/float16.h"

#include <immintrin.h>

#include <cmath>

namespace qft {

void float_to_bf16_row(uint16_t* out, const float* in, size_t n) {
  size_t j = 0;
#ifdef __AVX512BF16__
  for (; j + 16 <= n; j += 16) {
    const __m256bh rounded = _mm512_cvtneps_pbh(_mm512_loadu_ps(in + j));
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(out + j), std::bit_cast<__m256i>(rounded));
  }
#endif
  for (; j < n; ++j) out[j] = float_to_bf16(in[j]);
}

float half_to_float(uint16_t h) {
  const uint32_t sign = static_cast<uint32_t>(h & 0x8000u) << 16;
  uint32_t exponent = (h >> 10) & 0x1f;
  uint32_t mantissa = h & 0x3ffu;
  uint32_t bits;
  if (exponent == 0x1f) {
    bits = sign | 0x7f800000u | (mantissa << 13);
  } else if (exponent != 0) {
    bits = sign | ((exponent + 112) << 23) | (mantissa << 13);
  } else if (mantissa == 0) {
    bits = sign;
  } else {  // subnormal: renormalise
    exponent = 113;
    while (!(mantissa & 0x400u)) {
      mantissa <<= 1;
      --exponent;
    }
    bits = sign | (exponent << 23) | ((mantissa & 0x3ffu) << 13);
  }
  return std::bit_cast<float>(bits);
}

uint16_t float_to_half(float value) {
  const uint32_t bits = std::bit_cast<uint32_t>(value);
  const uint16_t sign = static_cast<uint16_t>((bits >> 16) & 0x8000u);
  const uint32_t magnitude = bits & 0x7fffffffu;
  if (magnitude > 0x7f800000u) return sign | 0x7e00u;  // NaN
  if (magnitude >= 0x477ff000u) return sign | 0x7c00u;  // rounds to infinity (≥ 65520)
  if (magnitude < 0x38800000u) {
    // Subnormal or zero: value / 2⁻²⁴ rounded to nearest even.
    const float scaled = std::bit_cast<float>(magnitude) * 0x1.0p24f;
    return sign | static_cast<uint16_t>(std::nearbyint(scaled));
  }
  // Normal: rebias the exponent, round the 13 dropped mantissa bits to even.
  const uint32_t rebiased = magnitude - 0x38000000u;
  return sign | static_cast<uint16_t>((rebiased + 0x0fffu + ((rebiased >> 13) & 1u)) >> 13);
}

}  // namespace qft
