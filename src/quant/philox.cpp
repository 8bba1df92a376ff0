#include "quant/philox.h"

namespace qft {
namespace {

// Eight 16-bit-grid uniforms from one block of bits.
inline void write_uniforms(float* out, const PhiloxCounter& bits) {
  constexpr float kScale = 0x1.0p-16f;
  for (int word = 0; word < 4; ++word) {
    out[2 * word] = (static_cast<float>(bits[word] & 0xffffu) + 0.5f) * kScale;
    out[2 * word + 1] = (static_cast<float>(bits[word] >> 16) + 0.5f) * kScale;
  }
}

}  // namespace

void philox_uniforms16(float* out, int64_t n, PhiloxKey key, uint32_t c1, uint32_t c2, uint32_t c3) {
  const int64_t full_blocks = n / 8;
  // No control flow in this loop, so the compiler vectorizes it across blocks.
  for (int64_t block = 0; block < full_blocks; ++block) {
    write_uniforms(out + block * 8, philox4x32_10({static_cast<uint32_t>(block), c1, c2, c3}, key));
  }
  if (n % 8) {
    float tail[8];
    write_uniforms(tail, philox4x32_10({static_cast<uint32_t>(full_blocks), c1, c2, c3}, key));
    for (int64_t i = full_blocks * 8; i < n; ++i) out[i] = tail[i - full_blocks * 8];
  }
}

}  // namespace qft
