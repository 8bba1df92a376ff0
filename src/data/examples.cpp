#include "data/examples.h"

#include <algorithm>

#include "core/error.h"

namespace qft {
namespace {

void append(Example& example, const std::vector<int>& tokens, bool trained) {
  example.tokens.insert(example.tokens.end(), tokens.begin(), tokens.end());
  example.trained.insert(example.trained.end(), tokens.size(), trained ? 1 : 0);
}

// The BOS a plain encode puts first, if any: templates that do not write it
// as text still begin with it.
std::vector<int> leading_bos(const Tokenizer& tokenizer) {
  std::vector<int> specials = tokenizer.encode("", true);
  const auto bos = tokenizer.bos_id();
  if (specials.empty() || !bos || specials.front() != *bos) return {};
  return {*bos};
}

}  // namespace

Example encode_conversation(const std::vector<ChatMessage>& messages, const Tokenizer& tokenizer,
                            const ChatTemplate& chat, bool train_on_prompt) {
  Example example;
  const ChatTokens tokens = chat_tokens_of(tokenizer);
  const std::vector<ChatPiece> pieces = chat.render(messages, false, tokens);
  if (!writes_bos(pieces, tokens)) append(example, leading_bos(tokenizer), false);
  // Each piece is encoded on its own so the mask lines up with the text
  // exactly; the template's special tokens are recognised inside the pieces.
  for (const ChatPiece& piece : pieces) {
    append(example, tokenizer.encode(piece.text, false), piece.assistant || train_on_prompt);
  }
  return example;
}

Example tokenize_record(const DataRecord& record, const Tokenizer& tokenizer, const ChatTemplate* chat,
                        bool train_on_prompt) {
  if (record.messages.empty()) {
    Example example;
    append(example, tokenizer.encode(record.text, true), true);
    return example;
  }
  if (!chat) fail("conversations need a chat template");
  return encode_conversation(record.messages, tokenizer, *chat, train_on_prompt);
}

std::vector<Example> split_into_segments(const Example& example, int seq_len) {
  if (seq_len < 2) fail("the sequence length must be at least 2");
  std::vector<Example> segments;
  for (size_t begin = 0; begin < example.tokens.size(); begin += seq_len) {
    const size_t end = std::min(example.tokens.size(), begin + static_cast<size_t>(seq_len));
    Example segment;
    segment.tokens.assign(example.tokens.begin() + begin, example.tokens.begin() + end);
    segment.trained.assign(example.trained.begin() + begin, example.trained.begin() + end);
    // The first token of a segment has no context in it, so it cannot be a target.
    if (std::count(segment.trained.begin() + 1, segment.trained.end(), 1) > 0) segments.push_back(std::move(segment));
  }
  return segments;
}

Batch make_training_batch(const std::vector<const Example*>& examples) {
  std::vector<TokenSequence> sequences;
  for (const Example* example : examples) sequences.push_back(example->tokens);
  Batch batch = make_batch(sequences);
  batch.predicted = 0;
  for (size_t s = 0; s < examples.size(); ++s) {
    const auto& span = batch.sequences[s];
    for (int i = 0; i + 1 < span.length; ++i) {
      int& target = batch.targets[span.start + i];
      if (!examples[s]->trained[i + 1]) target = -1;
      batch.predicted += target >= 0;
    }
  }
  return batch;
}

void shuffle_indices(std::vector<size_t>& indices, uint64_t seed) {
  std::mt19937_64 generator(seed);
  for (size_t i = indices.size(); i > 1; --i) {
    const size_t j = static_cast<size_t>(generator() % i);
    std::swap(indices[i - 1], indices[j]);
  }
}

}  // namespace qft
