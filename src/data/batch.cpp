#include "data/batch.h"

#include <fstream>
#include <sstream>

#include "core/error.h"

namespace qft {

Batch make_batch(const std::vector<TokenSequence>& sequences) {
  Batch batch;
  for (const TokenSequence& sequence : sequences) {
    const int start = batch.size();
    const int length = static_cast<int>(sequence.size());
    batch.sequences.push_back({start, length});
    batch.max_length = std::max(batch.max_length, length);
    for (int i = 0; i < length; ++i) {
      batch.tokens.push_back(sequence[i]);
      batch.positions.push_back(i);
      batch.targets.push_back(i + 1 < length ? sequence[i + 1] : -1);
    }
    batch.predicted += std::max(length - 1, 0);
  }
  return batch;
}

TokenSequence parse_token_ids(const std::string& text, int vocab_size, const std::string& where) {
  std::istringstream fields(text);
  TokenSequence sequence;
  for (std::string field; fields >> field;) {
    size_t used = 0;
    long long id = -1;
    try {
      id = std::stoll(field, &used);
    } catch (const std::exception&) {
      used = 0;
    }
    if (used != field.size()) fail(where, ": '", field, "' is not a token id");
    if (id < 0 || id >= vocab_size) fail(where, ": token id ", id, " is outside the vocabulary [0, ", vocab_size, ")");
    sequence.push_back(static_cast<int>(id));
  }
  return sequence;
}

std::vector<TokenSequence> read_token_file(const std::string& path, int vocab_size) {
  std::ifstream file(path);
  if (!file) fail(path, ": cannot open");
  std::vector<TokenSequence> sequences;
  std::string line;
  for (int line_number = 1; std::getline(file, line); ++line_number) {
    TokenSequence sequence = parse_token_ids(line, vocab_size, path + ":" + std::to_string(line_number));
    if (!sequence.empty()) sequences.push_back(std::move(sequence));
  }
  if (sequences.empty()) fail(path, ": no token sequences");
  return sequences;
}

}  // namespace qft
