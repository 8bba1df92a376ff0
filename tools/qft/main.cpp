// qft: full-parameter fine-tuning of LLaMA-family models.
#include <cstdio>
#include <cstring>
#include <string>

#include "commands.h"
#include "common.h"
#include "core/error.h"
#include "dist/world.h"

namespace {

struct Command {
  const char* name;
  const char* summary;
  int (*run)(int, char**);
};

constexpr Command kCommands[] = {
    {"grad", "loss and FP32 gradients of a model on token sequences", qft::cli::run_grad},
    {"train", "train a model on token sequences (QFT's INT8 QLion, or FP32 AdamW / Lion)", qft::cli::run_train},
    {"memory", "the memory plan of a training configuration (the QFT paper's Table 1)", qft::cli::run_memory},
    {"tokenize", "token ids of text, or text of token ids, with a model's tokenizer", qft::cli::run_tokenize},
    {"generate", "generate text from a model (KV cache; greedy or top-p sampling)", qft::cli::run_generate},
    {"export", "write a model as an HF directory or a GGUF file", qft::cli::run_export},
    {"eval", "perplexity, or multiple-choice accuracy as lm-evaluation-harness scores it", qft::cli::run_eval},
    {"finetune", "instruction-tune a model (QFT by default) and export it", qft::cli::run_finetune},
    {"template", "a conversation rendered with a chat template, and what finetune trains on", qft::cli::run_template},
};

void print_usage(std::FILE* stream) {
  std::fputs("usage: qft COMMAND [options]   (qft COMMAND --help for its options)\n"
             "       qft --version             (version, commit, compiler, compute paths on this CPU)\n\ncommands:\n",
             stream);
  for (const Command& command : kCommands) std::fprintf(stream, "  %-9s %s\n", command.name, command.summary);
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2 || !std::strcmp(argv[1], "--help") || !std::strcmp(argv[1], "-h")) {
    print_usage(argc < 2 ? stderr : stdout);
    return argc < 2 ? 2 : 0;
  }
  if (!std::strcmp(argv[1], "--version")) return qft::cli::run_version();
  qft::cli::start_stop_signal_watcher();  // before MPI or OpenMP start a thread
  // Under mpirun every rank runs the command; rank 0 prints its results, the
  // others only their errors. An error on one rank ends the whole job: the
  // others may be waiting for it in a collective.
  const qft::dist::World& world = qft::dist::world();
  if (world.distributed() && !world.is_root() && !std::freopen("/dev/null", "w", stdout)) return 1;
  const std::string rank = world.distributed() ? " (rank " + std::to_string(world.rank()) + ")" : "";
  for (const Command& command : kCommands) {
    if (argv[1] != std::string(command.name)) continue;
    try {
      return command.run(argc - 2, argv + 2);
    } catch (const qft::Error& error) {
      std::fprintf(stderr, "qft %s%s: error: %s\n", command.name, rank.c_str(), error.what());
    } catch (const std::exception& error) {
      std::fprintf(stderr, "qft %s%s: internal error: %s\n", command.name, rank.c_str(), error.what());
    }
    if (world.distributed()) {
      std::fflush(nullptr);
      world.abort(1);
    }
    return 1;
  }
  std::fprintf(stderr, "qft: unknown command '%s'\n", argv[1]);
  print_usage(stderr);
  return 2;
}
