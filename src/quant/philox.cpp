#include "quant/philox.h"

#ifdef __AVX512F__
#include <immintrin.h>
// GCC 12's AVX-512 headers set the pass-through of unmasked intrinsics to
// an "undefined" self-initialised vector and then warn about it (GCC bug
// 105593, fixed in 13).
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif

namespace qft {
namespace {

constexpr float kScale = 0x1.0p-16f;

// Eight 16-bit-grid uniforms from one block of bits.
inline void write_uniforms(float* out, const PhiloxCounter& bits) {
  for (int word = 0; word < 4; ++word) {
    out[2 * word] = (static_cast<float>(bits[word] & 0xffffu) + 0.5f) * kScale;
    out[2 * word + 1] = (static_cast<float>(bits[word] >> 16) + 0.5f) * kScale;
  }
}

#ifdef __AVX512F__
// Sixteen Philox blocks in the lanes of four vectors, one per counter word.
struct Blocks16 {
  __m512i word[4];
};

// hi and lo 32 bits of x · m per lane, from two 32×32→64 products (even
// lanes, odd lanes): cheaper than 64-bit multiplies.
inline void multiply_wide(__m512i x, __m512i m, __m512i& hi, __m512i& lo) {
  const __m512i even = _mm512_mul_epu32(x, m);
  const __m512i odd = _mm512_mul_epu32(_mm512_srli_epi64(x, 32), m);
  hi = _mm512_mask_blend_epi32(0xAAAA, _mm512_srli_epi64(even, 32), odd);
  lo = _mm512_mask_blend_epi32(0xAAAA, even, _mm512_slli_epi64(odd, 32));
}

// philox4x32_10 of the counters (first + lane, c1, c2, c3), lane by lane.
Blocks16 philox16(uint32_t first, uint32_t c1, uint32_t c2, uint32_t c3, PhiloxKey key) {
  const __m512i multiplier0 = _mm512_set1_epi32(static_cast<int>(0xD2511F53u));
  const __m512i multiplier1 = _mm512_set1_epi32(static_cast<int>(0xCD9E8D57u));
  const __m512i lanes = _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
  __m512i x0 = _mm512_add_epi32(_mm512_set1_epi32(static_cast<int>(first)), lanes);
  __m512i x1 = _mm512_set1_epi32(static_cast<int>(c1)), x2 = _mm512_set1_epi32(static_cast<int>(c2));
  __m512i x3 = _mm512_set1_epi32(static_cast<int>(c3));
  for (int round = 0; round < 10; ++round) {
    __m512i hi0, lo0, hi1, lo1;
    multiply_wide(x0, multiplier0, hi0, lo0);
    multiply_wide(x2, multiplier1, hi1, lo1);
    const __m512i key0 = _mm512_set1_epi32(static_cast<int>(key[0])), key1 = _mm512_set1_epi32(static_cast<int>(key[1]));
    x0 = _mm512_xor_si512(_mm512_xor_si512(hi1, x1), key0);
    x1 = lo1;
    x2 = _mm512_xor_si512(_mm512_xor_si512(hi0, x3), key1);
    x3 = lo0;
    key[0] += 0x9E3779B9u;
    key[1] += 0xBB67AE85u;
  }
  return {{x0, x1, x2, x3}};
}

// 32 uniforms from the 16-bit halves of a vector, in memory order.
inline void write_halves(float* out, __m512i bits) {
  const __m512 half = _mm512_set1_ps(0.5f), scale = _mm512_set1_ps(kScale);
  const __m512i low = _mm512_cvtepu16_epi32(_mm512_castsi512_si256(bits));
  const __m512i high = _mm512_cvtepu16_epi32(_mm512_extracti64x4_epi64(bits, 1));
  _mm512_storeu_ps(out, _mm512_mul_ps(_mm512_add_ps(_mm512_cvtepi32_ps(low), half), scale));
  _mm512_storeu_ps(out + 16, _mm512_mul_ps(_mm512_add_ps(_mm512_cvtepi32_ps(high), half), scale));
}

// out (128): the uniforms of blocks first … first + 15, each block's four
// words made contiguous again (a 4 × 16 transpose) before the halves.
void write_uniforms16(float* out, const Blocks16& blocks) {
  const __m512i* w = blocks.word;
  const __m512i t0 = _mm512_unpacklo_epi32(w[0], w[1]), t1 = _mm512_unpackhi_epi32(w[0], w[1]);
  const __m512i t2 = _mm512_unpacklo_epi32(w[2], w[3]), t3 = _mm512_unpackhi_epi32(w[2], w[3]);
  // b_r's 128-bit lane q holds block 4q + r.
  const __m512i b0 = _mm512_unpacklo_epi64(t0, t2), b1 = _mm512_unpackhi_epi64(t0, t2);
  const __m512i b2 = _mm512_unpacklo_epi64(t1, t3), b3 = _mm512_unpackhi_epi64(t1, t3);
  const __m512i u0 = _mm512_shuffle_i32x4(b0, b1, 0x44), u1 = _mm512_shuffle_i32x4(b0, b1, 0xEE);
  const __m512i u2 = _mm512_shuffle_i32x4(b2, b3, 0x44), u3 = _mm512_shuffle_i32x4(b2, b3, 0xEE);
  write_halves(out, _mm512_shuffle_i32x4(u0, u2, 0x88));       // blocks 0–3
  write_halves(out + 32, _mm512_shuffle_i32x4(u0, u2, 0xDD));  // blocks 4–7
  write_halves(out + 64, _mm512_shuffle_i32x4(u1, u3, 0x88));  // blocks 8–11
  write_halves(out + 96, _mm512_shuffle_i32x4(u1, u3, 0xDD));  // blocks 12–15
}
#endif

}  // namespace

void philox_uniforms16(float* out, int64_t n, PhiloxKey key, uint32_t c1, uint32_t c2, uint32_t c3) {
  const int64_t full_blocks = n / 8;
  int64_t block = 0;
#ifdef __AVX512F__
  for (; block + 16 <= full_blocks; block += 16) {
    write_uniforms16(out + block * 8, philox16(static_cast<uint32_t>(block), c1, c2, c3, key));
  }
#endif
  for (; block < full_blocks; ++block) {
    write_uniforms(out + block * 8, philox4x32_10({static_cast<uint32_t>(block), c1, c2, c3}, key));
  }
  if (n % 8) {
    float tail[8];
    write_uniforms(tail, philox4x32_10({static_cast<uint32_t>(full_blocks), c1, c2, c3}, key));
    for (int64_t i = full_blocks * 8; i < n; ++i) out[i] = tail[i - full_blocks * 8];
  }
}

}  // namespace qft
