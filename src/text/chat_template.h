#pragma once
// Chat templates: the model's conversation format, recognised from its Jinja
// source (tokenizer_config.json's chat_template or GGUF's
// tokenizer.chat_template) or chosen by name, and rendered natively. Each
// rendered piece says whether it is the assistant's output, so training can
// mask the prompt.
#include <string>
#include <vector>

namespace qft {

struct ChatMessage {
  std::string role;  // system | user | assistant
  std::string content;
};

struct ChatPiece {
  std::string text;
  bool assistant;  // the model's own output (trained on), else prompt
};

class ChatTemplate {
 public:
  enum class Kind { ChatML, Llama2, Llama3, Alpaca };

  // Recognises one of the supported families; throws naming them otherwise.
  static ChatTemplate detect(const std::string& jinja_source);
  // chatml | llama2 | llama3 | alpaca; throws naming them otherwise.
  static ChatTemplate named(const std::string& name);
  static const char* supported_names() { return "chatml, llama2, llama3, alpaca"; }

  // bos and eos are the tokenizer's special-token strings, which Llama-2,
  // Llama-3 and Alpaca write as text.
  std::vector<ChatPiece> render(const std::vector<ChatMessage>& messages, bool add_generation_prompt,
                                const std::string& bos, const std::string& eos) const;
  std::string render_text(const std::vector<ChatMessage>& messages, bool add_generation_prompt,
                          const std::string& bos, const std::string& eos) const;

  Kind kind() const { return kind_; }
  const std::string& default_system() const { return default_system_; }
  // Text after which generation should stop, besides the eos token.
  std::string end_of_turn() const;

 private:
  ChatTemplate(Kind kind, std::string default_system) : kind_(kind), default_system_(std::move(default_system)) {}

  Kind kind_;
  std::string default_system_;  // inserted when the conversation has none ("" for none)
};

}  // namespace qft
