#include "text/added_tokens.h"

#include <algorithm>

#include "text/unicode.h"

namespace qft::text {
namespace {

// The code point that ends text[0, end), and the one that starts text[begin, ...).
char32_t last_char(std::string_view text, size_t end) {
  size_t start = end - 1;
  while (start > 0 && (static_cast<unsigned char>(text[start]) & 0xC0) == 0x80) --start;
  return next_code_point(text, start);
}

char32_t first_char(std::string_view text, size_t begin) { return next_code_point(text, begin); }

// Start of the run of white space that ends at `end`.
size_t white_space_before(std::string_view text, size_t end) {
  while (end > 0) {
    size_t start = end - 1;
    while (start > 0 && (static_cast<unsigned char>(text[start]) & 0xC0) == 0x80) --start;
    size_t pos = start;
    if (!is_white_space(next_code_point(text, pos))) break;
    end = start;
  }
  return end;
}

// End of the run of white space that starts at `begin`.
size_t white_space_after(std::string_view text, size_t begin) {
  while (begin < text.size()) {
    size_t pos = begin;
    if (!is_white_space(next_code_point(text, pos))) break;
    begin = pos;
  }
  return begin;
}

}  // namespace

void AddedTokens::Trie::insert(std::string_view pattern, int token) {
  if (pattern.empty()) return;
  int node = 0;
  for (const char c : pattern) {
    const auto byte = static_cast<unsigned char>(c);
    auto found = nodes[node].next.find(byte);
    if (found == nodes[node].next.end()) {
      nodes.push_back(Node{});
      found = nodes[node].next.emplace(byte, static_cast<int>(nodes.size() - 1)).first;
    }
    node = found->second;
  }
  if (nodes[node].token < 0) nodes[node].token = token;  // the first token with a pattern wins
}

AddedTokens::AddedTokens(std::vector<AddedToken> tokens, const std::function<std::string(std::string)>& normalize)
    : tokens_(std::move(tokens)) {
  for (size_t i = 0; i < tokens_.size(); ++i) {
    const AddedToken& token = tokens_[i];
    by_id_.emplace(token.id, i);
    if (token.normalized) {
      normalized_.insert(normalize(token.content), static_cast<int>(i));
    } else {
      raw_.insert(token.content, static_cast<int>(i));
    }
  }
}

const AddedToken* AddedTokens::find(int id) const {
  const auto found = by_id_.find(id);
  return found == by_id_.end() ? nullptr : &tokens_[found->second];
}

std::vector<Segment> AddedTokens::split(std::string_view text, const Trie& trie) const {
  if (trie.empty()) return {Segment{text, -1, 0}};
  std::vector<Segment> segments;
  size_t done = 0;  // end of the last token taken
  size_t pos = 0;
  while (pos < text.size()) {
    // Longest pattern starting at pos.
    int node = 0, token = -1;
    size_t end = pos;
    for (size_t i = pos; i < text.size(); ++i) {
      const auto found = trie.nodes[node].next.find(static_cast<unsigned char>(text[i]));
      if (found == trie.nodes[node].next.end()) break;
      node = found->second;
      if (trie.nodes[node].token >= 0) {
        token = trie.nodes[node].token;
        end = i + 1;
      }
    }
    if (token < 0) {
      ++pos;
      continue;
    }
    const AddedToken& added = tokens_[token];
    size_t start = pos;
    pos = end;  // like the matcher, never look inside a match again, even a discarded one
    if (added.single_word) {
      const bool word_before = start > 0 && is_word_char(last_char(text, start));
      const bool word_after = end < text.size() && is_word_char(first_char(text, end));
      if (word_before || word_after) continue;
    }
    if (added.lstrip) start = std::max(white_space_before(text, start), done);
    if (added.rstrip) end = white_space_after(text, end);
    if (done < start) segments.push_back(Segment{text.substr(done, start - done), -1, done});
    segments.push_back(Segment{text.substr(start, end - start), added.id, start});
    done = end;
  }
  if (done < text.size() || segments.empty()) segments.push_back(Segment{text.substr(done), -1, done});
  return segments;
}

}  // namespace qft::text
