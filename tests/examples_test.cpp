// Tokenized training examples: assistant-only masks, segments, batches, the schedule.
#include "data/examples.h"

#include <gtest/gtest.h>

#include <cmath>
#include <fstream>

#include "text/model_tokenizer.h"
#include "train/schedule.h"
#include "test_util.h"

namespace qft {
namespace {

std::string smollm2_path() {
  std::ifstream file(test::reference_case("gguf/smollm2/model_path.txt"));
  std::string path;
  std::getline(file, path);
  return path;
}

std::string trained_text(const Tokenizer& tokenizer, const Example& example) {
  std::vector<int> ids;
  for (size_t i = 0; i < example.tokens.size(); ++i) {
    if (example.trained[i]) ids.push_back(example.tokens[i]);
  }
  return tokenizer.decode(ids);
}

// With SmolLM2's tokenizer and ChatML: the trained tokens spell exactly the
// assistant's replies and their <|im_end|>, the whole spells the rendering.
TEST(Examples, AssistantOnlyMaskWithChatML) {
  const auto tokenizer = load_model_tokenizer(smollm2_path());
  const ChatTemplate chat = ChatTemplate::choose("", tokenizer->chat_template());
  DataRecord record;
  record.messages = {{"user", "Name a prime."}, {"assistant", "Seven."}, {"user", "Another?"}, {"assistant", "Eleven, 11."}};
  const Example example = tokenize_record(record, *tokenizer, &chat, false);
  ASSERT_EQ(example.tokens.size(), example.trained.size());
  EXPECT_EQ(trained_text(*tokenizer, example), "Seven.<|im_end|>Eleven, 11.<|im_end|>");
  EXPECT_EQ(tokenizer->decode(example.tokens), chat.render_text(record.messages, false, chat_tokens_of(*tokenizer)));
  const Example everything = tokenize_record(record, *tokenizer, &chat, true);
  EXPECT_EQ(everything.tokens, example.tokens);
  EXPECT_EQ(std::count(everything.trained.begin(), everything.trained.end(), 1), static_cast<long>(everything.tokens.size()));
}

TEST(Examples, PlainTextTrainsOnEveryToken) {
  const auto tokenizer = load_model_tokenizer(smollm2_path());
  DataRecord record;
  record.text = "Once upon a time, 42 cats.";
  const Example example = tokenize_record(record, *tokenizer, nullptr, false);
  EXPECT_EQ(example.tokens, tokenizer->encode(record.text, true));
  EXPECT_EQ(std::count(example.trained.begin(), example.trained.end(), 1), static_cast<long>(example.tokens.size()));
}

TEST(Examples, SegmentsKeepTheMaskAndDropSegmentsWithNothingToLearn) {
  Example example;
  for (int i = 0; i < 10; ++i) example.tokens.push_back(100 + i);
  example.trained = {0, 0, 0, 0, 1, 0, 0, 0, 1, 1};
  const auto segments = split_into_segments(example, 4);
  // [100..103] has no target; [104..107] only its first token (no context): both dropped.
  ASSERT_EQ(segments.size(), 1u);
  EXPECT_EQ(segments[0].tokens, (std::vector<int>{108, 109}));
  EXPECT_EQ(segments[0].trained, (std::vector<uint8_t>{1, 1}));
  example.trained.assign(10, 1);
  const auto all = split_into_segments(example, 4);
  ASSERT_EQ(all.size(), 3u);
  EXPECT_EQ(all[2].tokens, (std::vector<int>{108, 109}));
}

TEST(Examples, BatchTargetsOnlyTrainedTokens) {
  Example a{{1, 2, 3, 4}, {0, 0, 1, 1}}, b{{5, 6, 7}, {1, 1, 0}};
  const Batch batch = make_training_batch({&a, &b});
  EXPECT_EQ(batch.targets, (std::vector<int>{-1, 3, 4, -1, 6, -1, -1}));
  EXPECT_EQ(batch.positions, (std::vector<int>{0, 1, 2, 3, 0, 1, 2}));
  EXPECT_EQ(batch.predicted, 3);
}

TEST(Examples, ShuffleIsAPermutationFixedBySeed) {
  std::vector<size_t> a(50), b(50), c(50);
  for (size_t i = 0; i < 50; ++i) a[i] = b[i] = c[i] = i;
  shuffle_indices(a, 7);
  shuffle_indices(b, 7);
  shuffle_indices(c, 8);
  EXPECT_EQ(a, b);
  EXPECT_NE(a, c);
  std::sort(c.begin(), c.end());
  for (size_t i = 0; i < 50; ++i) EXPECT_EQ(c[i], i);
}

TEST(LrSchedule, WarmupThenCosineToTheFloor) {
  const LrSchedule schedule{1e-3f, 110, 10, 0.1f};
  EXPECT_FLOAT_EQ(schedule.at(1), 1e-4f);
  EXPECT_FLOAT_EQ(schedule.at(10), 1e-3f);
  EXPECT_NEAR(schedule.at(60), 1e-3f * (0.1f + 0.9f * 0.5f), 1e-9);  // halfway through the decay
  EXPECT_NEAR(schedule.at(110), 1e-4f, 1e-10);
  for (int step = 11; step < 110; ++step) EXPECT_GE(schedule.at(step), schedule.at(step + 1));
}

}  // namespace
}  // namespace qft
