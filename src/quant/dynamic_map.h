#pragma once
// The 8-bit "dynamic" code book of bitsandbytes' block-wise optimizers
// (Dettmers et al., "8-bit Optimizers via Block-wise Quantization", 2022;
// the dynamic tree type of Dettmers 2016). Each code is a decimal exponent
// 10^(e−6), e = 0…6, times a linear fraction: exponent e splits [0.1, 1] into
// 2^e (signed) or 2^(e+1) (unsigned) equal cells and takes their midpoints,
// so small magnitudes get fine steps and large ones coarse. Signed books hold
// both signs; both add 0 and 1. 256 values, sorted ascending.
#include <array>
#include <cstdint>

namespace qft {

using CodeBook = std::array<float, 256>;

CodeBook dynamic_code_book(bool is_signed);

// The index of the code nearest to x (x already divided by the block absmax).
uint8_t nearest_code(const CodeBook& book, float x);

}  // namespace qft
