// qft template: a conversation rendered with a chat template exactly as qft
// finetune renders it, and which pieces it trains on.
#include <cstdio>
#include <fstream>
#include <nlohmann/json.hpp>

#include "commands.h"
#include "common.h"
#include "core/error.h"
#include "text/chat_template.h"
#include "text/model_tokenizer.h"

namespace qft::cli {
namespace {

using nlohmann::ordered_json;

ordered_json read_json_file(const std::string& path) {
  std::ifstream file(path, std::ios::binary);
  if (!file) fail(path, ": cannot open");
  try {
    return ordered_json::parse(file);
  } catch (const ordered_json::exception& error) {
    fail(path, ": invalid JSON: ", error.what());
  }
}

// A list of {"role": "...", "content": "..."}.
std::vector<ChatMessage> read_messages(const std::string& path) {
  const ordered_json json = read_json_file(path);
  if (!json.is_array()) fail(path, ": expected a list of {\"role\", \"content\"} messages");
  std::vector<ChatMessage> messages;
  for (size_t i = 0; i < json.size(); ++i) {
    const ordered_json& message = json[i];
    if (!message.is_object() || !message.contains("role") || !message.at("role").is_string() ||
        !message.contains("content") || !message.at("content").is_string()) {
      fail(path, ": message ", i, " is not {\"role\": string, \"content\": string}");
    }
    messages.push_back({message.at("role"), message.at("content")});
  }
  return messages;
}

// {"bos_token": "<s>", "eos_token": {"content": "</s>"}, "pad_token": ...}, as tokenizer_config.json writes them.
ChatTokens read_special_tokens(const std::string& path) {
  const ordered_json json = read_json_file(path);
  if (!json.is_object()) fail(path, ": expected an object of special tokens (bos_token, eos_token, pad_token)");
  const auto token = [&](const char* key) -> std::string {
    if (!json.contains(key) || json.at(key).is_null()) return "";
    const ordered_json& value = json.at(key);
    if (value.is_string()) return value.get<std::string>();
    if (value.is_object() && value.contains("content") && value.at("content").is_string()) return value.at("content");
    fail(path, ": ", key, " must be a string or {\"content\": string}");
  };
  return {token("bos_token"), token("eos_token"), token("pad_token")};
}

}  // namespace

int run_template(int argc, char** argv) {
  Args args("template",
            "Prints a conversation (--messages: a JSON list of {\"role\", \"content\"}) rendered with the\n"
            "model's own chat template, or --chat-template's, exactly (no newline added). With --json it\n"
            "prints {\"text\": ..., \"pieces\": [{\"text\": ..., \"train\": true|false}, ...]}: the pieces and\n"
            "assistant mask qft finetune trains on (it also puts the tokenizer's BOS token first when\n"
            "the template does not write it). The special tokens come from the model's tokenizer, or\n"
            "from --special-tokens with --chat-template FILE.",
            {{"model", "PATH", "HF model directory or GGUF file (its template and special tokens)", ""},
             {"chat-template", "NAME|FILE", "chatml | llama2 | llama3 | alpaca | FILE.jinja (default: the model's own)", ""},
             {"messages", "FILE", "the conversation, a JSON list of {\"role\", \"content\"}", ""},
             {"special-tokens", "FILE", "JSON with bos_token, eos_token, pad_token (instead of --model's)", ""},
             {"generation-prompt", "", "end with the assistant's header, as for generation", ""},
             {"json", "", "print the text and its pieces as JSON", ""}});
  if (!args.parse(argc, argv)) return 0;
  args.require({"messages"});
  if (!args.has("model") && !(args.has("chat-template") && args.has("special-tokens"))) {
    fail("give --model, or --chat-template with --special-tokens");
  }
  std::unique_ptr<Tokenizer> tokenizer;
  if (args.has("model")) tokenizer = load_model_tokenizer(args.get("model"));
  const ChatTemplate chat = ChatTemplate::choose(args.has("chat-template") ? args.get("chat-template") : "",
                                                 tokenizer ? tokenizer->chat_template() : "");
  const ChatTokens tokens = args.has("special-tokens") ? read_special_tokens(args.get("special-tokens"))
                                                       : chat_tokens_of(*tokenizer);
  const std::vector<ChatMessage> messages = read_messages(args.get("messages"));
  std::vector<ChatPiece> pieces;
  try {
    pieces = chat.render(messages, args.flag("generation-prompt"), tokens);
  } catch (const Error& error) {
    fail(args.get("messages"), ": ", chat.origin(), " refuses the conversation: ", error.what());
  }
  std::string text;
  ordered_json listed = ordered_json::array();
  for (const ChatPiece& piece : pieces) {
    text += piece.text;
    listed.push_back({{"text", piece.text}, {"train", piece.assistant}});
  }
  if (args.flag("json")) {
    std::printf("%s\n", ordered_json{{"text", text}, {"pieces", listed}}.dump().c_str());
  } else {
    std::fwrite(text.data(), 1, text.size(), stdout);
  }
  return 0;
}

}  // namespace qft::cli
