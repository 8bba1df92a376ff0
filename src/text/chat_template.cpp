#include "text/chat_template.h"

#include <regex>

#include "core/error.h"

namespace qft {
namespace {

constexpr const char* kAlpacaPreamble =
    "Below is an instruction that describes a task. Write a response that appropriately completes the request.";

// Jinja's `trim` / Python's str.strip(): surrounding whitespace removed.
std::string strip(const std::string& text) {
  const char* space = " \t\n\r\f\v";
  const size_t begin = text.find_first_not_of(space);
  if (begin == std::string::npos) return "";
  return text.substr(begin, text.find_last_not_of(space) - begin + 1);
}

// The default system prompt a ChatML template inserts when the conversation
// has none, read from the literal in its Jinja source ("" when it has none).
std::string chatml_default_system(const std::string& source) {
  static const std::regex literal(R"(<\|im_start\|>system\\n((?:[^<'\\]|\\.)*)<\|im_end\|>)");
  std::smatch match;
  if (source.find("messages[0]['role'] != 'system'") == std::string::npos || !std::regex_search(source, match, literal)) {
    return "";
  }
  std::string text;
  const std::string escaped = match[1];
  for (size_t i = 0; i < escaped.size(); ++i) {
    if (escaped[i] == '\\' && i + 1 < escaped.size()) {
      const char next = escaped[++i];
      text += next == 'n' ? '\n' : next == 't' ? '\t' : next;
    } else {
      text += escaped[i];
    }
  }
  return text;
}

void require_alternation(const std::vector<ChatMessage>& messages, size_t first) {
  for (size_t i = first; i < messages.size(); ++i) {
    const char* expected = (i - first) % 2 == 0 ? "user" : "assistant";
    if (messages[i].role != expected) {
      fail("chat message ", i, " has role '", messages[i].role, "' where '", expected,
           "' was expected (after an optional system message, roles alternate user/assistant)");
    }
  }
}

}  // namespace

ChatTemplate ChatTemplate::detect(const std::string& source) {
  if (source.find("<|im_start|>") != std::string::npos) return {Kind::ChatML, chatml_default_system(source)};
  if (source.find("<|start_header_id|>") != std::string::npos) return {Kind::Llama3, ""};
  if (source.find("[INST]") != std::string::npos) return {Kind::Llama2, ""};
  if (source.find("### Instruction") != std::string::npos) return {Kind::Alpaca, kAlpacaPreamble};
  fail("unsupported chat template (supported: ", supported_names(), "); choose one with --chat-template NAME");
}

ChatTemplate ChatTemplate::named(const std::string& name) {
  if (name == "chatml") return {Kind::ChatML, ""};
  if (name == "llama2") return {Kind::Llama2, ""};
  if (name == "llama3") return {Kind::Llama3, ""};
  if (name == "alpaca") return {Kind::Alpaca, kAlpacaPreamble};
  fail("unknown chat template '", name, "' (supported: ", supported_names(), ")");
}

std::string ChatTemplate::end_of_turn() const {
  switch (kind_) {
    case Kind::ChatML: return "<|im_end|>";
    case Kind::Llama3: return "<|eot_id|>";
    case Kind::Llama2:
    case Kind::Alpaca: return "";
  }
  return "";
}

std::vector<ChatPiece> ChatTemplate::render(const std::vector<ChatMessage>& messages, bool add_generation_prompt,
                                            const std::string& bos, const std::string& eos) const {
  std::vector<ChatPiece> pieces;
  const auto prompt = [&](std::string text) {
    if (!pieces.empty() && !pieces.back().assistant) pieces.back().text += text;
    else pieces.push_back({std::move(text), false});
  };
  const auto output = [&](std::string text) { pieces.push_back({std::move(text), true}); };
  const bool has_system = !messages.empty() && messages[0].role == "system";
  switch (kind_) {
    case Kind::ChatML:
      // <|im_start|>role\ncontent<|im_end|>\n per message; the assistant's
      // content and its <|im_end|> are its output.
      if (!has_system && !default_system_.empty()) prompt("<|im_start|>system\n" + default_system_ + "<|im_end|>\n");
      for (const ChatMessage& message : messages) {
        prompt("<|im_start|>" + message.role + "\n");
        if (message.role == "assistant") {
          output(message.content + "<|im_end|>");
          prompt("\n");
        } else {
          prompt(message.content + "<|im_end|>\n");
        }
      }
      if (add_generation_prompt) prompt("<|im_start|>assistant\n");
      break;
    case Kind::Llama3:
      for (size_t i = 0; i < messages.size(); ++i) {
        const std::string header = (i == 0 ? bos : "") + "<|start_header_id|>" + messages[i].role + "<|end_header_id|>\n\n";
        if (messages[i].role == "assistant") {
          prompt(header);
          output(strip(messages[i].content) + "<|eot_id|>");
        } else {
          prompt(header + strip(messages[i].content) + "<|eot_id|>");
        }
      }
      if (add_generation_prompt) prompt("<|start_header_id|>assistant<|end_header_id|>\n\n");
      break;
    case Kind::Llama2: {
      // Meta's template: the system prompt folds into the first user turn.
      require_alternation(messages, has_system ? 1 : 0);
      for (size_t i = has_system ? 1 : 0; i < messages.size(); ++i) {
        std::string content = messages[i].content;
        if (i == (has_system ? 1u : 0u) && has_system) content = "<<SYS>>\n" + messages[0].content + "\n<</SYS>>\n\n" + content;
        if (messages[i].role == "user") {
          prompt(bos + "[INST] " + strip(content) + " [/INST]");
        } else {
          prompt(" ");
          output(strip(content) + " " + eos);
        }
      }
      break;
    }
    case Kind::Alpaca:
      prompt((has_system ? messages[0].content : default_system_) + "\n\n");
      for (size_t i = has_system ? 1 : 0; i < messages.size(); ++i) {
        if (messages[i].role == "user") {
          prompt("### Instruction:\n" + messages[i].content + "\n\n### Response:\n");
        } else if (messages[i].role == "assistant") {
          output(messages[i].content + eos);
          prompt("\n\n");
        } else {
          fail("chat message ", i, ": the alpaca template has no place for role '", messages[i].role, "'");
        }
      }
      break;
  }
  return pieces;
}

std::string ChatTemplate::render_text(const std::vector<ChatMessage>& messages, bool add_generation_prompt,
                                      const std::string& bos, const std::string& eos) const {
  std::string text;
  for (const ChatPiece& piece : render(messages, add_generation_prompt, bos, eos)) text += piece.text;
  return text;
}

}  // namespace qft
