#include "data/instruction_data.h"

#include <gtest/gtest.h>

#include <filesystem>

#include "core/error.h"
#include "test_util.h"

namespace qft {
namespace {

using test::TempDir;

std::vector<std::pair<std::string, std::string>> roles(const DataRecord& record) {
  std::vector<std::pair<std::string, std::string>> out;
  for (const ChatMessage& message : record.messages) out.emplace_back(message.role, message.content);
  return out;
}

TEST(InstructionData, AlpacaWithInputHistoryAndSystem) {
  TempDir dir;
  test::write_text(dir.file("a.json"), R"([
    {"instruction": "Add", "input": "2 and 3", "output": "5"},
    {"instruction": "And now?", "input": "", "output": "7", "system": "Be brief.",
     "history": [["Add 3 and 4", "7"]]}
  ])");
  const DataSet data = read_instruction_data(dir.file("a.json"), std::nullopt, true);
  EXPECT_EQ(data.format, DataFormat::Alpaca);
  ASSERT_EQ(data.records.size(), 2u);
  EXPECT_EQ(roles(data.records[0]), (std::vector<std::pair<std::string, std::string>>{{"user", "Add\n\n2 and 3"}, {"assistant", "5"}}));
  EXPECT_EQ(roles(data.records[1]), (std::vector<std::pair<std::string, std::string>>{
                                        {"system", "Be brief."}, {"user", "Add 3 and 4"}, {"assistant", "7"},
                                        {"user", "And now?"}, {"assistant", "7"}}));
}

TEST(InstructionData, ShareGptWithSystemTurnAndMessagesJsonl) {
  TempDir dir;
  test::write_text(dir.file("s.jsonl"),
                   R"({"conversations": [{"from": "system", "value": "S"}, {"from": "human", "value": "Hi"}, {"from": "gpt", "value": "Hello"}]})"
                   "\n\n"
                   R"({"conversations": [{"from": "human", "value": "Q"}, {"from": "gpt", "value": "A"}]})"
                   "\n");
  const DataSet shared = read_instruction_data(dir.file("s.jsonl"), std::nullopt, true);
  EXPECT_EQ(shared.format, DataFormat::ShareGPT);
  EXPECT_EQ(roles(shared.records[0]), (std::vector<std::pair<std::string, std::string>>{{"system", "S"}, {"user", "Hi"}, {"assistant", "Hello"}}));
  EXPECT_EQ(shared.records[1].line, 3);

  test::write_text(dir.file("m.jsonl"), R"({"messages": [{"role": "user", "content": "U"}, {"role": "assistant", "content": "A"}]})" "\n");
  const DataSet messages = read_instruction_data(dir.file("m.jsonl"), std::nullopt, true);
  EXPECT_EQ(messages.format, DataFormat::Messages);
  EXPECT_EQ(roles(messages.records[0]), (std::vector<std::pair<std::string, std::string>>{{"user", "U"}, {"assistant", "A"}}));
}

TEST(InstructionData, PlainTextFromJsonlAndTxt) {
  TempDir dir;
  test::write_text(dir.file("t.jsonl"), "{\"text\": \"one\"}\n{\"text\": \"two\"}\n");
  const DataSet jsonl = read_instruction_data(dir.file("t.jsonl"), std::nullopt, true);
  EXPECT_EQ(jsonl.format, DataFormat::Text);
  EXPECT_EQ(jsonl.records[1].text, "two");
  test::write_text(dir.file("t.txt"), "Once upon a time.\n");
  const DataSet txt = read_instruction_data(dir.file("t.txt"), std::nullopt, true);
  EXPECT_EQ(txt.format, DataFormat::Text);
  EXPECT_EQ(txt.records[0].text, "Once upon a time.\n");
}

TEST(InstructionData, MalformedRecordsAreSkippedWithFileAndLineOrFatalWhenStrict) {
  TempDir dir;
  const std::string path = dir.file("bad.jsonl");
  test::write_text(path,
                   "{\"instruction\": \"ok\", \"output\": \"fine\"}\n"
                   "{\"instruction\": \"no output\"}\n"
                   "not json at all\n"
                   "{\"instruction\": 5, \"output\": \"x\"}\n"
                   "{\"instruction\": \"ok too\", \"output\": \"good\"}\n");
  const DataSet data = read_instruction_data(path, std::nullopt, false);
  EXPECT_EQ(data.records.size(), 2u);
  ASSERT_EQ(data.skipped.size(), 3u);
  EXPECT_NE(data.skipped[0].find(path + ":2: missing or non-string 'output'"), std::string::npos) << data.skipped[0];
  EXPECT_NE(data.skipped[1].find(path + ":3: not valid JSON"), std::string::npos) << data.skipped[1];
  try {
    read_instruction_data(path, std::nullopt, true);
    FAIL();
  } catch (const Error& error) {
    EXPECT_NE(std::string(error.what()).find(path + ":2:"), std::string::npos);
  }
  test::write_text(dir.file("turns.jsonl"), R"({"conversations": [{"from": "gpt", "value": "A"}, {"from": "human", "value": "Q"}]})" "\n");
  EXPECT_THROW(read_instruction_data(dir.file("turns.jsonl"), std::nullopt, true), Error);
  test::write_text(dir.file("empty.json"), "[]");
  EXPECT_THROW(read_instruction_data(dir.file("empty.json"), std::nullopt, false), Error);
  EXPECT_THROW(parse_data_format("csv"), Error);
}

TEST(InstructionData, FormatOverride) {
  TempDir dir;
  test::write_text(dir.file("x.jsonl"), "{\"text\": \"t\", \"instruction\": \"i\", \"output\": \"o\"}\n");
  EXPECT_EQ(read_instruction_data(dir.file("x.jsonl"), std::nullopt, true).format, DataFormat::Alpaca);
  EXPECT_EQ(read_instruction_data(dir.file("x.jsonl"), DataFormat::Text, true).records[0].text, "t");
}

// The shared data sets, as their README describes them.
TEST(InstructionData, ReadsTheSharedDataSets) {
  const std::filesystem::path shared = std::filesystem::path(QFT_SOURCE_DIR) / ".." / "shared" / "data" / "train";
  if (!std::filesystem::exists(shared)) GTEST_SKIP() << "no shared/ data beside the checkout";
  const DataSet alpaca = read_instruction_data((shared / "alpaca_en_demo.json").string(), std::nullopt, false);
  EXPECT_EQ(alpaca.format, DataFormat::Alpaca);
  EXPECT_EQ(alpaca.records.size() + alpaca.skipped.size(), 999u);
  const DataSet sharegpt = read_instruction_data((shared / "sharegpt_dummy_conversation.json").string(), std::nullopt, false);
  EXPECT_EQ(sharegpt.format, DataFormat::ShareGPT);
  EXPECT_EQ(sharegpt.records.size() + sharegpt.skipped.size(), 500u);
  EXPECT_GT(sharegpt.records.size(), 450u);
}

}  // namespace
}  // namespace qft
