// Evaluation: multiple-choice scoring against hand-computed log-likelihoods
// (a fake tokenizer and scorer) and against transformers on SmolLM2,
// perplexity against the PyTorch reference, and `qft eval` end to end.
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <map>
#include <nlohmann/json.hpp>

#include "core/error.h"
#include "data/batch.h"
#include "eval/choice.h"
#include "eval/perplexity.h"
#include "eval/scorer.h"
#include "io/safetensors.h"
#include "model/transformer.h"
#include "model/weights.h"
#include "test_util.h"
#include "text/model_tokenizer.h"

namespace qft {
namespace {

using test::run_command;
using test::TempDir;

const std::string kQft = QFT_BINARY;

// One token per byte (id = the byte), except that "ab" is one token (id 300)
// so a choice can merge with the end of its context. BOS 1, EOS 2.
class ByteTokenizer : public Tokenizer {
 public:
  ByteTokenizer() {
    bos_ = 1;
    eos_ = 2;
  }
  std::vector<int> encode(std::string_view text, bool add_special_tokens) const override {
    std::vector<int> ids;
    if (add_special_tokens) ids.push_back(1);
    for (size_t i = 0; i < text.size(); ++i) {
      if (text.substr(i, 2) == "ab") {
        ids.push_back(300);
        ++i;
      } else {
        ids.push_back(static_cast<unsigned char>(text[i]));
      }
    }
    return ids;
  }
  std::string decode(const std::vector<int>& ids, bool) const override {
    std::string text;
    for (int id : ids) text += id == 300 ? std::string("ab") : std::string(1, static_cast<char>(id));
    return text;
  }
  std::optional<int> token_to_id(std::string_view) const override { return std::nullopt; }
  std::string id_to_token(int id) const override { return decode({id}, false); }
  bool is_special(int id) const override { return id == 1 || id == 2; }
  int vocab_size() const override { return 301; }
  std::string kind() const override { return "bytes"; }
};

// −log p(target) = cost of the target token alone (unlisted tokens: 10), so
// every log-likelihood below is a sum worked out by hand. Records the batches.
struct FakeScorer {
  explicit FakeScorer(std::map<int, double> costs = {}) : cost(std::move(costs)) {}
  std::map<int, double> cost;
  std::vector<Batch> batches;

  TokenScorer scorer() {
    return [this](const Batch& batch) {
      batches.push_back(batch);
      std::vector<double> losses(batch.size(), 0.0);
      for (int i = 0; i < batch.size(); ++i) {
        if (batch.targets[i] >= 0) losses[i] = cost.count(batch.targets[i]) ? cost.at(batch.targets[i]) : 10.0;
      }
      return losses;
    };
  }
};

ChoiceRecord record(std::string context, std::vector<std::string> choices, int label, std::string subject = "",
                    int line = 1) {
  return {"test.jsonl", line, std::move(context), std::move(choices), label, std::move(subject)};
}

// ------------------------------------------------------------ hand-computed ---

// Choice 0, " xx" (3 bytes): −(0.5 + 1.25 + 1.25) = −3.0, −1.0 per byte.
// Choice 1, " y" (2 bytes): −(0.5 + 1.9) = −2.4, −1.2 per byte.
// The sum prefers choice 1, the per-byte score choice 0.
TEST(Choice, AccAndAccNormDifferOnHandComputedLogLikelihoods) {
  ByteTokenizer tokenizer;
  FakeScorer fake{{{' ', 0.5}, {'x', 1.25}, {'y', 1.9}, {'z', 0.1}}};
  // Context letters cost 10 each: they must not enter any sum.
  const std::vector<ChoiceRecord> records = {
      record("Q: pick", {" xx", " y"}, 0),  // acc wrong (picks 1), acc_norm right (picks 0)
      record("Q: again", {" y", " z"}, 1),  // −2.4 vs −0.6: both pick 1, right
      record("Q: third", {" xx", " y"}, 1),  // acc right, acc_norm wrong
  };
  const ChoiceResult result = evaluate_choice(records, {}, tokenizer, fake.scorer(), ChoiceOptions{});
  ASSERT_EQ(result.questions.size(), 3u);
  EXPECT_DOUBLE_EQ(result.questions[0].loglikelihoods[0], -3.0);
  EXPECT_DOUBLE_EQ(result.questions[0].loglikelihoods[1], -2.4);
  EXPECT_EQ(result.questions[0].predicted, 1);
  EXPECT_EQ(result.questions[0].predicted_norm, 0);
  EXPECT_DOUBLE_EQ(result.questions[1].loglikelihoods[1], -0.6);
  EXPECT_EQ(result.overall.count, 3);
  EXPECT_EQ(result.overall.correct, 2);       // questions 2 and 3
  EXPECT_EQ(result.overall.correct_norm, 2);  // questions 1 and 2
  EXPECT_DOUBLE_EQ(result.overall.acc(), 2.0 / 3.0);
  // Sample standard deviation / sqrt(n): sqrt(p (1 − p) / (n − 1)).
  EXPECT_DOUBLE_EQ(result.overall.acc_stderr(), std::sqrt(2.0 / 9.0 / 2.0));
  EXPECT_TRUE(result.subjects.empty());
  // Every choice of every question went through one forward pass.
  ASSERT_EQ(fake.batches.size(), 1u);
  EXPECT_EQ(fake.batches[0].sequences.size(), 6u);
}

TEST(Choice, JudgesByBytesNotCharacters) {
  // "é" is 2 bytes: −3.0 over 4 bytes (−0.75) beats −2.0 over 2 bytes (−1.0).
  const QuestionResult q = judge_question(record("c", {" é!", " y"}, 0), {-3.0, -2.0});
  EXPECT_EQ(q.predicted, 1);
  EXPECT_EQ(q.predicted_norm, 0);
  // Ties go to the first choice, as numpy's argmax.
  EXPECT_EQ(judge_question(record("c", {" a", " b"}, 0), {-1.0, -1.0}).predicted, 0);
}

TEST(Choice, SubjectsGiveMacroAverages) {
  ByteTokenizer tokenizer;
  FakeScorer fake{{{' ', 0.5}, {'x', 1.25}, {'y', 1.9}}};
  const std::vector<ChoiceRecord> records = {
      record("a", {" x", " y"}, 0, "alpha"), record("b", {" x", " y"}, 1, "alpha"),
      record("c", {" x", " y"}, 0, "alpha"), record("d", {" x", " y"}, 0, "beta"),
  };
  const ChoiceResult result = evaluate_choice(records, {}, tokenizer, fake.scorer(), ChoiceOptions{});
  EXPECT_DOUBLE_EQ(result.subjects.at("alpha").acc(), 2.0 / 3.0);
  EXPECT_DOUBLE_EQ(result.subjects.at("beta").acc(), 1.0);
  EXPECT_DOUBLE_EQ(result.macro_acc, (2.0 / 3.0 + 1.0) / 2);
  EXPECT_DOUBLE_EQ(result.overall.acc(), 0.75);
}

TEST(Choice, PacksWholeQuestionsIntoBatches) {
  ByteTokenizer tokenizer;
  FakeScorer fake;
  std::vector<ChoiceRecord> records;
  for (int i = 0; i < 5; ++i) records.push_back(record("0123456789", {" x", " yy", " zzz"}, 0));
  ChoiceOptions options;
  options.batch_tokens = 30;  // a question reads 3 × 10 + 1 + 2 + 3 = 36 rows: one per batch
  evaluate_choice(records, {}, tokenizer, fake.scorer(), options);
  ASSERT_EQ(fake.batches.size(), 5u);
  for (const Batch& batch : fake.batches) {
    EXPECT_EQ(batch.sequences.size(), 3u);
    EXPECT_EQ(batch.size(), 36);
    EXPECT_EQ(batch.predicted, 2 + 3 + 4);
  }
  fake.batches.clear();
  options.batch_tokens = 80;  // two questions per batch
  evaluate_choice(records, {}, tokenizer, fake.scorer(), options);
  EXPECT_EQ(fake.batches.size(), 3u);
}

// Questions whose choices are single tokens go through the next-token scorer
// (one call with the context); the others through packed batches. Both give
// the same log-likelihoods.
TEST(Choice, SingleTokenChoicesShareOneForward) {
  ByteTokenizer tokenizer;
  FakeScorer fake{{{'A', 0.7}, {'B', 0.2}, {'C', 1.5}, {' ', 0.5}, {'x', 1.25}}};
  std::vector<std::vector<int>> contexts;
  const NextTokenScorer next_token = [&](const std::vector<int>& context, const std::vector<int>& candidates) {
    contexts.push_back(context);
    std::vector<double> result;
    for (int candidate : candidates) result.push_back(-fake.cost.at(candidate));
    return result;
  };
  const std::vector<ChoiceRecord> records = {record("Q1:", {"A", "B", "C"}, 1), record("Q2:", {" x", "A"}, 0),
                                             record("Q3:", {"C", "A"}, 1)};
  const ChoiceResult shared = evaluate_choice(records, {}, tokenizer, fake.scorer(), ChoiceOptions{}, {}, next_token);
  ASSERT_EQ(contexts.size(), 2u);  // Q1 and Q3; Q2 has a two-token choice
  EXPECT_EQ(contexts[0], (std::vector<int>{'Q', '1', ':'}));
  ASSERT_EQ(fake.batches.size(), 1u);
  EXPECT_EQ(fake.batches[0].sequences.size(), 2u);
  const ChoiceResult packed = evaluate_choice(records, {}, tokenizer, fake.scorer(), ChoiceOptions{});
  for (size_t q = 0; q < records.size(); ++q) {
    ASSERT_EQ(shared.questions[q].loglikelihoods.size(), packed.questions[q].loglikelihoods.size());
    for (size_t c = 0; c < records[q].choices.size(); ++c) {
      EXPECT_DOUBLE_EQ(shared.questions[q].loglikelihoods[c], packed.questions[q].loglikelihoods[c]) << q << " " << c;
    }
  }
  EXPECT_DOUBLE_EQ(shared.questions[0].loglikelihoods[1], -0.2);
  EXPECT_EQ(shared.overall.correct, 2);  // Q2 picks "A" (−0.7) over " x" (−1.75)
}

// ------------------------------------------------------------- tokenization ---

TEST(Choice, EncodesPairsAsLmEvaluationHarness) {
  ByteTokenizer tokenizer;
  // Trailing whitespace of the context moves to the continuation.
  ChoiceTokens tokens = encode_choices(tokenizer, "Q: \n", {"x"}, false);
  EXPECT_EQ(tokens.context, (std::vector<int>{'Q', ':'}));
  EXPECT_EQ(tokens.continuations[0], (std::vector<int>{' ', '\n', 'x'}));
  // A merge across the boundary: "xa" + "bc" encodes whole as x, ab, c; the
  // continuation is what follows the context's two tokens: c alone.
  tokens = encode_choices(tokenizer, "xa", {"bc", "d"}, false);
  EXPECT_EQ(tokens.context, (std::vector<int>{'x', 'a'}));
  EXPECT_EQ(tokens.continuations[0], (std::vector<int>{'c'}));
  EXPECT_EQ(tokens.continuations[1], (std::vector<int>{'d'}));
  // Nothing after the context: refused rather than scored as 0.
  EXPECT_THROW(encode_choices(tokenizer, "xa", {"b"}, false), Error);
  // BOS on request, and for an empty context.
  EXPECT_EQ(encode_choices(tokenizer, "Q", {" x"}, true).context, (std::vector<int>{1, 'Q'}));
  tokens = encode_choices(tokenizer, "", {"x"}, false);
  EXPECT_EQ(tokens.context, (std::vector<int>{1}));
  EXPECT_EQ(tokens.continuations[0], (std::vector<int>{'x'}));
}

TEST(Choice, TruncatesLongContextsFromTheLeft) {
  ByteTokenizer tokenizer;
  FakeScorer fake;
  ChoiceOptions options;
  options.max_length = 6;
  evaluate_choice({record("0123456789", {" x", " yy"}, 0)}, {}, tokenizer, fake.scorer(), options);
  ASSERT_EQ(fake.batches.size(), 1u);
  const Batch& batch = fake.batches[0];
  // At most 7 tokens are kept (the last is a target only): " x" keeps "56789 x"
  // and reads "56789 ", " yy" keeps "6789 yy" and reads "6789 y".
  EXPECT_EQ(batch.sequences[0].length, 6);
  EXPECT_EQ(batch.tokens[0], '5');
  EXPECT_EQ(batch.sequences[1].length, 6);
  EXPECT_EQ(batch.tokens[6], '6');
  options.max_length = 2;
  EXPECT_THROW(evaluate_choice({record("0123456789", {" x", " yyy"}, 0)}, {}, tokenizer, fake.scorer(), options), Error);
}

// --------------------------------------------------------------- few-shot ---

TEST(Choice, FewShotContextWritesSharedHeaderOnce) {
  const std::string header = "The following are questions about cats.\n\n";
  const ChoiceRecord question = record(header + "Q3?\nAnswer:", {" A", " B"}, 0, "cats");
  const ChoiceRecord first = record(header + "Q1?\nAnswer:", {" A", " B"}, 1, "cats");
  const ChoiceRecord second = record(header + "Q2?\nAnswer:", {" A", " B"}, 0, "cats");
  EXPECT_EQ(fewshot_context(question, {&first, &second}),
            header + "Q1?\nAnswer: B\n\nQ2?\nAnswer: A\n\nQ3?\nAnswer:");
  EXPECT_EQ(fewshot_context(question, {}), question.context);
  const ChoiceRecord plain = record("Question: 1 + 1?\nAnswer:", {" 2", " 3"}, 0);
  const ChoiceRecord example = record("Question: 2 + 2?\nAnswer:", {" 5", " 4"}, 1);
  EXPECT_EQ(fewshot_context(plain, {&example}), "Question: 2 + 2?\nAnswer: 4\n\nQuestion: 1 + 1?\nAnswer:");
}

TEST(Choice, FewShotExamplesAreDeterministicAndExcludeTheQuestion) {
  std::vector<ChoiceRecord> records;
  for (int i = 0; i < 20; ++i) records.push_back(record(std::string("q").append(std::to_string(i)), {" a", " b"}, 0, i < 10 ? "s" : "t", i + 1));
  for (size_t index : {0u, 7u, 15u}) {
    const auto picks = pick_fewshot(records, index, {}, 3, 1234);
    ASSERT_EQ(picks.size(), 3u);
    EXPECT_EQ(picks, pick_fewshot(records, index, {}, 3, 1234));
    for (const ChoiceRecord* pick : picks) {
      EXPECT_NE(pick, &records[index]);
      EXPECT_EQ(pick->subject, records[index].subject);
    }
    EXPECT_NE(picks[0]->context + picks[1]->context + picks[2]->context,
              [&] {
                const auto other = pick_fewshot(records, index, {}, 3, 99);
                return other[0]->context + other[1]->context + other[2]->context;
              }());
  }
  // From a few-shot file: the first K of the same subject, in file order.
  const std::vector<ChoiceRecord> dev = {record("d1", {" a"}, 0, "t"), record("d2", {" a"}, 0, "s"),
                                         record("d3", {" a"}, 0, "s"), record("d4", {" a"}, 0, "s")};
  const auto picks = pick_fewshot(records, 3, dev, 2, 1234);
  ASSERT_EQ(picks.size(), 2u);
  EXPECT_EQ(picks[0], &dev[1]);
  EXPECT_EQ(picks[1], &dev[2]);
  EXPECT_THROW(pick_fewshot(records, 3, dev, 4, 1234), Error);
}

TEST(Choice, LimitsSelectFirstRecords) {
  std::vector<ChoiceRecord> records;
  for (int i = 0; i < 9; ++i) records.push_back(record("q", {" a"}, 0, i < 3 ? "s" : i < 7 ? "t" : "u"));
  ChoiceOptions options;
  options.limit = 4;
  EXPECT_EQ(select_records(records, options), (std::vector<size_t>{0, 1, 2, 3}));
  options.limit = 0;
  options.limit_per_subject = 2;
  EXPECT_EQ(select_records(records, options), (std::vector<size_t>{0, 1, 3, 4, 7, 8}));
  options.limit = 3;
  EXPECT_EQ(select_records(records, options), (std::vector<size_t>{0, 1, 3}));
}

// ---------------------------------------------------------------- bad input ---

TEST(Choice, MalformedRecordsNameFileAndLine) {
  TempDir dir;
  const std::string good = R"({"context": "Q", "choices": [" a", " b"], "label": 1})";
  auto expect_error = [&](const std::string& second_line, const std::string& message) {
    const std::string path = dir.file("data.jsonl");
    test::write_text(path, good + "\n" + second_line + "\n");
    try {
      read_choice_data(path);
      ADD_FAILURE() << "no error for " << second_line;
    } catch (const Error& error) {
      EXPECT_NE(std::string(error.what()).find(path + ":2: " + message), std::string::npos) << error.what();
    }
  };
  expect_error(R"({"context": "Q", "choices": [" a", " b"], "label": 1)", "not valid JSON");
  expect_error(R"({"context": "Q", "choices": [" a", " b"], "label": 2})", "label 2 is out of range for 2 choices");
  expect_error(R"({"context": "Q", "choices": [" a", " b"], "label": -1})", "label -1 is out of range");
  expect_error(R"({"context": "Q", "choices": [" a", " b"]})", "missing or non-integer 'label'");
  expect_error(R"({"choices": [" a"], "label": 0})", "missing or non-string 'context'");
  expect_error(R"({"context": "Q", "choices": [], "label": 0})", "'choices' must be a non-empty list");
  expect_error(R"({"context": "Q", "choices": [" a", ""], "label": 0})", "choice 1 is empty");
  expect_error(R"({"context": "Q", "choices": [" a"], "label": 0, "subject": 3})", "'subject' must be a string");
  test::write_text(dir.file("ok.jsonl"), good + "\n\n" + good + "\n");
  const auto records = read_choice_data(dir.file("ok.jsonl"));
  ASSERT_EQ(records.size(), 2u);
  EXPECT_EQ(records[1].line, 3);
  EXPECT_EQ(records[1].label, 1);
}

// --------------------------------------------------------------- perplexity ---

TEST(Perplexity, WindowsPredictEveryTokenButTheFirstOnce) {
  ScoredSequence sequence;
  for (int i = 0; i < 10; ++i) sequence.tokens.push_back(100 + i);
  sequence.scored.assign(10, 1);
  const auto windows = split_into_windows(sequence, 4);
  ASSERT_EQ(windows.size(), 3u);  // [0, 4), [3, 7), [6, 10)
  EXPECT_EQ(windows[1].tokens.front(), 103);
  EXPECT_EQ(windows[2].tokens, (std::vector<int>{106, 107, 108, 109}));
  int64_t scored = 0;
  for (const auto& window : windows) scored += window.scored_count();
  EXPECT_EQ(scored, 9);
  EXPECT_EQ(split_into_windows(sequence, 64).size(), 1u);

  // Mean of the hand costs: tokens 101..109 cost (target − 100) / 10.
  FakeScorer fake;
  for (int i = 1; i < 10; ++i) fake.cost[100 + i] = i / 10.0;
  const PerplexityResult result = evaluate_perplexity({sequence}, fake.scorer(), 4, 5);
  EXPECT_EQ(result.tokens, 9);
  EXPECT_EQ(result.windows, 3);
  EXPECT_NEAR(result.mean_loss, 0.5, 1e-12);
  EXPECT_NEAR(result.perplexity, std::exp(0.5), 1e-12);
  EXPECT_EQ(fake.batches.size(), 3u);  // 3 rows each, 5 per batch: one window per batch
}

TEST(Perplexity, OnlyMarkedTokensCount) {
  ScoredSequence sequence{{5, 6, 7, 8, 9}, {1, 1, 0, 0, 1}};  // tokens 6 and 9 count
  FakeScorer fake{{{6, 1.0}, {7, 100.0}, {8, 100.0}, {9, 3.0}}};
  const PerplexityResult result = evaluate_perplexity({sequence}, fake.scorer(), 1024, 4096);
  EXPECT_EQ(result.tokens, 2);
  EXPECT_DOUBLE_EQ(result.mean_loss, 2.0);
  // The batch reads 4 rows (the last token is a target only) and predicts 2.
  ASSERT_EQ(fake.batches.size(), 1u);
  EXPECT_EQ(fake.batches[0].size(), 4);
  EXPECT_EQ(fake.batches[0].predicted, 2);
  EXPECT_EQ(fake.batches[0].targets, (std::vector<int>{6, -1, -1, 9}));
}

// ------------------------------------------------------------------ SmolLM2 ---

std::string trimmed(std::string text) {
  text.erase(text.find_last_not_of(" \n") + 1);
  return text;
}

class SmolLM2Eval : public testing::Test {
 protected:
  static void SetUpTestSuite() {
    path_ = new std::string(trimmed(test::read_text(test::reference_case("gguf/smollm2/model_path.txt"))));
    model_ = new LoadedModel(load_model(*path_));
    tokenizer_ = load_model_tokenizer(*path_).release();
  }
  static void TearDownTestSuite() {
    delete model_;
    delete tokenizer_;
    delete path_;
  }
  static std::string* path_;
  static LoadedModel* model_;
  static Tokenizer* tokenizer_;
};
std::string* SmolLM2Eval::path_ = nullptr;
LoadedModel* SmolLM2Eval::model_ = nullptr;
Tokenizer* SmolLM2Eval::tokenizer_ = nullptr;

// The mean loss over tokens.txt (every line its own sequence) against
// transformers in float64, and each line's summed loss against the one
// computed from the reference logits, however the lines are batched.
TEST_F(SmolLM2Eval, PerplexityMatchesPyTorch) {
  const std::string dir = test::reference_case("gguf/smollm2");
  const auto lines = read_token_file(dir + "/tokens.txt", model_->config.vocab_size);
  std::vector<ScoredSequence> sequences;
  for (const TokenSequence& line : lines) sequences.push_back({line, std::vector<uint8_t>(line.size(), 1)});
  Transformer transformer(model_->config, *model_->weights, nullptr);
  const TokenScorer scorer = transformer_scorer(transformer);
  const double want = std::stod(test::read_text(dir + "/loss.txt"));
  const PerplexityResult result = evaluate_perplexity(sequences, scorer, 1024, 4096);
  EXPECT_NEAR(result.mean_loss, want, 1e-4 * want);
  // d(perplexity) / perplexity = d(loss): the same relative tolerance on the loss.
  EXPECT_NEAR(result.perplexity, std::exp(want), 1e-4 * want * std::exp(want));
  int64_t tokens = 0;
  for (const auto& line : lines) tokens += line.size() - 1;
  EXPECT_EQ(result.tokens, tokens);
  std::printf("SmolLM2 perplexity: qft %.6f, transformers (float64) %.6f\n", result.perplexity, std::exp(want));

  const SafetensorsFile logits(dir + "/expected.safetensors");
  const int V = model_->config.vocab_size;
  std::vector<std::vector<ScoredSequence>> groups;
  for (const auto& sequence : sequences) groups.push_back({sequence});
  for (size_t budget : {size_t(8), size_t(4096)}) {  // a line per batch, or all in one
    const auto sums = score_groups(groups, scorer, budget);
    for (size_t i = 0; i < lines.size(); ++i) {
      const TensorRecord* record = logits.find("logits." + std::to_string(i));
      ASSERT_NE(record, nullptr);
      std::vector<float> row_logits(record->nbytes / 4);
      convert_to_f32(row_logits.data(), *record);
      double want_sum = 0.0;
      for (size_t t = 0; t + 1 < lines[i].size(); ++t) {
        const float* row = row_logits.data() + t * V;
        double max_logit = row[0], total = 0.0;
        for (int v = 1; v < V; ++v) max_logit = std::max<double>(max_logit, row[v]);
        for (int v = 0; v < V; ++v) total += std::exp(row[v] - max_logit);
        want_sum += max_logit + std::log(total) - row[lines[i][t + 1]];
      }
      EXPECT_NEAR(sums[i][0], want_sum, 2e-3 * lines[i].size() + 1e-4 * want_sum) << "line " << i << ", budget " << budget;
    }
  }
}

// lm-evaluation-harness's tokens and transformers' float64 log-likelihoods
// for hand-written questions (tests/reference/make_eval_reference.py).
TEST_F(SmolLM2Eval, ChoiceLogLikelihoodsMatchTransformers) {
  const auto reference = nlohmann::json::parse(test::read_text(test::reference_case("eval/choice_reference.json")));
  Transformer transformer(model_->config, *model_->weights, nullptr);
  std::vector<ChoiceRecord> records;
  for (const auto& item : reference.at("records")) {
    records.push_back(record(item.at("context").get<std::string>(), item.at("choices").get<std::vector<std::string>>(),
                             item.at("label").get<int>()));
    const ChoiceTokens tokens = encode_choices(*tokenizer_, records.back().context, records.back().choices, false);
    EXPECT_EQ(tokens.context, item.at("context_tokens").get<std::vector<int>>()) << records.back().context;
    EXPECT_EQ(tokens.continuations, item.at("continuation_tokens").get<std::vector<std::vector<int>>>())
        << records.back().context;
  }
  const ChoiceResult result = evaluate_choice(records, {}, *tokenizer_, transformer_scorer(transformer), ChoiceOptions{});
  for (size_t q = 0; q < records.size(); ++q) {
    const auto want = reference["records"][q].at("loglikelihoods").get<std::vector<double>>();
    const auto& continuations = reference["records"][q].at("continuation_tokens");
    for (size_t c = 0; c < want.size(); ++c) {
      EXPECT_NEAR(result.questions[q].loglikelihoods[c], want[c], 2e-3 * continuations[c].size() + 1e-4 * std::abs(want[c]))
          << "question " << q << " choice " << c;
    }
    std::vector<double> want_norm(want.size());
    size_t best = 0, best_norm = 0;
    for (size_t c = 0; c < want.size(); ++c) {
      want_norm[c] = want[c] / records[q].choices[c].size();
      if (want[c] > want[best]) best = c;
      if (want_norm[c] > want_norm[best_norm]) best_norm = c;
    }
    EXPECT_EQ(result.questions[q].predicted, static_cast<int>(best)) << "question " << q;
    EXPECT_EQ(result.questions[q].predicted_norm, static_cast<int>(best_norm)) << "question " << q;
  }
}

// MMLU-style letters after a shared context: the KV-cache generator's
// next-token log-probabilities equal the packed forward's, per choice.
TEST_F(SmolLM2Eval, GeneratorScorerMatchesPackedForward) {
  const std::vector<ChoiceRecord> records = {
      record("The following are questions about sums.\n\nWhat is 2 + 2?\nA. 3\nB. 4\nC. 5\nD. 22\nAnswer:",
             {" A", " B", " C", " D"}, 1),
      record("Which planet is known as the red planet?\nA. Venus\nB. Mars\nAnswer:", {" A", " B"}, 1)};
  Transformer transformer(model_->config, *model_->weights, nullptr);
  GeneratorScorer generator(model_->config, *model_->weights);
  int calls = 0;
  const NextTokenScorer next_token = [&](const std::vector<int>& context, const std::vector<int>& candidates) {
    ++calls;
    return generator(context, candidates);
  };
  const auto scorer = transformer_scorer(transformer);
  const ChoiceResult shared = evaluate_choice(records, {}, *tokenizer_, scorer, ChoiceOptions{}, {}, next_token);
  const ChoiceResult packed = evaluate_choice(records, {}, *tokenizer_, scorer, ChoiceOptions{});
  EXPECT_EQ(calls, 2);
  for (size_t q = 0; q < records.size(); ++q) {
    for (size_t c = 0; c < records[q].choices.size(); ++c) {
      EXPECT_NEAR(shared.questions[q].loglikelihoods[c], packed.questions[q].loglikelihoods[c], 1e-3) << q << " " << c;
    }
  }
}

// Conversations count only the assistant's tokens; plain text every token
// after the first.
TEST_F(SmolLM2Eval, InstructionDataCountsAssistantTokensOnly) {
  TempDir dir;
  const std::string data = dir.file("chat.json");
  test::write_text(data, R"([{"instruction": "Name a colour.", "input": "", "output": "Blue is a colour."},
                              {"instruction": "Say hi.", "input": "", "output": "Hi there!"}])");
  const ChatTemplate chat = ChatTemplate::choose("", tokenizer_->chat_template());
  const auto sequences = read_perplexity_data(data, *tokenizer_, &chat);
  ASSERT_EQ(sequences.size(), 2u);
  std::vector<int> scored;
  for (size_t i = 0; i < sequences[0].tokens.size(); ++i) {
    if (sequences[0].scored[i]) scored.push_back(sequences[0].tokens[i]);
  }
  const std::string text = tokenizer_->decode(scored, false);
  EXPECT_NE(text.find("Blue is a colour."), std::string::npos) << text;
  EXPECT_EQ(text.find("Name a colour"), std::string::npos) << text;
  EXPECT_EQ(read_perplexity_data(data, *tokenizer_, &chat, 1).size(), 1u);
  EXPECT_THROW(read_perplexity_data(data, *tokenizer_, nullptr), Error);

  test::write_text(dir.file("text.txt"), "The quick brown fox jumps over the lazy dog.");
  const auto text_sequences = read_perplexity_data(dir.file("text.txt"), *tokenizer_, nullptr);
  ASSERT_EQ(text_sequences.size(), 1u);
  EXPECT_EQ(text_sequences[0].tokens, tokenizer_->encode("The quick brown fox jumps over the lazy dog.", true));
  EXPECT_EQ(text_sequences[0].scored_count(), static_cast<int64_t>(text_sequences[0].tokens.size()) - 1);
}

// ---------------------------------------------------------------------- CLI ---

std::string shared_eval(const std::string& name) {
  return std::string(QFT_SOURCE_DIR) + "/../shared/data/eval/" + name;
}

TEST_F(SmolLM2Eval, CliChoiceOnArcEasyPrintsJson) {
  const std::string data = shared_eval("arc_easy_test.jsonl");
  if (!std::filesystem::exists(data)) GTEST_SKIP() << data << " is absent";
  TempDir dir;
  const auto result = run_command(kQft + " eval --model " + *path_ + " --data " + data +
                                  " --task choice --limit 5 --json --threads 2 --details " + dir.file("d.jsonl"));
  ASSERT_EQ(result.exit_code, 0) << result.output;
  const auto out = nlohmann::json::parse(result.output);
  EXPECT_EQ(out.at("task"), "choice");
  EXPECT_EQ(out.at("count"), 5);
  EXPECT_EQ(out.at("shots"), 0);
  for (const char* key : {"acc", "acc_norm"}) {
    const double value = out.at(key).get<double>();
    EXPECT_TRUE(value >= 0.0 && value <= 1.0) << key;
    EXPECT_DOUBLE_EQ(value * 5, std::round(value * 5)) << key;
  }
  EXPECT_GT(out.at("tokens_per_second").get<double>(), 0.0);
  EXPECT_FALSE(out.contains("subjects"));
  // One detail line per question, log-likelihoods negative.
  const std::string details = test::read_text(dir.file("d.jsonl"));
  EXPECT_EQ(std::count(details.begin(), details.end(), '\n'), 5);
  const auto first = nlohmann::json::parse(details.substr(0, details.find('\n')));
  EXPECT_EQ(first.at("line"), 1);
  for (double value : first.at("loglikelihoods").get<std::vector<double>>()) EXPECT_LT(value, 0.0);
}

TEST_F(SmolLM2Eval, CliMmluFewShotReportsSubjects) {
  const std::string data = shared_eval("mmlu_test.jsonl"), dev = shared_eval("mmlu_dev.jsonl");
  if (!std::filesystem::exists(data) || !std::filesystem::exists(dev)) GTEST_SKIP() << data << " is absent";
  const auto result = run_command(kQft + " eval --model " + *path_ + " --data " + data + " --fewshot-data " + dev +
                                  " --shots 1 --task choice --limit 2 --json");
  ASSERT_EQ(result.exit_code, 0) << result.output;
  const auto out = nlohmann::json::parse(result.output);
  EXPECT_EQ(out.at("count"), 2);
  EXPECT_EQ(out.at("shots"), 1);
  EXPECT_EQ(out.at("subjects").at("abstract_algebra").at("count"), 2);
  EXPECT_DOUBLE_EQ(out.at("macro_acc").get<double>(), out.at("acc").get<double>());
}

TEST_F(SmolLM2Eval, CliPerplexityOnText) {
  TempDir dir;
  std::string text;
  for (int i = 0; i < 20; ++i) text += "The cat sat on the mat and looked out of the window at the rain. ";
  test::write_text(dir.file("text.txt"), text);
  const auto result = run_command(kQft + " eval --model " + *path_ + " --data " + dir.file("text.txt") +
                                  " --task perplexity --seq-len 64 --json");
  ASSERT_EQ(result.exit_code, 0) << result.output;
  const auto out = nlohmann::json::parse(result.output);
  const int64_t tokens = static_cast<int64_t>(tokenizer_->encode(text, true).size()) - 1;
  EXPECT_EQ(out.at("tokens").get<int64_t>(), tokens);
  EXPECT_EQ(out.at("windows").get<int64_t>(), (tokens + 62) / 63);
  // A repeated sentence is easy after its first copy.
  EXPECT_GT(out.at("perplexity").get<double>(), 1.0);
  EXPECT_LT(out.at("perplexity").get<double>(), 5.0);
  EXPECT_NEAR(std::exp(out.at("loss").get<double>()), out.at("perplexity").get<double>(), 1e-9);
}

// The data is checked before the model (here a path that does not exist) is read.
TEST(EvalCli, BadInputFailsWithFileAndLine) {
  TempDir dir;
  const std::string model = dir.file("no-model.gguf");
  const std::string data = dir.file("bad.jsonl");
  test::write_text(data, "{\"context\": \"Q\", \"choices\": [\" a\", \" b\"], \"label\": 1}\n"
                         "{\"context\": \"Q\", \"choices\": [\" a\", \" b\"], \"label\": 5}\n");
  auto result = run_command(kQft + " eval --model " + model + " --data " + data + " --task choice");
  EXPECT_NE(result.exit_code, 0);
  EXPECT_NE(result.output.find(data + ":2: label 5 is out of range for 2 choices"), std::string::npos) << result.output;
  test::write_text(data, "{\"context\": \"Q\", \"choices\": [\" a\"], \"label\": 0}\n{oops\n");
  result = run_command(kQft + " eval --model " + model + " --data " + data + " --task choice");
  EXPECT_NE(result.exit_code, 0);
  EXPECT_NE(result.output.find(data + ":2: not valid JSON"), std::string::npos) << result.output;
  result = run_command(kQft + " eval --model " + model + " --data " + data + " --task rank");
  EXPECT_NE(result.exit_code, 0);
  EXPECT_NE(result.output.find("--task must be perplexity or choice"), std::string::npos) << result.output;
  result = run_command(kQft + " eval --help");
  EXPECT_EQ(result.exit_code, 0);
  EXPECT_NE(result.output.find("usage: qft eval"), std::string::npos);
}

}  // namespace
}  // namespace qft
