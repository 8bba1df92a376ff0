#pragma once
// Chat templates: the model's conversation format, rendered from its own Jinja
// source (tokenizer_config.json's chat_template, chat_template.jinja, GGUF's
// tokenizer.chat_template) by src/text/jinja, exactly as transformers'
// apply_chat_template does, or from a built-in or a .jinja file. Rendered
// pieces say which text is the assistant's output (trained on), found from the
// template itself: its {% generation %} blocks, or else by rendering growing
// prefixes of the conversation and diffing.
#include <memory>
#include <string>
#include <vector>

namespace qft {

class Tokenizer;
namespace jinja {
class Template;
}

struct ChatMessage {
  std::string role;  // system | user | assistant (or any role the template knows)
  std::string content;
};

struct ChatPiece {
  std::string text;
  bool assistant;  // the model's own output (trained on), else prompt
};

// The special tokens a template may write, as text (empty: the tokenizer has none).
struct ChatTokens {
  std::string bos, eos, pad;
};
ChatTokens chat_tokens_of(const Tokenizer& tokenizer);

class ChatTemplate {
 public:
  // Compiles Jinja source; `origin` names it in errors. Throws on a syntax error.
  static ChatTemplate from_source(const std::string& jinja_source, const std::string& origin);
  // chatml | llama2 | llama3 | alpaca; throws naming them otherwise.
  static ChatTemplate named(const std::string& name);
  static const char* builtin_names() { return "chatml, llama2, llama3, alpaca"; }
  // --chat-template's value: a built-in name or a .jinja file; empty: the
  // model's own template (an error naming the choices when it has none).
  static ChatTemplate choose(const std::string& option, const std::string& model_template);

  // The conversation's pieces, in order. A template's raise_exception throws
  // jinja::RaisedError with its message; other failures qft::Error.
  std::vector<ChatPiece> render(const std::vector<ChatMessage>& messages, bool add_generation_prompt,
                                const ChatTokens& tokens) const;
  std::string render_text(const std::vector<ChatMessage>& messages, bool add_generation_prompt,
                          const ChatTokens& tokens) const;

  // The text that ends an assistant turn ("<|im_end|>", "<|eot_id|>", ...):
  // what the template writes right after the assistant's words, up to the
  // first whitespace; "" when it writes nothing or cannot render a turn.
  std::string end_of_turn(const ChatTokens& tokens) const;
  const std::string& origin() const;

 private:
  explicit ChatTemplate(std::shared_ptr<const jinja::Template> jinja) : jinja_(std::move(jinja)) {}
  std::string render_raw(const std::vector<ChatMessage>& messages, size_t count, bool add_generation_prompt,
                         const ChatTokens& tokens, std::vector<std::pair<size_t, size_t>>* generation) const;

  std::shared_ptr<const jinja::Template> jinja_;
};

// Whether the rendered text begins with the BOS token, so the tokenizer's own
// BOS must not be added in front.
bool writes_bos(const std::vector<ChatPiece>& pieces, const ChatTokens& tokens);

}  // namespace qft
