#include "eval/choice.h"

#include <algorithm>
#include <cmath>
#include <fstream>
#include <nlohmann/json.hpp>
#include <random>

#include "core/error.h"
#include "dist/world.h"

namespace qft {
namespace {

using nlohmann::json;

ChoiceRecord parse_choice_record(const std::string& text, int line) {
  json record;
  try {
    record = json::parse(text);
  } catch (const json::exception&) {
    fail("not valid JSON");
  }
  if (!record.is_object()) fail("a record must be a JSON object");
  ChoiceRecord parsed;
  parsed.line = line;
  if (!record.contains("context") || !record["context"].is_string()) fail("missing or non-string 'context'");
  parsed.context = record["context"].get<std::string>();
  if (!record.contains("choices") || !record["choices"].is_array() || record["choices"].empty()) {
    fail("'choices' must be a non-empty list of strings");
  }
  for (const json& choice : record["choices"]) {
    if (!choice.is_string()) fail("'choices' must be a non-empty list of strings");
    parsed.choices.push_back(choice.get<std::string>());
    // acc_norm divides by the byte length, and an empty choice has no tokens to score.
    if (parsed.choices.back().empty()) fail("choice ", parsed.choices.size() - 1, " is empty");
  }
  if (!record.contains("label") || !record["label"].is_number_integer()) fail("missing or non-integer 'label'");
  const int64_t label = record["label"].get<int64_t>();
  if (label < 0 || label >= static_cast<int64_t>(parsed.choices.size())) {
    fail("label ", label, " is out of range for ", parsed.choices.size(), " choices");
  }
  parsed.label = static_cast<int>(label);
  if (record.contains("subject")) {
    if (!record["subject"].is_string()) fail("'subject' must be a string");
    parsed.subject = record["subject"].get<std::string>();
  }
  return parsed;
}

// Python's str.isspace for the ASCII whitespace lm-eval's rstrip removes in practice.
bool is_space(char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v'; }

// Text up to and including the first blank line, or "" when there is none.
std::string leading_paragraph(const std::string& text) {
  const size_t blank = text.find("\n\n");
  return blank == std::string::npos ? std::string() : text.substr(0, blank + 2);
}

int argmax(const std::vector<double>& values) {
  int best = 0;
  for (size_t i = 1; i < values.size(); ++i) {
    if (values[i] > values[best]) best = static_cast<int>(i);
  }
  return best;
}

double stderr_of_mean(int64_t successes, int64_t count) {
  if (count < 2) return 0.0;
  const double p = static_cast<double>(successes) / static_cast<double>(count);
  return std::sqrt(p * (1.0 - p) / static_cast<double>(count - 1));
}

}  // namespace

std::vector<ChoiceRecord> read_choice_data(const std::string& path) {
  std::ifstream file(path, std::ios::binary);
  if (!file) fail(path, ": cannot open");
  std::vector<ChoiceRecord> records;
  std::string text;
  for (int line = 1; std::getline(file, text); ++line) {
    if (text.find_first_not_of(" \t\r") == std::string::npos) continue;
    try {
      records.push_back(parse_choice_record(text, line));
      records.back().file = path;
    } catch (const Error& error) {
      fail(path, ":", line, ": ", error.what());
    }
  }
  if (records.empty()) fail(path, ": no records");
  return records;
}

ChoiceTokens encode_choices(const Tokenizer& tokenizer, const std::string& context,
                            const std::vector<std::string>& choices, bool add_bos) {
  size_t kept = context.size();
  while (kept > 0 && is_space(context[kept - 1])) --kept;
  const std::string stem = context.substr(0, kept), moved = context.substr(kept);
  std::vector<int> prefix;
  if (add_bos || stem.empty()) {
    const auto bos = tokenizer.bos_id() ? tokenizer.bos_id() : tokenizer.eos_id();
    if (!bos) fail("the tokenizer has neither a BOS nor an EOS token to begin the sequence with");
    prefix.push_back(*bos);
  }
  auto encode = [&](const std::string& text) {
    std::vector<int> ids = prefix;
    if (!text.empty()) {
      const std::vector<int> encoded = tokenizer.encode(text, false);
      ids.insert(ids.end(), encoded.begin(), encoded.end());
    }
    return ids;
  };
  ChoiceTokens tokens;
  tokens.context = encode(stem);
  for (const std::string& choice : choices) {
    const std::vector<int> whole = encode(stem + moved + choice);
    if (whole.size() <= tokens.context.size()) {
      fail("the choice '", choice, "' adds no token after its context (it merges into the context's tokens)");
    }
    tokens.continuations.emplace_back(whole.begin() + tokens.context.size(), whole.end());
  }
  return tokens;
}

std::string fewshot_context(const ChoiceRecord& record, const std::vector<const ChoiceRecord*>& examples) {
  if (examples.empty()) return record.context;
  std::string header = leading_paragraph(record.context);
  for (const ChoiceRecord* example : examples) {
    if (header.empty() || example->context.compare(0, header.size(), header) != 0) header.clear();
  }
  std::string prompt = header;
  for (const ChoiceRecord* example : examples) {
    prompt += example->context.substr(header.size()) + example->choices[example->label] + "\n\n";
  }
  return prompt + record.context.substr(header.size());
}

std::vector<const ChoiceRecord*> pick_fewshot(const std::vector<ChoiceRecord>& records, size_t index,
                                              const std::vector<ChoiceRecord>& fewshot, int shots, uint64_t seed) {
  if (shots <= 0) return {};
  const ChoiceRecord& record = records.at(index);
  std::vector<const ChoiceRecord*> candidates;
  const std::vector<ChoiceRecord>& pool = fewshot.empty() ? records : fewshot;
  for (size_t i = 0; i < pool.size(); ++i) {
    if (fewshot.empty() && i == index) continue;
    if (pool[i].subject == record.subject) candidates.push_back(&pool[i]);
  }
  if (candidates.size() < static_cast<size_t>(shots)) {
    fail(shots, " shots asked but only ", candidates.size(), " other examples",
         record.subject.empty() ? std::string() : " of subject '" + record.subject + "'",
         fewshot.empty() ? " in the same file" : " in the few-shot file");
  }
  if (fewshot.empty()) {
    // A partial Fisher–Yates: the first `shots` positions become a uniform draw.
    std::mt19937_64 generator(seed ^ (0x9E3779B97F4A7C15ull * (index + 1)));
    for (int i = 0; i < shots; ++i) {
      const size_t j = i + static_cast<size_t>(generator() % (candidates.size() - i));
      std::swap(candidates[i], candidates[j]);
    }
  }
  candidates.resize(shots);
  return candidates;
}

double ChoiceScore::acc() const { return count ? static_cast<double>(correct) / count : 0.0; }
double ChoiceScore::acc_norm() const { return count ? static_cast<double>(correct_norm) / count : 0.0; }
double ChoiceScore::acc_stderr() const { return stderr_of_mean(correct, count); }
double ChoiceScore::acc_norm_stderr() const { return stderr_of_mean(correct_norm, count); }

QuestionResult judge_question(const ChoiceRecord& record, const std::vector<double>& loglikelihoods) {
  if (loglikelihoods.size() != record.choices.size()) {
    fail(record.file, ":", record.line, ": ", loglikelihoods.size(), " log-likelihoods for ", record.choices.size(), " choices");
  }
  QuestionResult result;
  result.line = record.line;
  result.label = record.label;
  result.loglikelihoods = loglikelihoods;
  result.predicted = argmax(loglikelihoods);
  std::vector<double> per_byte(loglikelihoods.size());
  for (size_t i = 0; i < per_byte.size(); ++i) per_byte[i] = loglikelihoods[i] / static_cast<double>(record.choices[i].size());
  result.predicted_norm = argmax(per_byte);
  return result;
}

ChoiceResult summarize_choices(const std::vector<ChoiceRecord>& records, std::vector<QuestionResult> questions) {
  if (records.size() != questions.size()) fail(records.size(), " records but ", questions.size(), " results");
  ChoiceResult result;
  for (size_t i = 0; i < records.size(); ++i) {
    const QuestionResult& question = questions[i];
    for (ChoiceScore* score : {&result.overall, records[i].subject.empty() ? nullptr : &result.subjects[records[i].subject]}) {
      if (!score) continue;
      score->count += 1;
      score->correct += question.predicted == question.label;
      score->correct_norm += question.predicted_norm == question.label;
    }
  }
  for (const auto& [subject, score] : result.subjects) {
    result.macro_acc += score.acc() / result.subjects.size();
    result.macro_acc_norm += score.acc_norm() / result.subjects.size();
  }
  result.questions = std::move(questions);
  return result;
}

std::vector<size_t> select_records(const std::vector<ChoiceRecord>& records, const ChoiceOptions& options) {
  std::vector<size_t> selected;
  std::map<std::string, int> per_subject;
  for (size_t i = 0; i < records.size(); ++i) {
    if (options.limit > 0 && static_cast<int>(selected.size()) >= options.limit) break;
    if (options.limit_per_subject > 0 && per_subject[records[i].subject]++ >= options.limit_per_subject) continue;
    selected.push_back(i);
  }
  return selected;
}

ChoiceResult evaluate_choice(const std::vector<ChoiceRecord>& records, const std::vector<ChoiceRecord>& fewshot,
                             const Tokenizer& tokenizer, const TokenScorer& scorer, const ChoiceOptions& options,
                             const std::function<void(size_t, size_t)>& progress, const NextTokenScorer& next_token) {
  if (options.shots < 0) fail("the number of shots must be at least 0, got ", options.shots);
  const std::vector<size_t> selected = select_records(records, options);
  if (selected.empty()) fail("no record selected");
  const size_t total = selected.size();
  std::vector<std::vector<double>> loglikelihoods(total);
  // Questions for the packed path: their choice sequences, and where they go.
  std::vector<std::vector<ScoredSequence>> groups;
  std::vector<size_t> group_question;
  // Data-parallel, rank r takes the next-token questions r, r + N, …
  const dist::World& world = dist::world();
  std::vector<size_t> next_token_questions;
  size_t done = 0;
  for (size_t q = 0; q < total; ++q) {
    const ChoiceRecord& record = records[selected[q]];
    try {
      const std::string context = fewshot_context(record, pick_fewshot(records, selected[q], fewshot, options.shots, options.seed));
      const ChoiceTokens tokens = encode_choices(tokenizer, context, record.choices, options.add_bos);
      const bool single_tokens = std::all_of(tokens.continuations.begin(), tokens.continuations.end(),
                                             [](const std::vector<int>& c) { return c.size() == 1; });
      const bool fits = options.max_length <= 0 || tokens.context.size() <= static_cast<size_t>(options.max_length);
      if (next_token && single_tokens && fits) {
        std::vector<int> candidates;
        for (const auto& continuation : tokens.continuations) candidates.push_back(continuation[0]);
        const bool mine = next_token_questions.size() % world.size() == static_cast<size_t>(world.rank());
        next_token_questions.push_back(q);
        loglikelihoods[q] = mine ? next_token(tokens.context, candidates) : std::vector<double>(candidates.size(), 0.0);
        if (progress) progress(++done, total);
        continue;
      }
      std::vector<ScoredSequence> group;
      for (const std::vector<int>& continuation : tokens.continuations) {
        ScoredSequence sequence;
        // The model reads all but the last token: keep at most max_length + 1.
        size_t skip = 0;
        const size_t length = tokens.context.size() + continuation.size();
        if (options.max_length > 0 && length > static_cast<size_t>(options.max_length) + 1) {
          skip = length - options.max_length - 1;
          if (skip >= tokens.context.size()) {
            fail("a choice of ", continuation.size(), " tokens does not fit in ", options.max_length, " tokens");
          }
        }
        sequence.tokens.assign(tokens.context.begin() + skip, tokens.context.end());
        sequence.scored.assign(sequence.tokens.size(), 0);
        sequence.tokens.insert(sequence.tokens.end(), continuation.begin(), continuation.end());
        sequence.scored.insert(sequence.scored.end(), continuation.size(), 1);
        group.push_back(std::move(sequence));
      }
      groups.push_back(std::move(group));
      group_question.push_back(q);
    } catch (const Error& error) {
      fail(record.file, ":", record.line, ": ", error.what());
    }
  }
  std::vector<std::vector<double>> shared;
  for (size_t q : next_token_questions) shared.push_back(std::move(loglikelihoods[q]));
  world.sum(shared);
  for (size_t i = 0; i < next_token_questions.size(); ++i) loglikelihoods[next_token_questions[i]] = std::move(shared[i]);
  const size_t single_done = done;
  std::function<void(size_t, size_t)> group_progress;
  if (progress) group_progress = [&](size_t groups_done, size_t) { progress(single_done + groups_done, total); };
  const auto losses = score_groups(groups, scorer, options.batch_tokens, group_progress);
  for (size_t g = 0; g < groups.size(); ++g) {
    for (double loss : losses[g]) loglikelihoods[group_question[g]].push_back(-loss);
  }
  std::vector<ChoiceRecord> evaluated;
  std::vector<QuestionResult> questions;
  for (size_t q = 0; q < total; ++q) {
    evaluated.push_back(records[selected[q]]);
    questions.push_back(judge_question(evaluated.back(), loglikelihoods[q]));
  }
  return summarize_choices(evaluated, std::move(questions));
}

}  // namespace qft
