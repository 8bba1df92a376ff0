#include "train/nonfinite.h"

#include "core/error.h"
#include "kernels/kernels.h"

namespace qft {
namespace {

std::function<void(int, const std::string&, float*, size_t, size_t)>& test_hook() {
  static std::function<void(int, const std::string&, float*, size_t, size_t)> hook;
  return hook;
}

}  // namespace

std::string NonFinite::describe() const {
  if (tensor == "loss") return "the loss";
  std::string text = "the gradient of " + tensor + " (";
  if (layer >= 0) text += "layer " + std::to_string(layer) + ", ";
  return text + "element " + std::to_string(element) + ")";
}

int layer_of(const std::string& name) {
  const std::string prefix = "model.layers.";
  if (name.rfind(prefix, 0) != 0) return -1;
  const size_t end = name.find('.', prefix.size());
  if (end == std::string::npos || end == prefix.size()) return -1;
  int layer = 0;
  for (size_t i = prefix.size(); i < end; ++i) {
    if (name[i] < '0' || name[i] > '9') return -1;
    layer = layer * 10 + (name[i] - '0');
  }
  return layer;
}

void set_gradient_test_hook(std::function<void(int, const std::string&, float*, size_t, size_t)> hook) {
  test_hook() = std::move(hook);
}

std::optional<NonFinite> check_gradient(int step, const std::string& name, float* grad, size_t count,
                                        size_t first) {
  if (test_hook()) test_hook()(step, name, grad, count, first);
  int64_t found = -1;  // on a device, the one value that crosses to the host
  kernels::find_nonfinite(&found, grad, count);
  if (found < 0) return std::nullopt;
  return NonFinite{name, layer_of(name), first + static_cast<size_t>(found)};
}

NonFinitePolicy parse_nonfinite_policy(const std::string& name) {
  if (name == "stop") return NonFinitePolicy::Stop;
  if (name == "skip") return NonFinitePolicy::Skip;
  fail("--on-nonfinite must be stop or skip, got '", name, "'");
}

NonFiniteGuard::NonFiniteGuard(NonFinitePolicy policy, int max_consecutive_skips, int skipped_before,
                               int consecutive_before)
    : policy_(policy), max_consecutive_(max_consecutive_skips), skipped_(skipped_before), consecutive_(consecutive_before) {
  if (max_consecutive_ < 1) fail("--max-skips must be at least 1");
}

NonFiniteGuard::Outcome NonFiniteGuard::judge(int step, const std::optional<NonFinite>& finding) {
  if (!finding) {
    consecutive_ = 0;
    return Outcome::Applied;
  }
  const std::string what = "step " + std::to_string(step) + ": " + finding->describe() + " is NaN or Inf";
  if (finding->state_changed) {
    stop_reason_ = what + " after the layers above it were updated inside backward, so the step cannot be skipped; "
                          "the model in memory is not saved (--stack-gradients or --grad-accum 2+ can skip such steps)";
    return Outcome::Stop;
  }
  if (policy_ == NonFinitePolicy::Stop) {
    stop_reason_ = what + "; the step changed nothing and nothing from it is saved (--on-nonfinite skip goes on)";
    return Outcome::Stop;
  }
  ++skipped_;
  if (++consecutive_ >= max_consecutive_) {
    stop_reason_ = what + "; " + std::to_string(consecutive_) + " steps in a row were skipped (--max-skips " +
                   std::to_string(max_consecutive_) + "), nothing from them is saved";
    return Outcome::Stop;
  }
  return Outcome::Skipped;
}

nlohmann::json NonFiniteGuard::record(int step, const NonFinite& finding, Outcome outcome) const {
  nlohmann::json record = {{"step", step},
                           {"nonfinite", finding.tensor},
                           {"action", outcome == Outcome::Skipped ? "skipped" : "stopped"},
                           {"skipped_steps", skipped_}};
  if (finding.layer >= 0) record["layer"] = finding.layer;
  return record;
}

}  // namespace qft
