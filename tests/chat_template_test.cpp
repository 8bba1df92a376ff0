// Chat templates against transformers' apply_chat_template on the real Jinja
// sources (tests/reference/make_chat_reference.py).
#include "text/chat_template.h"

#include <gtest/gtest.h>

#include <fstream>
#include <nlohmann/json.hpp>

#include "core/error.h"
#include "test_util.h"

namespace qft {
namespace {

const char* kind_name(ChatTemplate::Kind kind) {
  switch (kind) {
    case ChatTemplate::Kind::ChatML: return "chatml";
    case ChatTemplate::Kind::Llama2: return "llama2";
    case ChatTemplate::Kind::Llama3: return "llama3";
    case ChatTemplate::Kind::Alpaca: return "alpaca";
  }
  return "?";
}

std::vector<ChatMessage> messages_of(const nlohmann::json& json) {
  std::vector<ChatMessage> messages;
  for (const auto& message : json) messages.push_back({message.at("role"), message.at("content")});
  return messages;
}

TEST(ChatTemplate, DetectsAndRendersLikeTransformers) {
  std::ifstream file(test::reference_case("chat_templates.json"));
  const nlohmann::json templates = nlohmann::json::parse(file);
  int rendered = 0;
  for (const auto& record : templates) {
    const std::string name = record.at("name");
    const ChatTemplate chat = ChatTemplate::detect(record.at("source"));
    EXPECT_STREQ(kind_name(chat.kind()), record.at("kind").get<std::string>().c_str()) << name;
    for (const auto& c : record.at("cases")) {
      const auto messages = messages_of(c.at("messages"));
      const auto pieces = chat.render(messages, c.at("add_generation_prompt"), record.at("bos"), record.at("eos"));
      std::string text;
      std::string assistant_text;
      for (const ChatPiece& piece : pieces) {
        text += piece.text;
        if (piece.assistant) assistant_text += piece.text;
      }
      EXPECT_EQ(text, c.at("expected").get<std::string>()) << name;
      // Every assistant message's words are in the trained-on pieces, and nothing of the users'.
      for (const ChatMessage& message : messages) {
        const std::string stripped = message.content.substr(message.content.find_first_not_of(" \n"));
        const bool found = assistant_text.find(stripped.substr(0, 2)) != std::string::npos;
        if (message.role == "assistant") EXPECT_TRUE(found) << name << ": " << message.content;
      }
      ++rendered;
    }
  }
  EXPECT_EQ(rendered, 24);
}

TEST(ChatTemplate, DefaultSystemPromptComesFromTheSource) {
  std::ifstream file(test::reference_case("chat_templates.json"));
  const nlohmann::json templates = nlohmann::json::parse(file);
  for (const auto& record : templates) {
    if (record.at("name") == "smollm2") {
      EXPECT_EQ(ChatTemplate::detect(record.at("source")).default_system(),
                "You are a helpful AI assistant named SmolLM, trained by Hugging Face");
    }
  }
}

TEST(ChatTemplate, UnknownTemplatesNameTheSupportedOnes) {
  try {
    ChatTemplate::detect("{{ messages[0]['content'] }}<|weird|>");
    FAIL();
  } catch (const Error& error) {
    EXPECT_NE(std::string(error.what()).find("chatml, llama2, llama3, alpaca"), std::string::npos);
  }
  EXPECT_THROW(ChatTemplate::named("vicuna"), Error);
  EXPECT_EQ(ChatTemplate::named("llama3").kind(), ChatTemplate::Kind::Llama3);
  EXPECT_THROW(ChatTemplate::named("llama2").render({{"assistant", "x"}}, false, "<s>", "</s>"), Error);
}

}  // namespace
}  // namespace qft
