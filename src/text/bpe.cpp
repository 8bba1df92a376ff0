#include "text/bpe.h"

#include <cstdio>
#include <queue>

#include "core/error.h"
#include "text/unicode.h"

namespace qft::text {
namespace {

uint64_t pair_key(int left, int right) {
  return (static_cast<uint64_t>(static_cast<uint32_t>(left)) << 32) | static_cast<uint32_t>(right);
}

// A symbol of a word being merged: a doubly linked list over a vector.
struct Symbol {
  int id;            // RankBpe: token id; ScoreBpe: unused
  size_t begin, length;  // bytes of the word it covers
  int prev, next;
};

std::vector<Symbol> char_symbols(std::string_view word) {
  std::vector<Symbol> symbols;
  for (size_t pos = 0; pos < word.size();) {
    const size_t begin = pos;
    next_code_point(word, pos);
    const int index = static_cast<int>(symbols.size());
    symbols.push_back(Symbol{-1, begin, pos - begin, index - 1, index + 1});
  }
  if (!symbols.empty()) symbols.back().next = -1;
  return symbols;
}

void unlink(std::vector<Symbol>& symbols, int right) {
  Symbol& gone = symbols[right];
  if (gone.next >= 0) symbols[gone.next].prev = gone.prev;
  symbols[gone.prev].next = gone.next;
  gone.length = 0;
}

}  // namespace

void Vocabulary::add(const std::string& token, int id, const std::string& where) {
  // Ids index a table: a malformed file's id of 2·10⁹ would ask for gigabytes
  // (found by fuzz/tokenizer_json_fuzz). No vocabulary comes near 2^24.
  constexpr int kMaxId = (1 << 24) - 1;
  if (id < 0 || id > kMaxId) fail(where, ": token '", token, "' has id ", id, ", outside [0, ", kMaxId, "]");
  if (static_cast<size_t>(id) >= tokens_.size()) {
    tokens_.resize(id + 1);
    present_.resize(id + 1, false);
  }
  tokens_[id] = token;
  present_[id] = true;
  ids_[token] = id;  // a repeated token keeps its last id, as a Python dict built from the list does
}

std::optional<int> Vocabulary::find(std::string_view token) const {
  const auto found = ids_.find(token);
  if (found == ids_.end()) return std::nullopt;
  return found->second;
}

std::optional<std::string> Vocabulary::token(int id) const {
  if (id < 0 || id >= size() || !present_[id]) return std::nullopt;
  return tokens_[id];
}

std::vector<int> Vocabulary::byte_ids() const {
  std::vector<int> ids(256, -1);
  for (int b = 0; b < 256; ++b) {
    char name[8];
    std::snprintf(name, sizeof name, "<0x%02X>", b);
    if (const auto id = find(name)) ids[b] = *id;
  }
  return ids;
}

// ---------------------------------------------------------------------------- RankBpe

RankBpe::RankBpe(Vocabulary vocabulary, const std::vector<std::pair<std::string, std::string>>& merges,
                 Options options, const std::string& where)
    : vocabulary_(std::move(vocabulary)), options_(std::move(options)), byte_ids_(vocabulary_.byte_ids()) {
  merges_.reserve(merges.size());
  for (size_t rank = 0; rank < merges.size(); ++rank) {
    const auto& [left, right] = merges[rank];
    const auto left_id = vocabulary_.find(left), right_id = vocabulary_.find(right);
    const auto merged = vocabulary_.find(left + right);
    if (!left_id || !right_id || !merged) {
      fail(where, ": merge '", left, " ", right, "' (rank ", rank, ") uses a token that is not in the vocabulary");
    }
    merges_.emplace(pair_key(*left_id, *right_id), Merge{static_cast<int>(rank), *merged});
  }
  if (options_.unk_token) {
    unk_ = vocabulary_.find(*options_.unk_token);
    if (!unk_) fail(where, ": unk_token '", *options_.unk_token, "' is not in the vocabulary");
  }
}

void RankBpe::tokenize(std::string_view word, std::vector<int>& ids) const {
  if (options_.ignore_merges) {
    if (const auto whole = vocabulary_.find(word)) {
      ids.push_back(*whole);
      return;
    }
  }
  // Initial symbols: characters, else their bytes ("<0xAB>") when byte_fallback, else unk.
  std::vector<Symbol> symbols;
  bool previous_unk = false;
  for (size_t pos = 0; pos < word.size();) {
    const size_t begin = pos;
    next_code_point(word, pos);
    const std::string_view character = word.substr(begin, pos - begin);
    auto push = [&](int id, size_t length) {
      const int index = static_cast<int>(symbols.size());
      symbols.push_back(Symbol{id, begin, length, index - 1, index + 1});
    };
    if (const auto id = vocabulary_.find(character)) {
      push(*id, character.size());
      previous_unk = false;
      continue;
    }
    if (options_.byte_fallback) {
      bool all = true;
      for (const char c : character) all = all && byte_ids_[static_cast<unsigned char>(c)] >= 0;
      if (all) {
        for (const char c : character) push(byte_ids_[static_cast<unsigned char>(c)], 1);
        previous_unk = false;
        continue;
      }
    }
    if (!unk_) continue;  // HF drops characters it cannot represent
    if (options_.fuse_unk && previous_unk) {
      symbols.back().length += character.size();
    } else {
      push(*unk_, character.size());
    }
    previous_unk = true;
  }
  if (symbols.empty()) return;
  symbols.back().next = -1;

  // Merge the lowest-ranked pair first, the leftmost among equals.
  struct Candidate {
    int rank, position, merged;
    bool operator<(const Candidate& other) const {
      return rank != other.rank ? rank > other.rank : position > other.position;
    }
  };
  std::priority_queue<Candidate> queue;
  auto consider = [&](int left) {
    const int right = symbols[left].next;
    if (right < 0) return;
    const auto found = merges_.find(pair_key(symbols[left].id, symbols[right].id));
    if (found != merges_.end()) queue.push(Candidate{found->second.rank, left, found->second.merged});
  };
  for (int i = 0; i + 1 < static_cast<int>(symbols.size()); ++i) consider(i);
  while (!queue.empty()) {
    const Candidate top = queue.top();
    queue.pop();
    Symbol& left = symbols[top.position];
    if (left.length == 0 || left.next < 0) continue;
    const auto found = merges_.find(pair_key(left.id, symbols[left.next].id));
    if (found == merges_.end() || found->second.merged != top.merged) continue;  // stale entry
    const int right = left.next;
    left.id = top.merged;
    left.length += symbols[right].length;
    unlink(symbols, right);
    if (left.prev >= 0) consider(left.prev);
    consider(top.position);
  }
  for (int i = 0; i >= 0; i = symbols[i].next) ids.push_back(symbols[i].id);
}

// ---------------------------------------------------------------------------- ScoreBpe

ScoreBpe::ScoreBpe(const std::vector<std::string>& tokens, std::vector<float> scores,
                   const std::vector<int32_t>& token_types, std::optional<int> unk, const std::string& where)
    : scores_(std::move(scores)), unk_(unk) {
  if (scores_.size() != tokens.size()) {
    fail(where, ": ", tokens.size(), " tokens but ", scores_.size(), " scores (a llama vocabulary needs both)");
  }
  if (!token_types.empty() && token_types.size() != tokens.size()) {
    fail(where, ": ", tokens.size(), " tokens but ", token_types.size(), " token types");
  }
  for (size_t id = 0; id < tokens.size(); ++id) {
    vocabulary_.add(tokens[id], static_cast<int>(id), where);
    const int type = token_types.empty() ? 1 : token_types[id];
    if (type == 1 || type == 4) mergeable_.emplace(tokens[id], static_cast<int>(id));
  }
  byte_ids_ = vocabulary_.byte_ids();
}

void ScoreBpe::tokenize(std::string_view word, std::vector<int>& ids) const {
  std::vector<Symbol> symbols = char_symbols(word);
  if (symbols.empty()) return;

  // The pair whose merged piece scores highest merges first, the leftmost among equals
  // (SentencePiece's bpe_model.cc). `length` detects pairs changed since they were queued.
  struct Candidate {
    float score;
    int left, right;
    size_t length;
    bool operator<(const Candidate& other) const {
      return score != other.score ? score < other.score : left > other.left;
    }
  };
  std::priority_queue<Candidate> queue;
  auto consider = [&](int left) {
    const int right = symbols[left].next;
    if (right < 0) return;
    const size_t length = symbols[left].length + symbols[right].length;
    const auto found = mergeable_.find(word.substr(symbols[left].begin, length));
    if (found != mergeable_.end()) queue.push(Candidate{scores_[found->second], left, right, length});
  };
  for (int i = 0; i + 1 < static_cast<int>(symbols.size()); ++i) consider(i);
  while (!queue.empty()) {
    const Candidate top = queue.top();
    queue.pop();
    Symbol& left = symbols[top.left];
    if (left.length == 0 || left.next != top.right || left.length + symbols[top.right].length != top.length) continue;
    left.length = top.length;
    unlink(symbols, top.right);
    if (left.prev >= 0) consider(left.prev);
    consider(top.left);
  }

  // Pieces to ids; a piece outside the vocabulary falls back to its bytes, else unk
  // (consecutive unks fuse, as in HF's LLaMA tokenizer).
  bool previous_unk = false;
  for (int i = 0; i >= 0; i = symbols[i].next) {
    const std::string_view piece = word.substr(symbols[i].begin, symbols[i].length);
    if (const auto id = vocabulary_.find(piece)) {
      ids.push_back(*id);
      previous_unk = false;
      continue;
    }
    bool all = true;
    for (const char c : piece) all = all && byte_ids_[static_cast<unsigned char>(c)] >= 0;
    if (all) {
      for (const char c : piece) ids.push_back(byte_ids_[static_cast<unsigned char>(c)]);
      previous_unk = false;
    } else if (unk_ && !previous_unk) {
      ids.push_back(*unk_);
      previous_unk = true;
    }
  }
}

}  // namespace qft::text
