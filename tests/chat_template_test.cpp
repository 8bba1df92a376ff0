// Chat templates and the Jinja engine against transformers' apply_chat_template
// and jinja2 (tests/reference/make_chat_reference.py): the real templates of
// tests/data/chat_templates on fixed conversations, byte for byte; Jinja
// features one by one; the assistant mask per family, checked by hand.
#include "text/chat_template.h"

#include <gtest/gtest.h>

#include <fstream>
#include <map>
#include <nlohmann/json.hpp>

#include "core/error.h"
#include "text/jinja.h"
#include "test_util.h"

namespace qft {
namespace {

using nlohmann::ordered_json;

ordered_json reference(const char* file) {
  std::ifstream in(test::reference_case(file));
  return ordered_json::parse(in);
}

std::vector<ChatMessage> messages_of(const ordered_json& json) {
  std::vector<ChatMessage> messages;
  for (const auto& message : json) messages.push_back({message.at("role"), message.at("content")});
  return messages;
}

std::string read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

std::string template_path(const std::string& name) {
  return std::string(QFT_SOURCE_DIR) + "/tests/data/chat_templates/" + name + ".jinja";
}

// qft's built-ins, written as Jinja, render as transformers renders them.
TEST(ChatTemplate, BuiltInsRenderLikeTransformers) {
  int rendered = 0;
  for (const auto& record : reference("chat_templates.json")) {
    const ChatTemplate chat = ChatTemplate::named(record.at("kind"));
    const ChatTokens tokens{record.at("bos"), record.at("eos"), ""};
    for (const auto& c : record.at("cases")) {
      const std::string name = record.at("name");
      if (name == "smollm2" || name == "qwen2") continue;  // ChatML with a default system prompt: the real templates below
      EXPECT_EQ(chat.render_text(messages_of(c.at("messages")), c.at("add_generation_prompt"), tokens),
                c.at("expected").get<std::string>())
          << name;
      ++rendered;
    }
  }
  EXPECT_EQ(rendered, 16);
}

// Every real template × conversation × generation prompt, byte for byte, in
// transformers' context (special tokens, tools=None, documents=None); a
// template's raise_exception gives transformers' message.
TEST(ChatTemplate, RealTemplatesRenderByteForByteLikeTransformers) {
  int rendered = 0, raised = 0;
  for (const auto& record : reference("chat_template_renders.json")) {
    const std::string name = record.at("name");
    const jinja::Template compiled(read_file(template_path(name)), name);
    EXPECT_EQ(read_file(template_path(name)), record.at("source").get<std::string>()) << name;
    for (const auto& c : record.at("cases")) {
      ordered_json context = record.at("special_tokens");
      for (const auto& [key, value] : record.at("extra_kwargs").items()) context[key] = value;
      context["messages"] = c.at("messages");
      context["add_generation_prompt"] = c.at("add_generation_prompt");
      context["tools"] = nullptr;
      context["documents"] = nullptr;
      const std::string where = name + " / " + c.at("conversation").get<std::string>() +
                                (c.at("add_generation_prompt").get<bool>() ? " / generation prompt" : "");
      if (c.contains("error")) {
        try {
          compiled.render(jinja::Value::from_json(context));
          ADD_FAILURE() << where << ": rendered where transformers raised " << c.at("error");
        } catch (const jinja::RaisedError& error) {
          EXPECT_EQ(error.what(), c.at("error").get<std::string>()) << where;
        }
        ++raised;
        continue;
      }
      EXPECT_EQ(compiled.render(jinja::Value::from_json(context)), c.at("expected").get<std::string>()) << where;
      ++rendered;
    }
  }
  EXPECT_EQ(rendered + raised, 18 * 12);
  EXPECT_EQ(raised, 8);  // Gemma-2 refuses a system turn; Mistral v0.1 a system role
}

// The engine's semantics, feature by feature, against jinja2 in transformers' environment.
TEST(Jinja, SnippetsRenderLikeJinja2) {
  int checked = 0;
  for (const auto& record : reference("jinja_snippets.json")) {
    const std::string source = record.at("template");
    const jinja::Template compiled(source, "snippet");
    EXPECT_EQ(compiled.render(jinja::Value::from_json(record.at("context"))), record.at("expected").get<std::string>())
        << source;
    ++checked;
  }
  EXPECT_EQ(checked, 31);
}

// The trained text of each assistant turn, per family, checked by hand against
// the template: the words and the end-of-turn marker, nothing of the prompt.
TEST(ChatTemplate, AssistantMaskFromEveryTemplate) {
  const std::vector<ChatMessage> conversation{
      {"user", "Name a prime."}, {"assistant", "7"}, {"user", "Another?"}, {"assistant", "Eleven, 11."}};
  const auto turns = [](const std::string& end) {
    return std::vector<std::string>{"7" + end, "Eleven, 11." + end};
  };
  const std::map<std::string, std::vector<std::string>> expected{
      {"gemma-2-it", turns("<end_of_turn>")},
      {"gemma-3-it", turns("<end_of_turn>")},
      // Meta's Llama-2: " " + words + " " + EOS; the leading space is the template's.
      {"llama-2-chat", turns(" </s>")},
      {"llama-3-instruct", turns("<|eot_id|>")},
      {"llama-3.1-instruct", turns("<|eot_id|>")},
      {"llama-3.2-instruct", turns("<|eot_id|>")},
      {"llama-3.3-instruct", turns("<|eot_id|>")},
      // Mistral v0.1 writes words + EOS + " ", v0.2 " " + words + EOS.
      {"mistral-7b-instruct-v0.1", turns("</s>")},
      {"mistral-7b-instruct-v0.2", turns("</s>")},
      // Phi-3 ends a conversation without a generation prompt with EOS after the last <|end|>\n.
      {"phi-3-mini-4k-instruct", {"7<|end|>", "Eleven, 11.<|end|>\n<|endoftext|>"}},
      {"phi-3.5-mini-instruct", {"7<|end|>", "Eleven, 11.<|end|>\n<|endoftext|>"}},
      // The first Phi-4 template has no generation prompt: its header is prompt too.
      {"phi-4-original", turns("<|im_end|>")},
      {"phi-4", turns("<|im_end|>")},
      {"qwen2.5-instruct", turns("<|im_end|>")},
      // Qwen3 writes an empty reasoning block into the final turn (after the last query) only.
      {"qwen3-0.6b-2025-05", {"7<|im_end|>", "<think>\n\n</think>\n\nEleven, 11.<|im_end|>"}},
      {"smollm2-instruct", turns("<|im_end|>")},
      {"tinyllama-chat", turns("</s>")},
      {"zephyr-7b-beta", turns("</s>")},
  };
  for (const auto& record : reference("chat_template_renders.json")) {
    const std::string name = record.at("name");
    const auto& special = record.at("special_tokens");
    const ChatTokens tokens{special.value("bos_token", ""), special.value("eos_token", ""), special.value("pad_token", "")};
    const ChatTemplate chat = ChatTemplate::choose(template_path(name), "");
    const std::vector<ChatPiece> pieces = chat.render(conversation, false, tokens);
    std::string text;
    std::vector<std::string> trained;
    for (const ChatPiece& piece : pieces) {
      text += piece.text;
      if (piece.assistant) trained.push_back(piece.text);
    }
    EXPECT_EQ(text, chat.render_text(conversation, false, tokens)) << name;
    ASSERT_TRUE(expected.count(name)) << name;
    EXPECT_EQ(trained, expected.at(name)) << name;
  }
}

TEST(ChatTemplate, EndOfTurnComesFromTheTemplate) {
  const auto end_of = [](const std::string& name, const ChatTokens& tokens) {
    return ChatTemplate::choose(template_path(name), "").end_of_turn(tokens);
  };
  EXPECT_EQ(end_of("smollm2-instruct", {"<|im_start|>", "<|im_end|>", ""}), "<|im_end|>");
  EXPECT_EQ(end_of("llama-3.1-instruct", {"<|begin_of_text|>", "<|eot_id|>", ""}), "<|eot_id|>");
  EXPECT_EQ(end_of("gemma-2-it", {"<bos>", "<eos>", ""}), "<end_of_turn>");
  EXPECT_EQ(end_of("phi-3.5-mini-instruct", {"<s>", "<|endoftext|>", ""}), "<|end|>");
  EXPECT_EQ(end_of("mistral-7b-instruct-v0.2", {"<s>", "</s>", ""}), "</s>");
}

TEST(ChatTemplate, ChoosesTheModelsOwnANameOrAFile) {
  const std::string model_template = "{{ messages[0]['content'] }}!";
  EXPECT_EQ(ChatTemplate::choose("", model_template).render_text({{"user", "hi"}}, false, {}), "hi!");
  EXPECT_EQ(ChatTemplate::choose("chatml", model_template).render_text({{"user", "hi"}}, false, {}),
            "<|im_start|>user\nhi<|im_end|>\n");
  try {
    ChatTemplate::choose("", "");
    FAIL();
  } catch (const Error& error) {
    EXPECT_NE(std::string(error.what()).find("has no chat template"), std::string::npos) << error.what();
  }
  try {
    ChatTemplate::named("vicuna");
    FAIL();
  } catch (const Error& error) {
    EXPECT_NE(std::string(error.what()).find("chatml, llama2, llama3, alpaca"), std::string::npos);
  }
  EXPECT_THROW(ChatTemplate::choose("/nonexistent/t.jinja", model_template), Error);
  EXPECT_THROW(ChatTemplate::named("llama2").render({{"assistant", "x"}}, false, {"<s>", "</s>", ""}), jinja::RaisedError);
}

// qft template prints the rendering exactly, and with --json the pieces
// finetune trains on; a template's refusal names the file and its message.
TEST(TemplateCommand, PrintsTheRenderingAndThePiecesFinetuneTrainsOn) {
  test::TempDir dir;
  test::write_text(dir.file("messages.json"), R"([{"role": "user", "content": "Name a prime."},
    {"role": "assistant", "content": "7"}, {"role": "user", "content": "Another?"},
    {"role": "assistant", "content": "Eleven, 11."}])");
  test::write_text(dir.file("tokens.json"), R"({"bos_token": "<|begin_of_text|>", "eos_token": {"content": "<|eot_id|>"}})");
  const std::string command = std::string(QFT_BINARY) + " template --chat-template " + template_path("llama-3.1-instruct") +
                              " --special-tokens " + dir.file("tokens.json") + " --messages " + dir.file("messages.json");
  const std::vector<ChatMessage> messages{
      {"user", "Name a prime."}, {"assistant", "7"}, {"user", "Another?"}, {"assistant", "Eleven, 11."}};
  const ChatTemplate chat = ChatTemplate::choose(template_path("llama-3.1-instruct"), "");
  const ChatTokens tokens{"<|begin_of_text|>", "<|eot_id|>", ""};

  const test::CommandResult text = test::run_command(command + " 2>&1");
  EXPECT_EQ(text.exit_code, 0) << text.output;
  EXPECT_EQ(text.output, chat.render_text(messages, false, tokens));  // no newline added

  const test::CommandResult json = test::run_command(command + " --json --generation-prompt 2>&1");
  ASSERT_EQ(json.exit_code, 0) << json.output;
  const ordered_json printed = ordered_json::parse(json.output);
  EXPECT_EQ(printed.at("text"), chat.render_text(messages, true, tokens));
  std::string joined, trained;
  for (const auto& piece : printed.at("pieces")) {
    joined += piece.at("text").get<std::string>();
    if (piece.at("train")) trained += piece.at("text").get<std::string>() + "|";
  }
  EXPECT_EQ(joined, printed.at("text"));
  EXPECT_EQ(trained, "7<|eot_id|>|Eleven, 11.<|eot_id|>|");

  test::write_text(dir.file("system.json"), R"([{"role": "system", "content": "x"}, {"role": "user", "content": "y"}])");
  const test::CommandResult refused = test::run_command(std::string(QFT_BINARY) + " template --chat-template " +
                                                        template_path("gemma-2-it") + " --special-tokens " +
                                                        dir.file("tokens.json") + " --messages " + dir.file("system.json") + " 2>&1");
  EXPECT_NE(refused.exit_code, 0);
  EXPECT_NE(refused.output.find(dir.file("system.json") + ": " + template_path("gemma-2-it") +
                                " refuses the conversation: System role not supported"),
            std::string::npos)
      << refused.output;

  test::write_text(dir.file("bad.json"), R"([{"role": "user"}])");
  const test::CommandResult bad = test::run_command(command.substr(0, command.find(" --messages")) + " --messages " +
                                                    dir.file("bad.json") + " 2>&1");
  EXPECT_NE(bad.exit_code, 0);
  EXPECT_NE(bad.output.find("message 0 is not {\"role\": string, \"content\": string}"), std::string::npos) << bad.output;
}

// Errors name the template's line and column; the sandbox bounds the work.
TEST(Jinja, ErrorsNameTheLineAndColumn) {
  const auto message = [](const std::string& source) -> std::string {
    try {
      jinja::Template compiled(source, "t.jinja");
      compiled.render(jinja::Value(jinja::Dict{{"messages", jinja::Value(jinja::List{})}}));
    } catch (const jinja::TemplateError& error) {
      return error.what();
    }
    return "no error";
  };
  EXPECT_EQ(message("line one\n  {% if %}"), "t.jinja:2:9: unexpected %}");
  EXPECT_EQ(message("{% include 'x.jinja' %}"), "t.jinja:1:4: {% include %} is not allowed: a chat template cannot read other files");
  EXPECT_EQ(message("{% call foo() %}{% endcall %}"), "t.jinja:1:4: the statement {% call %} is not supported");
  EXPECT_EQ(message("{{ 'x' | frobnicate }}"), "t.jinja:1:8: no filter named 'frobnicate'");
  EXPECT_EQ(message("\n\n{{ messages[0]['role'] }}"), "t.jinja:3:15: the value is undefined (reading an item)");
  EXPECT_EQ(message("{{ 1 + 'a' }}"), "t.jinja:1:6: unsupported operand type(s) for +: 'int' and 'str'");
  EXPECT_EQ(message("{% for x in range(2000) %}{% for y in range(1000) %}{% endfor %}{% endfor %}"),
            "t.jinja:1:30: more than 1000000 loop iterations");
  EXPECT_EQ(message("{% macro f() %}{{ f() }}{% endmacro %}{{ f() }}"), "t.jinja:1:4: macros nested deeper than 64 calls");
  EXPECT_EQ(message(std::string(300, '(') + "1" + std::string(300, ')')), "no error");
  EXPECT_NE(message("{{ " + std::string(300, '(') + "1" + std::string(300, ')') + " }}").find("nested too deeply"),
            std::string::npos);
  EXPECT_EQ(message("{% if true %}unclosed"), "t.jinja:1:22: the template ends inside a block (expected {% elif %})");
}

}  // namespace
}  // namespace qft
