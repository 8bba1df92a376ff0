// qft eval: perplexity on text or instruction data, or multiple-choice accuracy.
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <nlohmann/json.hpp>
#include <optional>

#include "commands.h"
#include "common.h"
#include "core/error.h"
#include "dist/world.h"
#include "eval/choice.h"
#include "eval/perplexity.h"
#include "io/atomic_file.h"
#include "model/transformer.h"
#include "text/model_tokenizer.h"

namespace qft::cli {
namespace {

using nlohmann::json;

int positive(const Args& args, const std::string& name, int minimum) {
  const int value = args.get_int(name);
  if (value < minimum) fail("--", name, " must be at least ", minimum, ", got ", value);
  return value;
}

// A line on stderr per batch when someone is watching; nothing in logs.
std::function<void(size_t, size_t)> progress_printer(const char* unit) {
  if (!isatty(STDERR_FILENO)) return {};
  return [unit](size_t done, size_t total) {
    std::fprintf(stderr, "\r%zu / %zu %s", done, total, unit);
    if (done == total) std::fprintf(stderr, "\n");
  };
}

// The chat template for conversations: the one given, else the model's own
// (plain text needs none).
std::optional<ChatTemplate> chat_template(const Args& args, const Tokenizer& tokenizer) {
  if (!args.has("chat-template") && tokenizer.chat_template().empty()) return std::nullopt;
  return ChatTemplate::choose(args.has("chat-template") ? args.get("chat-template") : "", tokenizer.chat_template());
}

// The records of --task choice, and the solved examples' (--fewshot-data).
struct ChoiceData {
  std::vector<ChoiceRecord> records, fewshot;
};

// One JSON line per question: its line in --data, label, predictions and
// log-likelihoods, to compare with another harness question by question.
void write_details(const std::string& path, const ChoiceResult& result) {
  std::string text;
  for (const QuestionResult& question : result.questions) {
    text += json{{"line", question.line}, {"label", question.label}, {"predicted", question.predicted},
                 {"predicted_norm", question.predicted_norm}, {"loglikelihoods", question.loglikelihoods}}.dump() +
            "\n";
  }
  write_file_atomically(path, text);
}

// Tokens run through the model (rows of packed batches, contexts of
// next-token scoring), for the throughput figure.
struct Throughput {
  int64_t rows = 0;
  std::chrono::steady_clock::time_point start = std::chrono::steady_clock::now();
  double seconds() const { return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count(); }
};

void check_task_options(const Args& args, const std::string& task) {
  if (task != "perplexity" && task != "choice") fail("--task must be perplexity or choice, got '", task, "'");
  if (task == "perplexity") {
    for (const char* name : {"shots", "fewshot-data", "limit-per-subject", "add-bos", "details", "one-forward-per-choice"}) {
      if (args.has(name)) fail("--", name, " applies to --task choice only");
    }
  } else if (args.has("chat-template")) {
    fail("--chat-template applies to --task perplexity only");
  }
}

json evaluate_perplexity_task(const Args& args, const std::vector<ScoredSequence>& sequences, const TokenScorer& scorer,
                              int seq_len, size_t batch_tokens) {
  const int window = seq_len ? seq_len : 1024;
  const PerplexityResult result = evaluate_perplexity(sequences, scorer, window, batch_tokens, progress_printer("windows"));
  if (!args.flag("json")) {
    std::printf("loss %.6f nats/token, perplexity %.4f over %lld tokens (%lld sequences, %lld windows of <= %d)\n",
                result.mean_loss, result.perplexity, static_cast<long long>(result.tokens),
                static_cast<long long>(result.sequences), static_cast<long long>(result.windows), window);
  }
  return {{"loss", result.mean_loss}, {"perplexity", result.perplexity}, {"tokens", result.tokens},
          {"sequences", result.sequences}, {"windows", result.windows}, {"seq_len", window}};
}

json score_json(const ChoiceScore& score) {
  return json{{"count", score.count}, {"acc", score.acc()}, {"acc_norm", score.acc_norm()},
              {"acc_stderr", score.acc_stderr()}, {"acc_norm_stderr", score.acc_norm_stderr()}};
}

void print_choice(const ChoiceResult& result, int shots) {
  for (const auto& [subject, score] : result.subjects) {
    std::printf("%-40s acc %.4f  acc_norm %.4f  (%lld)\n", subject.c_str(), score.acc(), score.acc_norm(),
                static_cast<long long>(score.count));
  }
  if (!result.subjects.empty()) {
    std::printf("macro average over %zu subjects: acc %.4f  acc_norm %.4f\n", result.subjects.size(),
                result.macro_acc, result.macro_acc_norm);
  }
  std::printf("acc %.4f ± %.4f, acc_norm %.4f ± %.4f over %lld questions, %d-shot\n", result.overall.acc(),
              result.overall.acc_stderr(), result.overall.acc_norm(), result.overall.acc_norm_stderr(),
              static_cast<long long>(result.overall.count), shots);
}

ChoiceOptions choice_options(const Args& args, int limit, int seq_len, size_t batch_tokens, const ModelConfig& config) {
  ChoiceOptions options;
  options.shots = positive(args, "shots", 0);
  options.seed = static_cast<uint64_t>(args.get_int64("seed"));
  options.limit = limit;
  options.limit_per_subject = args.has("limit-per-subject") ? positive(args, "limit-per-subject", 1) : 0;
  options.add_bos = args.flag("add-bos");
  options.max_length = seq_len ? seq_len : config.max_position_embeddings;
  options.batch_tokens = batch_tokens;
  return options;
}

// Multiple choice, the single-token choices of a question scored after one forward of its context.
json evaluate_choice_task(const Args& args, const ChoiceData& data, const Tokenizer& tokenizer, LoadedModel& model,
                          const TokenScorer& scorer, const ChoiceOptions& options, Throughput& throughput) {
  GeneratorScorer generator(model.config, *model.weights);
  const NextTokenScorer next_token = [&](const std::vector<int>& context, const std::vector<int>& candidates) {
    throughput.rows += static_cast<int64_t>(context.size());
    return generator(context, candidates);
  };
  const ChoiceResult result =
      evaluate_choice(data.records, data.fewshot, tokenizer, scorer, options, progress_printer("questions"),
                      args.flag("one-forward-per-choice") ? NextTokenScorer{} : next_token);
  json out = score_json(result.overall);
  out["shots"] = options.shots;
  if (!result.subjects.empty()) {
    json subjects = json::object();
    for (const auto& [subject, score] : result.subjects) subjects[subject] = score_json(score);
    out.update({{"subjects", subjects}, {"macro_acc", result.macro_acc}, {"macro_acc_norm", result.macro_acc_norm}});
  }
  if (args.has("details") && dist::world().is_root()) write_details(args.get("details"), result);
  if (!args.flag("json")) print_choice(result, options.shots);
  return out;
}

const char* const kEvalSummary =
            "Evaluates a model (an HF directory or a GGUF file).\n"
            "  --task perplexity: the mean next-token loss (nats/token) and its exp over --data:\n"
            "    plain text (.txt, or JSON/JSONL {\"text\"} records), where every token after the\n"
            "    first counts, or instruction data (Alpaca, ShareGPT, messages) rendered with the\n"
            "    chat template, where only the assistant's tokens count. Texts longer than --seq-len\n"
            "    are cut into windows of --seq-len tokens overlapping by one.\n"
            "  --task choice: multiple-choice accuracy on JSONL records {\"context\", \"choices\",\n"
            "    \"label\"[, \"subject\"]} as lm-evaluation-harness scores them: acc takes the choice\n"
            "    with the highest summed log-likelihood, acc_norm the highest per byte of the choice.\n"
            "    --shots K prepends K solved examples: the first K of the same subject in\n"
            "    --fewshot-data, else K other records of --data drawn with --seed. Records with a\n"
            "    subject (MMLU) are also reported per subject with macro averages. A question whose\n"
            "    choices are each one token after the context (MMLU's A-D) runs one forward of the\n"
            "    context for all its choices.\n"
            "Prints a summary, or with --json one JSON object.";

std::vector<OptionSpec> eval_options() {
  return {{"model", "PATH", "HF model directory or GGUF file", ""},
             {"data", "FILE", "evaluation data (see above)", ""},
             {"task", "NAME", "perplexity or choice", ""},
             {"shots", "K", "choice: solved examples before each question", "0"},
             {"fewshot-data", "FILE", "choice: where the examples come from (MMLU: mmlu_dev.jsonl)", ""},
             {"seed", "S", "choice: seed of the examples drawn from --data itself", "1234"},
             {"limit", "N", "evaluate only the first N records of --data", ""},
             {"limit-per-subject", "N", "choice: only the first N records of each subject", ""},
             {"seq-len", "T", "perplexity: window length (default 1024); choice: longest sequence, "
                              "contexts cut from the left (default: the model's context length)", ""},
             {"add-bos", "", "choice: begin every sequence with the BOS token (lm-eval's add_bos_token)", ""},
             {"chat-template", "NAME|FILE", "perplexity on conversations: chatml, llama2, llama3, alpaca or a .jinja file "
                                       "(default: the model's)", ""},
             {"batch-tokens", "N", "tokens packed into one forward pass", "4096"},
             {"one-forward-per-choice", "", "choice: no shared forward for single-token choices (for comparison)", ""},
             {"details", "FILE", "choice: write each question's log-likelihoods and predictions (JSONL)", ""},
             {"json", "", "print one JSON object", ""},
             compute_option(), threads_option()};
}

}  // namespace

int run_eval(int argc, char** argv) {
  Args args("eval", kEvalSummary, eval_options());
  if (!args.parse(argc, argv)) return 0;
  args.require({"model", "data", "task"});
  apply_threads(args);
  apply_compute(args);
  const std::string task = args.get("task");
  check_task_options(args, task);
  const int limit = args.has("limit") ? positive(args, "limit", 1) : 0;
  const size_t batch_tokens = static_cast<size_t>(positive(args, "batch-tokens", 2));

  // The data is read and checked before the model is loaded, so a bad file fails at once.
  const int seq_len = args.has("seq-len") ? positive(args, "seq-len", 2) : 0;
  ChoiceData choices;
  if (task == "choice") {
    choices.records = read_choice_data(args.get("data"));
    if (args.has("fewshot-data")) choices.fewshot = read_choice_data(args.get("fewshot-data"));
  }
  const std::string path = args.get("model");
  const auto tokenizer = load_model_tokenizer(path);
  std::vector<ScoredSequence> sequences;
  if (task == "perplexity") {
    const std::optional<ChatTemplate> chat = chat_template(args, *tokenizer);
    sequences = read_perplexity_data(args.get("data"), *tokenizer, chat ? &*chat : nullptr, limit);
  }

  LoadedModel model = load_model(path);
  if (tokenizer->vocab_size() > model.config.vocab_size) {
    fail("the tokenizer has ", tokenizer->vocab_size(), " tokens but the model only ", model.config.vocab_size);
  }
  Transformer transformer(model.config, *model.weights, nullptr);
  Throughput throughput;
  const TokenScorer scorer = [&](const Batch& batch) {
    throughput.rows += batch.size();
    return transformer.token_losses(batch);
  };
  json out = {{"task", task}};
  out.update(task == "perplexity"
                 ? evaluate_perplexity_task(args, sequences, scorer, seq_len, batch_tokens)
                 : evaluate_choice_task(args, choices, *tokenizer, model, scorer,
                                        choice_options(args, limit, seq_len, batch_tokens, model.config), throughput));
  const double elapsed = throughput.seconds();
  out.update({{"seconds", elapsed}, {"tokens_per_second", throughput.rows / elapsed}});
  if (args.flag("json")) {
    std::printf("%s\n", out.dump().c_str());
  } else {
    std::printf("%.1f s, %.0f tokens/s\n", elapsed, throughput.rows / elapsed);
  }
  return 0;
}

}  // namespace qft::cli
