#include "train/schedule.h"

#include <algorithm>
#include <cmath>

namespace qft {

float LrSchedule::at(int step) const {
  if (warmup_steps > 0 && step <= warmup_steps) return peak * static_cast<float>(step) / warmup_steps;
  const int decay_steps = std::max(1, total_steps - warmup_steps);
  const double progress = std::clamp(static_cast<double>(step - warmup_steps) / decay_steps, 0.0, 1.0);
  const double cosine = 0.5 * (1.0 + std::cos(3.14159265358979323846 * progress));
  return static_cast<float>(peak * (min_ratio + (1.0 - min_ratio) * cosine));
}

}  // namespace qft
