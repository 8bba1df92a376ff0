// qft grad: loss and FP32 gradients of every parameter on a token file.
#include <cmath>
#include <cstdio>

#include <nlohmann/json.hpp>

#include "commands.h"
#include "common.h"
#include "core/error.h"
#include "io/safetensors.h"
#include "model/transformer.h"

namespace qft::cli {
namespace {

// Sequences are packed into batches of about this many tokens; the gradient
// is still that of the mean over the whole file.
constexpr size_t kTokensPerBatch = 8192;

std::vector<std::vector<TokenSequence>> group_sequences(const std::vector<TokenSequence>& sequences) {
  std::vector<std::vector<TokenSequence>> groups(1);
  size_t tokens = 0;
  for (const TokenSequence& sequence : sequences) {
    if (tokens > 0 && tokens + sequence.size() > kTokensPerBatch) {
      groups.emplace_back();
      tokens = 0;
    }
    groups.back().push_back(sequence);
    tokens += sequence.size();
  }
  return groups;
}

// A non-finite loss is an error: stdout still gets valid JSON (a null loss
// and the reason), stderr the one-line error, and no gradient file is written.
[[noreturn]] void report_nonfinite_loss(const ParamSet& weights, const ParamSet& grads, int64_t predicted) {
  std::string reason = "the loss is not finite";
  if (const auto weight = first_nonfinite(weights)) reason += ": the first non-finite weight is " + *weight;
  else if (const auto grad = first_nonfinite(grads)) reason += ": the first non-finite gradient is " + *grad;
  std::printf("%s\n", nlohmann::json{{"loss", nullptr}, {"tokens", predicted}, {"error", reason}}.dump().c_str());
  std::fflush(stdout);
  fail(reason);
}

}  // namespace

int run_grad(int argc, char** argv) {
  Args args("grad",
            "Computes the mean next-token cross-entropy over every predicted position of every line\n"
            "of --tokens (each line is its own sequence; positions start at 0) and writes the FP32\n"
            "gradient of every parameter, under its HF name, to --out. Prints one JSON line:\n"
            "{\"loss\": L, \"tokens\": number of predicted positions}. A loss that is not finite is an\n"
            "error (exit 1, no --out written; the JSON line has \"loss\": null and the first non-finite tensor).",
            {{"model", "PATH", "HF model directory (config.json + safetensors) or GGUF file", ""},
             {"tokens", "FILE", "one sequence per line, whitespace-separated token ids", ""},
             {"out", "FILE", "gradients as a .safetensors file (written atomically)", ""},
             {"checkpointing", "", "recompute each layer's activations during backward", ""},
             compute_option(), threads_option()});
  if (!args.parse(argc, argv)) return 0;
  args.require({"model", "tokens", "out"});
  apply_threads(args);
  apply_compute(args);

  LoadedModel model = load_model(args.get("model"));
  const auto sequences = read_token_file(args.get("tokens"), model.config.vocab_size);
  int64_t predicted = 0;
  for (const TokenSequence& sequence : sequences) predicted += std::max<int64_t>(sequence.size() - 1, 0);
  if (predicted == 0) fail(args.get("tokens"), ": no line has two tokens, so nothing is predicted");

  ParamSet grads(MemCategory::Gradients, model.weights->specs());
  Transformer transformer(model.config, *model.weights, &grads, {.checkpointing = args.flag("checkpointing")});
  double loss = 0.0;
  for (const auto& group : group_sequences(sequences)) {
    const Batch batch = make_batch(group);
    if (batch.predicted > 0) loss += transformer.forward_backward(batch, predicted);
  }

  if (!std::isfinite(loss)) report_nonfinite_loss(*model.weights, grads, predicted);
  std::vector<TensorView> views;
  for (size_t i = 0; i < grads.specs().size(); ++i) {
    views.push_back({grads.specs()[i].name, grads.specs()[i].shape, grads.data(i)});
  }
  write_safetensors(args.get("out"), views);
  std::printf("{\"loss\": %.9g, \"tokens\": %lld}\n", loss, static_cast<long long>(predicted));
  return 0;
}

}  // namespace qft::cli
