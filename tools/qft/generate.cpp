// qft generate: text from a model, streamed as it is produced.
#include <cstdio>
#include <optional>
#include <random>

#include "commands.h"
#include "common.h"
#include "core/error.h"
#include "model/generator.h"
#include "model/weights.h"
#include "text/chat_template.h"
#include "text/model_tokenizer.h"

namespace qft::cli {
namespace {

// Prints the part of the decoded text not printed yet, holding back a tail
// that may be an incomplete UTF-8 character (decoded as U+FFFD).
class TextStream {
 public:
  explicit TextStream(const Tokenizer& tokenizer) : tokenizer_(tokenizer) {}
  void push(int id, bool final) {
    ids_.push_back(id);
    const std::string text = tokenizer_.decode(ids_, true);
    size_t end = text.size();
    static const std::string replacement = "\xef\xbf\xbd";
    if (!final && end >= replacement.size() && text.compare(end - replacement.size(), replacement.size(), replacement) == 0) {
      end -= replacement.size();
    }
    if (end > printed_ && text.compare(0, printed_, printed_text_) == 0) {
      std::fwrite(text.data() + printed_, 1, end - printed_, stdout);
      std::fflush(stdout);
      printed_text_ = text.substr(0, end);
      printed_ = end;
    }
  }

 private:
  const Tokenizer& tokenizer_;
  std::vector<int> ids_;
  std::string printed_text_;
  size_t printed_ = 0;
};

// The prompt's tokens: wrapped in the chat template with --chat (and the
// token that ends the assistant's turn), else as they are with BOS.
struct Prompt {
  std::vector<int> tokens;
  std::optional<int> end_of_turn;
};

Prompt encode_prompt(const Args& args, const Tokenizer& tokenizer) {
  Prompt prompt;
  if (args.flag("chat") || args.has("chat-template")) {
    const ChatTemplate chat = ChatTemplate::choose(args.has("chat-template") ? args.get("chat-template") : "", tokenizer.chat_template());
    const ChatTokens tokens = chat_tokens_of(tokenizer);
    std::vector<ChatMessage> messages;
    if (args.has("system")) messages.push_back({"system", args.get("system")});
    messages.push_back({"user", args.get("prompt")});
    prompt.tokens = tokenizer.encode(chat.render_text(messages, true, tokens), false);
    if (const std::string marker = chat.end_of_turn(tokens); !marker.empty()) prompt.end_of_turn = tokenizer.token_to_id(marker);
  } else {
    prompt.tokens = tokenizer.encode(args.get("prompt"), true);
  }
  if (prompt.tokens.empty()) fail("the prompt encodes to no tokens");
  return prompt;
}

}  // namespace

int run_generate(int argc, char** argv) {
  Args args("generate",
            "Continues --prompt with the model at --model (an HF directory or a GGUF file), streaming the\n"
            "text to stdout. --chat wraps the prompt in the model's chat template. Greedy at temperature 0.",
            {{"model", "PATH", "HF model directory or GGUF file", ""},
             {"prompt", "TEXT", "the prompt (the user's message with --chat)", ""},
             {"chat", "", "apply the chat template and stop at the end of the assistant's turn", ""},
             {"chat-template", "NAME|FILE", "instead of the model's template: chatml | llama2 | llama3 | alpaca | FILE.jinja", ""},
             {"system", "TEXT", "a system message (with --chat)", ""},
             {"max-new-tokens", "N", "tokens to generate at most", "128"},
             {"temperature", "T", "sampling temperature; 0 is greedy", "0"},
             {"top-p", "P", "nucleus sampling mass", "1"},
             {"seed", "S", "random seed for sampling", "0"},
             compute_option(Products::OneTokenAtATime), threads_option()});
  if (!args.parse(argc, argv)) return 0;
  args.require({"model", "prompt"});
  apply_threads(args);
  apply_compute(args, Products::OneTokenAtATime);
  const int max_new_tokens = args.get_int("max-new-tokens");
  const SamplingSettings sampling{args.get_float("temperature"), args.get_float("top-p")};
  if (max_new_tokens < 1) fail("--max-new-tokens must be at least 1");
  if (sampling.temperature < 0 || !(sampling.top_p > 0 && sampling.top_p <= 1)) {
    fail("--temperature must be >= 0 and --top-p in (0, 1]");
  }

  const std::string path = args.get("model");
  const auto tokenizer = load_model_tokenizer(path);
  const Prompt prompt = encode_prompt(args, *tokenizer);

  const ModelSource source = ModelSource::open(path);
  if (tokenizer->vocab_size() > source.config().vocab_size) {
    fail("the tokenizer has ", tokenizer->vocab_size(), " tokens but the model only ", source.config().vocab_size);
  }
  const auto weights = load_fp32_weights(source);
  Fp32ParameterStore store(source.config(), *weights, nullptr);
  Generator generator(source.config(), store, static_cast<int>(prompt.tokens.size()) + max_new_tokens);
  std::mt19937_64 random(static_cast<uint64_t>(args.get_int64("seed")));
  TextStream stream(*tokenizer);
  const float* logits = generator.append(prompt.tokens);
  for (int produced = 0; produced < max_new_tokens; ++produced) {
    const int token = sample_token(logits, source.config().vocab_size, sampling, random);
    if (token == tokenizer->eos_id() || token == prompt.end_of_turn) break;
    stream.push(token, produced + 1 == max_new_tokens);
    if (produced + 1 < max_new_tokens) logits = generator.append({token});
  }
  std::printf("\n");
  return 0;
}

}  // namespace qft::cli
