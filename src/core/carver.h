#pragma once
// Lays out consecutive 64-byte aligned views in one buffer. With a null base
// it only measures, so sizing and carving share one description of a layout.
#include <cstddef>

namespace qft {

class Carver {
 public:
  explicit Carver(float* base) : base_(base) {}
  float* take(size_t count) {
    float* view = base_ ? base_ + used_ : nullptr;
    used_ += (count + 15) / 16 * 16;
    return view;
  }
  size_t used() const { return used_; }

 private:
  float* base_;
  size_t used_ = 0;
};

}  // namespace qft
