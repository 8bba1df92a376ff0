#include "optim/optimizer.h"

#include "core/error.h"
#include "optim/fp32_optimizers.h"

namespace qft {

OptimizerSettings default_optimizer_settings(const std::string& name) {
  OptimizerSettings settings;
  settings.name = name;
  if (name == "adamw" || name == "adamw8bit") settings.beta2 = 0.999f;
  return settings;
}

std::unique_ptr<Optimizer> make_optimizer(const OptimizerSettings& settings, const std::vector<ParamSpec>& specs,
                                          size_t numel) {
  if (settings.name == "adamw") return std::make_unique<AdamW>(settings, numel);
  if (settings.name == "adamw8bit") return std::make_unique<AdamW8bit>(settings, specs);
  if (settings.name == "lion") return std::make_unique<Lion>(settings, numel);
  fail("unknown optimizer '", settings.name, "' (expected adamw, adamw8bit or lion)");
}

}  // namespace qft
