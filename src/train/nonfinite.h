#pragma once
// Non-finite numbers in training: a loss or a gradient that is NaN or Inf.
// A step that meets one applies no update (Training::step) and reports the
// first tensor it found; what the run does next is its policy
// (--on-nonfinite): stop, or skip the step and go on, up to a limit of
// consecutive skips.
#include <cstddef>
#include <functional>
#include <optional>
#include <string>

#include <nlohmann/json.hpp>

namespace qft {

struct NonFinite {
  std::string tensor;  // the first parameter whose gradient holds NaN/Inf, or "loss"
  int layer = -1;      // its decoder layer; -1 for the embedding, final norm, LM head and the loss
  size_t element = 0;  // the first bad element of the gradient
  // Fused QLion updates each parameter inside backward: when the bad
  // gradient is not the first of the step, the parameters before it (the
  // layers above) were already updated and the step cannot be undone.
  bool state_changed = false;

  // "the gradient of model.layers.3.mlp.down_proj.weight (layer 3, element 17)" or "the loss".
  std::string describe() const;
};

// The decoder layer a parameter belongs to (model.layers.N.…), or -1.
int layer_of(const std::string& name);

// Tests only: called with every completed FP32 weight gradient (or block of
// one) before it is checked — (step, parameter name, gradient, count, index
// of its first element in the parameter) — so a test can poison one.
void set_gradient_test_hook(std::function<void(int, const std::string&, float*, size_t, size_t)> hook);
// Runs the test hook, then scans `grad` (count), elements [first, first +
// count) of the parameter: what it found, or nullopt when finite.
std::optional<NonFinite> check_gradient(int step, const std::string& name, float* grad, size_t count,
                                        size_t first = 0);

enum class NonFinitePolicy { Stop, Skip };
NonFinitePolicy parse_nonfinite_policy(const std::string& name);  // "stop" | "skip"

// A run's policy over its steps. After each step, judge() says whether it
// was applied, skipped (policy skip, the step changed nothing) or must stop
// the run (policy stop; a step that changed state; too many skips in a row),
// with stop_reason() saying why in a sentence that names the step and tensor.
class NonFiniteGuard {
 public:
  enum class Outcome { Applied, Skipped, Stop };
  NonFiniteGuard(NonFinitePolicy policy, int max_consecutive_skips, int skipped_before = 0, int consecutive_before = 0);

  Outcome judge(int step, const std::optional<NonFinite>& finding);
  const std::string& stop_reason() const { return stop_reason_; }
  // The metrics record of a step that met a non-finite value.
  nlohmann::json record(int step, const NonFinite& finding, Outcome outcome) const;
  int skipped() const { return skipped_; }
  int consecutive() const { return consecutive_; }

 private:
  NonFinitePolicy policy_;
  int max_consecutive_;
  int skipped_, consecutive_;
  std::string stop_reason_;
};

}  // namespace qft
