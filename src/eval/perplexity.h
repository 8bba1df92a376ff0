#pragma once
// Perplexity: the mean next-token loss (nats per token) of a model on plain
// text or on the assistant's turns of instruction data.
#include <cstdint>
#include <string>
#include <vector>

#include "eval/scorer.h"
#include "text/chat_template.h"
#include "text/tokenizer.h"

namespace qft {

// The token sequences of an evaluation file, each with the tokens that count.
//  * Plain text (a .txt file is one text; JSON/JSONL {"text"} records one
//    each) is encoded with the tokenizer's special tokens (a BOS where the
//    tokenizer adds one) and every token after the first counts.
//  * Conversations (Alpaca, ShareGPT, messages; src/data/instruction_data.h)
//    are rendered with `chat` (required for them); each piece is encoded on
//    its own without special tokens, so the assistant's tokens are known
//    exactly, and only those count. Templates that do not write the BOS
//    themselves (all but Llama-2 and Llama-3) get the tokenizer's leading BOS,
//    if it adds one.
// A malformed record throws naming the file and line. `limit` > 0 keeps the
// first `limit` records.
std::vector<ScoredSequence> read_perplexity_data(const std::string& path, const Tokenizer& tokenizer,
                                                 const ChatTemplate* chat, int limit = 0);

// Splits a sequence longer than `seq_len` tokens into windows of `seq_len`
// that overlap by one token, so every token but the very first is predicted
// exactly once (the context restarts at each window, as it must for a model
// with a bounded length); windows with nothing scored are dropped.
std::vector<ScoredSequence> split_into_windows(const ScoredSequence& sequence, int seq_len);

struct PerplexityResult {
  double mean_loss = 0.0;   // nats per scored token
  double perplexity = 0.0;  // exp(mean_loss)
  int64_t tokens = 0;       // scored tokens
  int64_t sequences = 0;    // input sequences
  int64_t windows = 0;      // after splitting to seq_len
};

// Windows of every sequence, scored in packed batches of about batch_tokens.
PerplexityResult evaluate_perplexity(const std::vector<ScoredSequence>& sequences, const TokenScorer& scorer,
                                     int seq_len, size_t batch_tokens,
                                     const std::function<void(size_t, size_t)>& progress = {});

}  // namespace qft
