#pragma once
// 16-bit floats: bfloat16 (the top half of an IEEE float32) and IEEE
// binary16, both ways, rounding to nearest even.
#include <bit>
#include <cstddef>
#include <cstdint>

namespace qft {

inline float bf16_to_float(uint16_t bits) { return std::bit_cast<float>(static_cast<uint32_t>(bits) << 16); }

// Round to nearest, ties to even; NaN stays NaN.
inline uint16_t float_to_bf16(float value) {
  const uint32_t bits = std::bit_cast<uint32_t>(value);
  if ((bits & 0x7fffffffu) > 0x7f800000u) return static_cast<uint16_t>((bits >> 16) | 0x40u);
  return static_cast<uint16_t>((bits + 0x7fffu + ((bits >> 16) & 1u)) >> 16);
}

// out (n) = in (n) rounded as float_to_bf16 does, 16 values an instruction
// where the build has AVX512-BF16 (whose conversion flushes subnormal inputs
// to zero, as oneDNN's BF16 kernels do).
void float_to_bf16_row(uint16_t* out, const float* in, size_t n);

float half_to_float(uint16_t half);
uint16_t float_to_half(float value);

}  // namespace qft
