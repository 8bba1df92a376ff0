#pragma once
// Added tokens (special and not) found in the text before the model sees it, as HF's
// AddedVocabulary does: leftmost-longest matching, single_word, lstrip and rstrip;
// tokens marked `normalized` are matched in the normalized text instead of the raw one.
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

namespace qft::text {

struct AddedToken {
  int id = -1;
  std::string content;
  bool single_word = false, lstrip = false, rstrip = false, normalized = false, special = false;
};

// A piece of the text: an added token's id, or text (id -1) for the model.
struct Segment {
  std::string_view text;
  int id = -1;
  size_t offset = 0;  // byte offset in the string that was split
};

class AddedTokens {
 public:
  // `normalize` maps a normalized token's content to the form it takes in normalized text.
  AddedTokens(std::vector<AddedToken> tokens, const std::function<std::string(std::string)>& normalize);
  AddedTokens() = default;

  // Splits on the tokens that match raw text (normalized == false) or normalized text.
  std::vector<Segment> split_raw(std::string_view text) const { return split(text, raw_); }
  std::vector<Segment> split_normalized(std::string_view text) const { return split(text, normalized_); }

  const AddedToken* find(int id) const;
  const std::vector<AddedToken>& tokens() const { return tokens_; }

 private:
  // A byte trie over the patterns of one matching set.
  struct Trie {
    struct Node {
      std::unordered_map<unsigned char, int> next;
      int token = -1;  // index into tokens_
    };
    std::vector<Node> nodes{Node{}};
    void insert(std::string_view pattern, int token);
    bool empty() const { return nodes.size() == 1; }
  };

  std::vector<Segment> split(std::string_view text, const Trie& trie) const;

  std::vector<AddedToken> tokens_;
  std::unordered_map<int, size_t> by_id_;
  Trie raw_, normalized_;
};

}  // namespace qft::text
