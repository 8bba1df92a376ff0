#pragma once
// A SentencePiece tokenizer.model as the model stage of the pipeline: libsentencepiece
// encodes each stretch of text between added tokens (dummy prefix, whitespace escaping
// and the model's own normalization included).
#include <memory>
#include <string>
#include <vector>

#include "text/bpe.h"

namespace sentencepiece {
class SentencePieceProcessor;
}

namespace qft::text {

// What the pipeline needs from the ModelProto besides encoding.
struct SentencePieceInfo {
  std::vector<std::string> pieces;
  std::vector<float> scores;
  std::vector<int> types;  // 1 normal, 2 unknown, 3 control, 4 user-defined, 5 unused, 6 byte
  bool add_dummy_prefix = true;
};

class SentencePieceModel : public Model {
 public:
  explicit SentencePieceModel(const std::string& path);
  ~SentencePieceModel() override;

  void tokenize(std::string_view word, std::vector<int>& ids) const override;
  std::optional<int> token_to_id(std::string_view token) const override;
  std::optional<std::string> id_to_token(int id) const override;
  int size() const override { return static_cast<int>(info_.pieces.size()); }

  const SentencePieceInfo& info() const { return info_; }
  std::optional<int> bos_id() const;
  std::optional<int> eos_id() const;
  std::optional<int> pad_id() const;

 private:
  std::unique_ptr<sentencepiece::SentencePieceProcessor> processor_;
  SentencePieceInfo info_;
  TokenIds ids_;
};

}  // namespace qft::text
