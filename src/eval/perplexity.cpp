#include "eval/perplexity.h"

#include <cmath>

#include "core/error.h"
#include "data/examples.h"
#include "data/instruction_data.h"

namespace qft {
namespace {

void append(ScoredSequence& sequence, const std::vector<int>& tokens, bool scored) {
  sequence.tokens.insert(sequence.tokens.end(), tokens.begin(), tokens.end());
  sequence.scored.insert(sequence.scored.end(), tokens.size(), scored ? 1 : 0);
}

ScoredSequence encode_record(const DataRecord& record, const Tokenizer& tokenizer, const ChatTemplate* chat) {
  ScoredSequence sequence;
  if (record.messages.empty()) {
    append(sequence, tokenizer.encode(record.text, true), true);
    return sequence;
  }
  if (!chat) fail("conversations need a chat template (the model has none; give one with --chat-template)");
  const Example example = encode_conversation(record.messages, tokenizer, *chat, false);
  sequence.tokens = example.tokens;
  sequence.scored = example.trained;
  return sequence;
}

}  // namespace

std::vector<ScoredSequence> read_perplexity_data(const std::string& path, const Tokenizer& tokenizer,
                                                 const ChatTemplate* chat, int limit) {
  const DataSet data = read_instruction_data(path, std::nullopt, /*strict=*/true);
  std::vector<ScoredSequence> sequences;
  for (const DataRecord& record : data.records) {
    if (limit > 0 && static_cast<int>(sequences.size()) >= limit) break;
    try {
      sequences.push_back(encode_record(record, tokenizer, chat));
    } catch (const Error& error) {
      fail(path, ":", record.line, ": ", error.what());
    }
  }
  return sequences;
}

std::vector<ScoredSequence> split_into_windows(const ScoredSequence& sequence, int seq_len) {
  if (seq_len < 2) fail("the window length must be at least 2 tokens, got ", seq_len);
  std::vector<ScoredSequence> windows;
  const size_t n = sequence.tokens.size(), length = static_cast<size_t>(seq_len);
  for (size_t begin = 0; begin < n; begin += length - 1) {
    const size_t end = std::min(n, begin + length);
    ScoredSequence window;
    window.tokens.assign(sequence.tokens.begin() + begin, sequence.tokens.begin() + end);
    window.scored.assign(sequence.scored.begin() + begin, sequence.scored.begin() + end);
    if (window.scored_count() > 0) windows.push_back(std::move(window));
    if (end == n) break;
  }
  return windows;
}

PerplexityResult evaluate_perplexity(const std::vector<ScoredSequence>& sequences, const TokenScorer& scorer,
                                     int seq_len, size_t batch_tokens,
                                     const std::function<void(size_t, size_t)>& progress) {
  PerplexityResult result;
  result.sequences = static_cast<int64_t>(sequences.size());
  std::vector<std::vector<ScoredSequence>> groups;
  for (const ScoredSequence& sequence : sequences) {
    for (ScoredSequence& window : split_into_windows(sequence, seq_len)) {
      result.tokens += window.scored_count();
      groups.push_back({std::move(window)});
    }
  }
  result.windows = static_cast<int64_t>(groups.size());
  if (result.tokens == 0) fail("nothing to score: no sequence has a counted token after its first");
  double total = 0.0;
  for (const auto& sums : score_groups(groups, scorer, batch_tokens, progress)) total += sums[0];
  result.mean_loss = total / static_cast<double>(result.tokens);
  result.perplexity = std::exp(result.mean_loss);
  return result;
}

}  // namespace qft
