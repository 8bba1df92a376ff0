#pragma once
// Accounting layer: every large buffer is a Buffer<T> tagged with a category
// and the device it lives on, allocated through that device's Allocator, so
// current and peak bytes per device and category are known at any time.
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

// Where a buffer lives: the host, or a GPU that a backend brings (kernels.h).
enum class Device { Host, Cuda };
inline constexpr int kDeviceCount = 2;

const char* device_name(Device device);  // "host", "cuda"

// A device's memory. allocate() returns zeroed, 64-byte aligned memory, or
// nullptr when the device has no more; release() takes back what it gave.
class Allocator {
 public:
  virtual ~Allocator() = default;
  virtual void* allocate(size_t bytes) = 0;
  virtual void release(void* pointer, size_t bytes) = 0;
};
// The allocator of `device`: the host's is always there; a backend installs
// its device's (and nullptr takes it away again) before any buffer lives there.
Allocator& allocator(Device device);
void install_allocator(Device device, Allocator* allocator);

struct MemoryStats {
  std::array<size_t, kMemCategoryCount> current{};
  std::array<size_t, kMemCategoryCount> peak{};
  size_t total_current = 0;
  size_t total_peak = 0;
};

// The bytes of one device.
MemoryStats memory_stats(Device device = Device::Host);
// Starts the peaks again from the current bytes, on every device (one process measuring several runs).
void reset_memory_peaks();
// Peak bytes of the process's resident set, as the kernel reports it.
size_t process_peak_rss_bytes();

namespace detail {
void* tracked_alloc(MemCategory category, Device device, size_t bytes);
void tracked_free(MemCategory category, Device device, void* pointer, size_t bytes);
}  // namespace detail

// Owning, 64-byte aligned, zero-initialised array of trivially copyable T on
// a device. Only a host buffer's elements may be read or written here; a
// device's go through kernels.
template <class T>
class Buffer {
 public:
  Buffer() = default;
  Buffer(MemCategory category, size_t count, Device device = Device::Host)
      : category_(category),
        device_(device),
        count_(count),
        data_(static_cast<T*>(detail::tracked_alloc(category, device, count * sizeof(T)))) {}
  Buffer(const Buffer&) = delete;
  Buffer& operator=(const Buffer&) = delete;
  Buffer(Buffer&& other) noexcept { swap(other); }
  Buffer& operator=(Buffer&& other) noexcept {
    Buffer(std::move(other)).swap(*this);
    return *this;
  }
  ~Buffer() {
    if (data_) detail::tracked_free(category_, device_, data_, count_ * sizeof(T));
  }

  T* data() { return data_; }
  const T* data() const { return data_; }
  size_t size() const { return count_; }
  Device device() const { return device_; }
  T& operator[](size_t i) { return data_[i]; }
  const T& operator[](size_t i) const { return data_[i]; }

  void swap(Buffer& other) noexcept {
    std::swap(category_, other.category_);
    std::swap(device_, other.device_);
    std::swap(count_, other.count_);
    std::swap(data_, other.data_);
  }

 private:
  MemCategory category_ = MemCategory::Workspace;
  Device device_ = Device::Host;
  size_t count_ = 0;
  T* data_ = nullptr;
};

// Grows a buffer to at least `count` elements (contents are not kept).
template <class T>
void ensure_capacity(Buffer<T>& buffer, MemCategory category, size_t count, Device device = Device::Host) {
  if (buffer.size() < count) buffer = Buffer<T>(category, count, device);
}

}  // namespace qft
