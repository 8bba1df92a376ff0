#pragma once
// Accounting layer: every large buffer is a Buffer<T> tagged with a category,
// so current and peak bytes per category are known at any time.
#include <array>
#include <cstddef>
#include <cstdint>
#include <string>
#include <utility>

namespace qft {

// WeightCopies: FP32 master weights of mixed-precision training.
enum class MemCategory { Weights, Gradients, OptimizerState, Activations, Workspace, WeightCopies };
inline constexpr int kMemCategoryCount = 6;

const char* category_name(MemCategory category);

struct MemoryStats {
  std::array<size_t, kMemCategoryCount> current{};
  std::array<size_t, kMemCategoryCount> peak{};
  size_t total_current = 0;
  size_t total_peak = 0;
};

MemoryStats memory_stats();
// Starts the peaks again from the current bytes (one process measuring several runs).
void reset_memory_peaks();
// Peak bytes of the process's resident set, as the kernel reports it.
size_t process_peak_rss_bytes();

namespace detail {
void* tracked_alloc(MemCategory category, size_t bytes);
void tracked_free(MemCategory category, void* pointer, size_t bytes);
}  // namespace detail

// Owning, 64-byte aligned, zero-initialised array of trivially copyable T.
template <class T>
class Buffer {
 public:
  Buffer() = default;
  Buffer(MemCategory category, size_t count)
      : category_(category),
        count_(count),
        data_(static_cast<T*>(detail::tracked_alloc(category, count * sizeof(T)))) {}
  Buffer(const Buffer&) = delete;
  Buffer& operator=(const Buffer&) = delete;
  Buffer(Buffer&& other) noexcept { swap(other); }
  Buffer& operator=(Buffer&& other) noexcept {
    Buffer(std::move(other)).swap(*this);
    return *this;
  }
  ~Buffer() {
    if (data_) detail::tracked_free(category_, data_, count_ * sizeof(T));
  }

  T* data() { return data_; }
  const T* data() const { return data_; }
  size_t size() const { return count_; }
  T& operator[](size_t i) { return data_[i]; }
  const T& operator[](size_t i) const { return data_[i]; }

  void swap(Buffer& other) noexcept {
    std::swap(category_, other.category_);
    std::swap(count_, other.count_);
    std::swap(data_, other.data_);
  }

 private:
  MemCategory category_ = MemCategory::Workspace;
  size_t count_ = 0;
  T* data_ = nullptr;
};

// Grows a buffer to at least `count` elements (contents are not kept).
template <class T>
void ensure_capacity(Buffer<T>& buffer, MemCategory category, size_t count) {
  if (buffer.size() < count) buffer = Buffer<T>(category, count);
}

}  // namespace qft
