#include "common.h"

#include <omp.h>

#include "core/error.h"

namespace qft::cli {

OptionSpec threads_option() {
  return {"threads", "N", "worker threads for kernels and GEMMs (default: all cores)", ""};
}

void apply_threads(const Args& args) {
  if (!args.has("threads")) return;
  const int threads = args.get_int("threads");
  if (threads < 1) fail("--threads must be at least 1");
  omp_set_num_threads(threads);
}

std::vector<OptionSpec> model_options() {
  return {
      {"model", "PATH", "HF model directory (config.json + safetensors) or GGUF file", ""},
      {"config", "FILE", "HF config.json for a randomly initialised model (with --init random)", ""},
      {"init", "random", "initialisation for --config: random (N(0, 0.02²), norms 1)", ""},
      {"seed", "N", "seed of the random initialisation and of stochastic rounding", "0"},
  };
}

ModelSource model_source_from_args(const Args& args) {
  if (args.has("model") == args.has("config")) fail("give exactly one of --model DIR or --config FILE");
  if (args.has("model")) {
    if (args.has("init")) fail("--init applies to --config only");
    return ModelSource::open(args.get("model"));
  }
  if (!args.has("init") || args.get("init") != "random") fail("--config needs --init random");
  return ModelSource::random(args.get("config"), static_cast<uint64_t>(args.get_int64("seed")));
}

}  // namespace qft::cli
