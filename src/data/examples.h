#pragma once
// Training examples: token ids with a per-token flag saying whether the token
// is a prediction target. Conversations are rendered with the chat template
// and only the assistant's pieces are trained on (FastChat's masking), unless
// train_on_prompt; plain text is trained on throughout. Examples longer than
// the sequence length are split into segments.
#include <cstdint>
#include <random>
#include <vector>

#include "data/batch.h"
#include "data/instruction_data.h"
#include "text/chat_template.h"
#include "text/tokenizer.h"

namespace qft {

struct Example {
  std::vector<int> tokens;
  std::vector<uint8_t> trained;  // (tokens): 1 where the token is a target
};

// A conversation's tokens, trained where the template's pieces are the
// assistant's (everywhere with train_on_prompt), after the tokenizer's BOS
// when the template does not write it.
Example encode_conversation(const std::vector<ChatMessage>& messages, const Tokenizer& tokenizer,
                            const ChatTemplate& chat, bool train_on_prompt);

// chat may be null for plain-text data.
Example tokenize_record(const DataRecord& record, const Tokenizer& tokenizer, const ChatTemplate* chat,
                        bool train_on_prompt);

// Consecutive segments of at most seq_len tokens; segments with no target
// (nothing to learn) are dropped.
std::vector<Example> split_into_segments(const Example& example, int seq_len);

// Packed sequences whose targets are the next token where that token is
// trained, −1 elsewhere.
Batch make_training_batch(const std::vector<const Example*>& examples);

// Fisher–Yates with a 64-bit Mersenne Twister: the same order on every
// platform for a given seed.
void shuffle_indices(std::vector<size_t>& indices, uint64_t seed);

}  // namespace qft
