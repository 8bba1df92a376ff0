#pragma once
// A tiny instruction-tuning task for the end-to-end fine-tune tests.
#include <string>

namespace qft::test {

// An HF directory for end-to-end fine-tunes: a 2-layer LLaMA at SmolLM2's
// vocabulary with random weights (its config.json written to `config`
// first), SmolLM2's tokenizer.json and ChatML template.
void write_tiny_chat_model(const std::string& directory, const std::string& config);
// `count` Alpaca records of varied lengths, as a JSON array.
void write_alpaca_records(const std::string& path, int count);

}  // namespace qft::test
