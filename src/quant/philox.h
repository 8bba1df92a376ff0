#pragma once
// Philox4x32-10 (Salmon et al., "Parallel random numbers: as easy as 1, 2, 3",
// SC 2011): a counter-based generator, so any element's random number is a
// pure function of (key, counter) — reproducible, resumable, thread-order free.
#include <array>
#include <cstdint>

namespace qft {

using PhiloxCounter = std::array<uint32_t, 4>;
using PhiloxKey = std::array<uint32_t, 2>;

inline PhiloxCounter philox4x32_10(PhiloxCounter counter, PhiloxKey key) {
  constexpr uint32_t kMultiplier0 = 0xD2511F53u, kMultiplier1 = 0xCD9E8D57u;
  constexpr uint32_t kWeyl0 = 0x9E3779B9u, kWeyl1 = 0xBB67AE85u;
  for (int round = 0; round < 10; ++round) {
    const uint64_t product0 = static_cast<uint64_t>(kMultiplier0) * counter[0];
    const uint64_t product1 = static_cast<uint64_t>(kMultiplier1) * counter[2];
    counter = {static_cast<uint32_t>(product1 >> 32) ^ counter[1] ^ key[0], static_cast<uint32_t>(product1),
               static_cast<uint32_t>(product0 >> 32) ^ counter[3] ^ key[1], static_cast<uint32_t>(product0)};
    key[0] += kWeyl0;
    key[1] += kWeyl1;
  }
  return counter;
}

inline PhiloxKey philox_key(uint64_t seed) { return {static_cast<uint32_t>(seed), static_cast<uint32_t>(seed >> 32)}; }

// Uniform in [0, 1) from the top 24 bits, exactly representable as float.
inline float uniform_from_bits(uint32_t bits) { return static_cast<float>(bits >> 8) * 0x1.0p-24f; }

// out[i] for i in [0, n): uniforms in (0, 1) on a grid of 2⁻¹⁶ (cell
// midpoints, so the mean is exactly ½), eight per Philox call: element i uses
// half i % 2 of word (i / 2) % 4 of the block with counter (i / 8, c1, c2, c3).
// Sixteen blocks at a time in AVX-512's lanes where the build has it.
void philox_uniforms16(float* out, int64_t n, PhiloxKey key, uint32_t c1, uint32_t c2, uint32_t c3);

}  // namespace qft
