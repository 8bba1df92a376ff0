#pragma once
// Multiple-choice evaluation as lm-evaluation-harness does it: each choice is
// scored by the summed log-likelihood of its tokens after the context; `acc`
// takes the argmax of that sum, `acc_norm` the argmax of the sum divided by
// the choice's length in bytes.
//
// Records are JSON Lines (the format of shared/data/eval):
//   {"context": str, "choices": [str, ...], "label": int, "subject": str (optional)}
// where each choice carries its own leading space.
#include <cstdint>
#include <functional>
#include <map>
#include <string>
#include <vector>

#include "eval/scorer.h"
#include "text/tokenizer.h"

namespace qft {

struct ChoiceRecord {
  std::string file;  // where it was read, for messages
  int line = 0;      // 1-based line of its file
  std::string context;
  std::vector<std::string> choices;
  int label = 0;
  std::string subject;  // MMLU's subject; empty elsewhere
};

// Every record; a malformed line (not JSON, a missing or mistyped field, no
// choices, an empty choice, a label out of range) throws naming file:line.
std::vector<ChoiceRecord> read_choice_data(const std::string& path);

// lm-evaluation-harness's token pairs (TemplateLM._encode_pair): trailing
// whitespace of the context moves to the front of each continuation; the
// context is encoded alone, context + continuation whole, and a continuation's
// tokens are those of the whole after the context's token count. The model
// then reads context tokens followed by those continuation tokens. No special
// tokens unless add_bos (lm-eval's default for causal models); an empty
// context becomes the BOS (or, without one, the EOS) so the first choice
// token has something to follow.
struct ChoiceTokens {
  std::vector<int> context;
  std::vector<std::vector<int>> continuations;  // one per choice, each non-empty
};
ChoiceTokens encode_choices(const Tokenizer& tokenizer, const std::string& context,
                            const std::vector<std::string>& choices, bool add_bos);

// K solved examples before a question: each example is its context followed
// by its correct choice, examples and question separated by a blank line.
// When the question's context begins with a paragraph (text up to its first
// blank line) that every example also begins with — MMLU's "The following
// are multiple choice questions (with answers) about …" — that paragraph is
// written once, at the top, as lm-eval's task description.
std::string fewshot_context(const ChoiceRecord& record, const std::vector<const ChoiceRecord*>& examples);

// The examples for records[index]: with a few-shot file (non-empty
// `fewshot`), its first `shots` records of the same subject in file order (as
// lm-eval takes MMLU's dev examples); otherwise `shots` other records of the
// same file and subject drawn without replacement by a generator seeded with
// (seed, index), so a record's examples do not depend on --limit.
std::vector<const ChoiceRecord*> pick_fewshot(const std::vector<ChoiceRecord>& records, size_t index,
                                              const std::vector<ChoiceRecord>& fewshot, int shots, uint64_t seed);

struct ChoiceOptions {
  int shots = 0;
  uint64_t seed = 1234;  // few-shot draws from the evaluated file
  // Records evaluated: the first `limit` in file order (0: all); with
  // limit_per_subject, the first that many of each subject (both may apply).
  int limit = 0;
  int limit_per_subject = 0;
  bool add_bos = false;
  // Longest sequence the model reads (context + choice, without its last
  // token); longer contexts lose tokens from the left as in lm-eval. 0: no limit.
  int max_length = 0;
  size_t batch_tokens = 4096;  // packed tokens per forward (whole questions only)
};

struct QuestionResult {
  int line = 0;
  int label = 0;
  std::vector<double> loglikelihoods;  // per choice: Σ log p(choice tokens | context)
  int predicted = 0;                   // argmax of the sums (first of equals)
  int predicted_norm = 0;              // argmax of sum / bytes of the choice
};

struct ChoiceScore {
  int64_t count = 0, correct = 0, correct_norm = 0;
  double acc() const;
  double acc_norm() const;
  // Standard errors of the means (sample standard deviation / sqrt(n), as lm-eval).
  double acc_stderr() const;
  double acc_norm_stderr() const;
};

struct ChoiceResult {
  ChoiceScore overall;
  std::map<std::string, ChoiceScore> subjects;  // empty unless records name a subject
  double macro_acc = 0.0, macro_acc_norm = 0.0;  // unweighted mean over subjects
  std::vector<QuestionResult> questions;
};

// The predictions of one question from its choices' log-likelihoods.
QuestionResult judge_question(const ChoiceRecord& record, const std::vector<double>& loglikelihoods);
// Totals, per-subject scores and macro averages.
ChoiceResult summarize_choices(const std::vector<ChoiceRecord>& records, std::vector<QuestionResult> questions);

// The records chosen by options.limit / limit_per_subject (indices into records).
std::vector<size_t> select_records(const std::vector<ChoiceRecord>& records, const ChoiceOptions& options);

// Scores the selected records, with options.shots examples each: all choices
// of a question in one packed forward, several questions per batch. With
// `next_token`, a question whose choices are each one token after the context
// is scored by one forward of the context instead.
ChoiceResult evaluate_choice(const std::vector<ChoiceRecord>& records, const std::vector<ChoiceRecord>& fewshot,
                             const Tokenizer& tokenizer, const TokenScorer& scorer, const ChoiceOptions& options,
                             const std::function<void(size_t, size_t)>& progress = {},
                             const NextTokenScorer& next_token = {});

}  // namespace qft
