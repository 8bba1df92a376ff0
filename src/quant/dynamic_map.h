#pragma once
// The 8-bit "dynamic" code book of bitsandbytes' block-wise optimizers
// (Dettmers et al., "8-bit Optimizers via Block-wise Quantization", 2022;
// the dynamic tree type of Dettmers 2016). Each code is a decimal exponent
// 10^(e−6), e = 0…6, times a linear fraction: exponent e splits [0.1, 1] into
// 2^e (signed) or 2^(e+1) (unsigned) equal cells and takes their midpoints,
// so small magnitudes get fine steps and large ones coarse. Signed books hold
// both signs; both add 0 and 1. 256 values, sorted ascending.
#include <array>
#include <bit>
#include <vector>
#include <cstdint>

namespace qft {

using CodeBook = std::array<float, 256>;

CodeBook dynamic_code_book(bool is_signed);

// The index of the code nearest to x (x already divided by the block absmax);
// ties go to the lower code.
uint8_t nearest_code(const CodeBook& book, float x);

// nearest_code in a few operations: a table indexed by the top 16 bits of x
// gives a code near x, and the midpoints between codes settle it.
class CodeBookEncoder {
 public:
  explicit CodeBookEncoder(const CodeBook& book);
  uint8_t encode(float x) const {
    int code = start_[std::bit_cast<uint32_t>(x) >> 16];
    while (code < 255 && x > midpoints_[code]) ++code;
    while (code > 0 && !(x > midpoints_[code - 1])) --code;
    return static_cast<uint8_t>(code);
  }

 private:
  std::array<float, 255> midpoints_;
  std::vector<uint8_t> start_;  // (65536)
};

}  // namespace qft
