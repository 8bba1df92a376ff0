#include "core/memory.h"

#include <sys/resource.h>

#include <cstdlib>
#include <cstring>
#include <mutex>

#include "core/error.h"

namespace qft {
namespace {

std::mutex stats_mutex;
MemoryStats stats;

constexpr size_t kAlignment = 64;

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

MemoryStats memory_stats() {
  std::lock_guard lock(stats_mutex);
  return stats;
}

void reset_memory_peaks() {
  std::lock_guard lock(stats_mutex);
  stats.peak = stats.current;
  stats.total_peak = stats.total_current;
}

size_t process_peak_rss_bytes() {
  rusage usage{};
  getrusage(RUSAGE_SELF, &usage);
  return static_cast<size_t>(usage.ru_maxrss) * 1024;  // Linux reports KiB
}

namespace detail {

void* tracked_alloc(MemCategory category, size_t bytes) {
  if (bytes == 0) return nullptr;
  const size_t rounded = (bytes + kAlignment - 1) / kAlignment * kAlignment;
  void* pointer = std::aligned_alloc(kAlignment, rounded);
  if (!pointer) {
    fail("out of memory allocating ", bytes, " bytes of ", category_name(category));
  }
  // Zeroing touches every page, so the resident set matches the accounting.
  std::memset(pointer, 0, rounded);
  std::lock_guard lock(stats_mutex);
  const int index = static_cast<int>(category);
  stats.current[index] += bytes;
  stats.total_current += bytes;
  if (stats.current[index] > stats.peak[index]) stats.peak[index] = stats.current[index];
  if (stats.total_current > stats.total_peak) stats.total_peak = stats.total_current;
  return pointer;
}

void tracked_free(MemCategory category, void* pointer, size_t bytes) {
  std::free(pointer);
  std::lock_guard lock(stats_mutex);
  const int index = static_cast<int>(category);
  stats.current[index] -= bytes;
  stats.total_current -= bytes;
}

}  // namespace detail
}  // namespace qft
