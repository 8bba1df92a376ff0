#include "text/chat_template.h"

#include <filesystem>
#include <fstream>
#include <sstream>

#include "core/error.h"
#include "text/jinja.h"
#include "text/tokenizer.h"

namespace qft {
namespace {

// The built-ins, as Jinja: ChatML without a default system prompt, Meta's
// Llama-2-chat and Llama-3-Instruct templates, and the Stanford Alpaca prompt
// made multi-turn.
constexpr const char* kChatml =
    "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + "
    "'\\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}";
constexpr const char* kLlama2 =
    "{% if messages[0]['role'] == 'system' %}{% set loop_messages = messages[1:] %}{% set system_message = "
    "messages[0]['content'] %}{% else %}{% set loop_messages = messages %}{% set system_message = false %}{% endif %}"
    "{% for message in loop_messages %}{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}"
    "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}"
    "{% if loop.index0 == 0 and system_message != false %}{% set content = '<<SYS>>\\n' + system_message + "
    "'\\n<</SYS>>\\n\\n' + message['content'] %}{% else %}{% set content = message['content'] %}{% endif %}"
    "{% if message['role'] == 'user' %}{{ bos_token + '[INST] ' + content.strip() + ' [/INST]' }}"
    "{% elif message['role'] == 'assistant' %}{{ ' '  + content.strip() + ' ' + eos_token }}{% endif %}{% endfor %}";
constexpr const char* kLlama3 =
    "{% set loop_messages = messages %}{% for message in loop_messages %}{% set content = '<|start_header_id|>' + "
    "message['role'] + '<|end_header_id|>\\n\\n'+ message['content'] | trim + '<|eot_id|>' %}{% if loop.index0 == 0 %}"
    "{% set content = bos_token + content %}{% endif %}{{ content }}{% endfor %}{% if add_generation_prompt %}"
    "{{ '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}{% endif %}";
constexpr const char* kAlpaca =
    "{% if messages[0]['role'] == 'system' %}{{ messages[0]['content'] + '\\n\\n' }}{% set loop_messages = "
    "messages[1:] %}{% else %}{{ 'Below is an instruction that describes a task. Write a response that appropriately "
    "completes the request.\\n\\n' }}{% set loop_messages = messages %}{% endif %}{% for message in loop_messages %}"
    "{% if message['role'] == 'user' %}{{ '### Instruction:\\n' + message['content'] + '\\n\\n### Response:\\n' }}"
    "{% elif message['role'] == 'assistant' %}{{ message['content'] + eos_token + '\\n\\n' }}{% else %}"
    "{{ raise_exception('the alpaca template has no place for role ' + message['role']) }}{% endif %}{% endfor %}";

size_t common_prefix(const std::string& a, const std::string& b) {
  size_t n = 0;
  while (n < a.size() && n < b.size() && a[n] == b[n]) ++n;
  return n;
}

bool is_space(char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v'; }

size_t skip_space(const std::string& text, size_t pos) {
  while (pos < text.size() && is_space(text[pos])) ++pos;
  return pos;
}

size_t trim_space_back(const std::string& text, size_t begin, size_t end) {
  while (end > begin && is_space(text[end - 1])) --end;
  return end;
}

std::string strip(const std::string& text) {
  const size_t begin = skip_space(text, 0);
  return text.substr(begin, trim_space_back(text, begin, text.size()) - begin);
}

std::vector<ChatPiece> pieces_of(const std::string& text, const std::vector<std::pair<size_t, size_t>>& spans) {
  std::vector<ChatPiece> pieces;
  size_t at = 0;
  for (const auto& [begin, end] : spans) {
    if (begin > at) pieces.push_back({text.substr(at, begin - at), false});
    if (end > begin) pieces.push_back({text.substr(begin, end - begin), true});
    at = std::max(at, end);
  }
  if (at < text.size()) pieces.push_back({text.substr(at), false});
  return pieces;
}

}  // namespace

ChatTokens chat_tokens_of(const Tokenizer& tokenizer) {
  const auto text = [&](std::optional<int> id) { return id ? tokenizer.id_to_token(*id) : std::string(); };
  return {text(tokenizer.bos_id()), text(tokenizer.eos_id()), text(tokenizer.pad_id())};
}

ChatTemplate ChatTemplate::from_source(const std::string& jinja_source, const std::string& origin) {
  return ChatTemplate(std::make_shared<const jinja::Template>(jinja_source, origin));
}

ChatTemplate ChatTemplate::named(const std::string& name) {
  if (name == "chatml") return from_source(kChatml, "chatml");
  if (name == "llama2") return from_source(kLlama2, "llama2");
  if (name == "llama3") return from_source(kLlama3, "llama3");
  if (name == "alpaca") return from_source(kAlpaca, "alpaca");
  fail("unknown chat template '", name, "' (built-in: ", builtin_names(), "; or a .jinja file)");
}

ChatTemplate ChatTemplate::choose(const std::string& option, const std::string& model_template) {
  if (option.empty()) {
    if (model_template.empty()) {
      fail("the model has no chat template; choose one with --chat-template NAME|FILE.jinja (built-in: ",
           builtin_names(), ")");
    }
    return from_source(model_template, "the model's chat template");
  }
  if (option.size() > 6 && option.ends_with(".jinja")) {
    std::ifstream file(option, std::ios::binary);
    if (!file) fail(option, ": cannot read the chat template");
    std::stringstream text;
    text << file.rdbuf();
    return from_source(text.str(), option);
  }
  if (std::filesystem::exists(option)) fail(option, ": a chat template file must be named *.jinja");
  return named(option);
}

const std::string& ChatTemplate::origin() const { return jinja_->name(); }

std::string ChatTemplate::render_raw(const std::vector<ChatMessage>& messages, size_t count, bool add_generation_prompt,
                                     const ChatTokens& tokens, std::vector<std::pair<size_t, size_t>>* generation) const {
  jinja::List list;
  for (size_t i = 0; i < count; ++i) {
    list.emplace_back(jinja::Dict{{"role", jinja::Value(messages[i].role)}, {"content", jinja::Value(messages[i].content)}});
  }
  // As apply_chat_template: tools and documents are None, the special tokens set.
  jinja::Dict context{{"messages", jinja::Value(std::move(list))},
                      {"add_generation_prompt", jinja::Value(add_generation_prompt)},
                      {"tools", jinja::Value::none()},
                      {"documents", jinja::Value::none()}};
  if (!tokens.bos.empty()) context.emplace_back("bos_token", jinja::Value(tokens.bos));
  if (!tokens.eos.empty()) context.emplace_back("eos_token", jinja::Value(tokens.eos));
  if (!tokens.pad.empty()) context.emplace_back("pad_token", jinja::Value(tokens.pad));
  return jinja_->render(jinja::Value(std::move(context)), generation);
}

// Each assistant turn's text: from where the conversation up to it, rendered
// with the generation prompt, stops agreeing with the whole rendering (or from
// its words, for a template with no generation prompt), to the
// end of that turn rendered alone (its end-of-turn marker included, trailing
// whitespace left to the prompt). A template that renders a turn differently
// when more follows (Qwen3's reasoning, Phi-3's final EOS) is followed by
// finding the turn's words and the longest part of its ending that agrees.
std::vector<ChatPiece> ChatTemplate::render(const std::vector<ChatMessage>& messages, bool add_generation_prompt,
                                            const ChatTokens& tokens) const {
  std::vector<std::pair<size_t, size_t>> spans;
  const std::string text = render_raw(messages, messages.size(), add_generation_prompt, tokens, &spans);
  if (jinja_->has_generation_blocks()) return pieces_of(text, spans);
  spans.clear();
  for (size_t i = 0; i < messages.size(); ++i) {
    if (messages[i].role != "assistant") continue;
    const std::string prompt = render_raw(messages, i, true, tokens, nullptr);
    const std::string turn = render_raw(messages, i + 1, false, tokens, nullptr);
    size_t begin = common_prefix(prompt, text);
    // A template without a generation prompt (Llama-2, Phi-4's first one)
    // writes the assistant's header in the turn itself: the words begin later.
    if (prompt == render_raw(messages, i, false, tokens, nullptr)) {
      const size_t words = text.find(strip(messages[i].content), begin);
      if (words != std::string::npos) begin = words;
    }
    // Whitespace the template puts before the words (Llama-2's " ") is prompt.
    const size_t words = skip_space(text, begin);
    if (!messages[i].content.starts_with(text.substr(begin, words - begin))) begin = words;
    size_t end;
    if (text.compare(0, turn.size(), turn) == 0) {
      end = trim_space_back(text, begin, turn.size());
    } else {
      const std::string content = strip(messages[i].content);
      const size_t found = text.find(content, begin);
      const size_t in_turn = turn.find(content, std::min(common_prefix(prompt, turn), turn.size()));
      if (found == std::string::npos || in_turn == std::string::npos) {
        fail(origin(), ": cannot find assistant message ", i, " in the rendered conversation (the template rewrites it)");
      }
      const size_t after = found + content.size();
      const std::string ending = turn.substr(in_turn + content.size());
      size_t agreed = common_prefix(ending, text.substr(after));
      // Where the two endings part inside a marker ("<|end|>\n<|" of "<|endoftext|>"
      // and "<|user|>"), the marker that differs is not part of the turn.
      if (agreed < ending.size()) {
        while (agreed > 0 && !is_space(ending[agreed - 1]) && ending[agreed - 1] != '>') --agreed;
      }
      end = trim_space_back(text, after, after + agreed);
    }
    if (end < begin || (!spans.empty() && begin < spans.back().second)) {
      fail(origin(), ": cannot place assistant message ", i, " in the rendered conversation");
    }
    spans.emplace_back(begin, end);
  }
  return pieces_of(text, spans);
}

std::string ChatTemplate::render_text(const std::vector<ChatMessage>& messages, bool add_generation_prompt,
                                      const ChatTokens& tokens) const {
  return render_raw(messages, messages.size(), add_generation_prompt, tokens, nullptr);
}

std::string ChatTemplate::end_of_turn(const ChatTokens& tokens) const {
  static const std::string probe = "qft-end-of-turn-probe";
  const std::vector<ChatMessage> messages{{"user", "Hi"}, {"assistant", probe}};
  std::string text;
  try {
    text = render_text(messages, false, tokens);
  } catch (const Error&) {
    return "";
  }
  const size_t found = text.rfind(probe);
  if (found == std::string::npos) return "";
  const size_t begin = skip_space(text, found + probe.size());
  size_t end = begin;
  while (end < text.size() && !is_space(text[end])) ++end;
  return text.substr(begin, end - begin);
}

bool writes_bos(const std::vector<ChatPiece>& pieces, const ChatTokens& tokens) {
  return !tokens.bos.empty() && !pieces.empty() && pieces.front().text.starts_with(tokens.bos);
}

}  // namespace qft
