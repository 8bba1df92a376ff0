#include "core/memory.h"

#include <sys/resource.h>

#include <cstdlib>
#include <cstring>
#include <mutex>

#include "core/error.h"

namespace qft {
namespace {

constexpr size_t kAlignment = 64;

// Zeroing touches every page, so the resident set matches the accounting.
class HostAllocator final : public Allocator {
 public:
  void* allocate(size_t bytes) override {
    const size_t rounded = (bytes + kAlignment - 1) / kAlignment * kAlignment;
    void* pointer = std::aligned_alloc(kAlignment, rounded);
    if (pointer) std::memset(pointer, 0, rounded);
    return pointer;
  }
  void release(void* pointer, size_t) override { std::free(pointer); }
};

HostAllocator host_allocator;
std::array<Allocator*, kDeviceCount> allocators = {&host_allocator, nullptr};

std::mutex stats_mutex;
std::array<MemoryStats, kDeviceCount> stats;

}  // namespace

const char* category_name(MemCategory category) {
  switch (category) {
    case MemCategory::Weights: return "weights";
    case MemCategory::Gradients: return "gradients";
    case MemCategory::OptimizerState: return "optimizer_state";
    case MemCategory::Activations: return "activations";
    case MemCategory::Workspace: return "workspace";
    case MemCategory::WeightCopies: return "weight_copies";
  }
  return "unknown";
}

const char* device_name(Device device) { return device == Device::Host ? "host" : "cuda"; }

Allocator& allocator(Device device) {
  Allocator* found = allocators[static_cast<int>(device)];
  if (!found) fail("no ", device_name(device), " device in this process: its backend is not running");
  return *found;
}

void install_allocator(Device device, Allocator* allocator) {
  if (device == Device::Host) fail("the host's allocator cannot be replaced");
  allocators[static_cast<int>(device)] = allocator;
}

MemoryStats memory_stats(Device device) {
  std::lock_guard lock(stats_mutex);
  return stats[static_cast<int>(device)];
}

void reset_memory_peaks() {
  std::lock_guard lock(stats_mutex);
  for (MemoryStats& device : stats) {
    device.peak = device.current;
    device.total_peak = device.total_current;
  }
}

size_t process_peak_rss_bytes() {
  rusage usage{};
  getrusage(RUSAGE_SELF, &usage);
  return static_cast<size_t>(usage.ru_maxrss) * 1024;  // Linux reports KiB
}

namespace detail {

void* tracked_alloc(MemCategory category, Device device, size_t bytes) {
  if (bytes == 0) return nullptr;
  void* pointer = allocator(device).allocate(bytes);
  if (!pointer) {
    fail("out of ", device_name(device), " memory allocating ", bytes, " bytes of ", category_name(category));
  }
  std::lock_guard lock(stats_mutex);
  MemoryStats& on = stats[static_cast<int>(device)];
  const int index = static_cast<int>(category);
  on.current[index] += bytes;
  on.total_current += bytes;
  if (on.current[index] > on.peak[index]) on.peak[index] = on.current[index];
  if (on.total_current > on.total_peak) on.total_peak = on.total_current;
  return pointer;
}

void tracked_free(MemCategory category, Device device, void* pointer, size_t bytes) {
  allocator(device).release(pointer, bytes);
  std::lock_guard lock(stats_mutex);
  MemoryStats& on = stats[static_cast<int>(device)];
  const int index = static_cast<int>(category);
  on.current[index] -= bytes;
  on.total_current -= bytes;
}

}  // namespace detail
}  // namespace qft
