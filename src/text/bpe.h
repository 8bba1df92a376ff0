#pragma once
// The models that turn one pre-tokenized word into ids.
//   RankBpe:  HF's BPE: merges applied by rank (byte-level BPE, or LLaMA-2's tokenizer.json
//             with byte fallback).
//   ScoreBpe: SentencePiece's BPE: the adjacent pair whose concatenation is the piece with
//             the highest score merges first (GGUF "llama" vocabularies), then byte fallback.
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

namespace qft::text {

// std::string keys looked up by std::string_view without a copy.
struct StringHash {
  using is_transparent = void;
  size_t operator()(std::string_view text) const { return std::hash<std::string_view>{}(text); }
};
using TokenIds = std::unordered_map<std::string, int, StringHash, std::equal_to<>>;

class Model {
 public:
  virtual ~Model() = default;
  // Appends the ids of `word` (non-empty) to `ids`.
  virtual void tokenize(std::string_view word, std::vector<int>& ids) const = 0;
  virtual std::optional<int> token_to_id(std::string_view token) const = 0;
  virtual std::optional<std::string> id_to_token(int id) const = 0;
  virtual int size() const = 0;  // one past the largest id
};

// Tokens by id (ids need not be dense: absent ones are empty and unmapped).
class Vocabulary {
 public:
  void add(const std::string& token, int id, const std::string& where);
  std::optional<int> find(std::string_view token) const;
  std::optional<std::string> token(int id) const;
  int size() const { return static_cast<int>(tokens_.size()); }
  // ids of the "<0xAB>" byte tokens, -1 where missing.
  std::vector<int> byte_ids() const;

 private:
  std::vector<std::string> tokens_;
  std::vector<bool> present_;
  TokenIds ids_;
};

class RankBpe : public Model {
 public:
  struct Options {
    std::optional<std::string> unk_token;
    bool fuse_unk = false, byte_fallback = false, ignore_merges = false;
  };
  // `merges` in rank order; each merged token must be in the vocabulary.
  RankBpe(Vocabulary vocabulary, const std::vector<std::pair<std::string, std::string>>& merges, Options options,
          const std::string& where);

  void tokenize(std::string_view word, std::vector<int>& ids) const override;
  std::optional<int> token_to_id(std::string_view token) const override { return vocabulary_.find(token); }
  std::optional<std::string> id_to_token(int id) const override { return vocabulary_.token(id); }
  int size() const override { return vocabulary_.size(); }

 private:
  struct Merge {
    int rank, merged;
  };
  Vocabulary vocabulary_;
  std::unordered_map<uint64_t, Merge> merges_;  // (left id << 32 | right id)
  Options options_;
  std::optional<int> unk_;
  std::vector<int> byte_ids_;
};

class ScoreBpe : public Model {
 public:
  // token_types as GGUF/SentencePiece number them (1 normal, 2 unknown, 3 control,
  // 4 user-defined, 5 unused, 6 byte); only normal and user-defined pieces merge.
  ScoreBpe(const std::vector<std::string>& tokens, std::vector<float> scores, const std::vector<int32_t>& token_types,
           std::optional<int> unk, const std::string& where);

  void tokenize(std::string_view word, std::vector<int>& ids) const override;
  std::optional<int> token_to_id(std::string_view token) const override { return vocabulary_.find(token); }
  std::optional<std::string> id_to_token(int id) const override { return vocabulary_.token(id); }
  int size() const override { return vocabulary_.size(); }

 private:
  Vocabulary vocabulary_;
  TokenIds mergeable_;
  std::vector<float> scores_;
  std::optional<int> unk_;
  std::vector<int> byte_ids_;
};

}  // namespace qft::text
