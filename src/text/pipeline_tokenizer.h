#pragma once
// The tokenizer every source builds: HF's encode pipeline (added tokens, normalizer,
// pre-tokenizer, model, post-processor) and decode (decoder chain) over swappable parts.
#include <functional>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "text/added_tokens.h"
#include "text/bpe.h"
#include "text/pipeline.h"
#include "text/tokenizer.h"

namespace qft::text {

struct PipelineParts {
  std::string kind;
  std::unique_ptr<Normalizer> normalizer;      // may be null
  std::unique_ptr<PreTokenizer> pre_tokenizer;  // may be null
  std::unique_ptr<Model> model;
  std::vector<AddedToken> added_tokens;
  PostProcessor post_processor;
  std::unique_ptr<Decoder> decoder;  // null: tokens joined by spaces, as HF does
  // Makes the equivalent tokenizer.json, when there is one (on demand: generating it can
  // cost more than loading).
  std::function<nlohmann::json()> tokenizer_json;
};

class PipelineTokenizer : public Tokenizer {
 public:
  explicit PipelineTokenizer(PipelineParts parts);

  std::vector<int> encode(std::string_view text, bool add_special_tokens) const override;
  std::string decode(const std::vector<int>& ids, bool skip_special_tokens) const override;
  std::optional<int> token_to_id(std::string_view token) const override;
  std::string id_to_token(int id) const override;
  bool is_special(int id) const override;
  int vocab_size() const override;
  std::string kind() const override { return parts_.kind; }
  nlohmann::json to_tokenizer_json() const override;

  void set_metadata(std::optional<int> bos, std::optional<int> eos, std::optional<int> pad, std::string chat_template);
  const PostProcessor& post_processor() const { return parts_.post_processor; }

 private:
  void encode_text(std::string_view text, bool at_origin, std::vector<int>& ids) const;

  PipelineParts parts_;
  AddedTokens added_;
};

// An HF tokenizer.json (BPE models); `where` names it in errors.
std::unique_ptr<PipelineTokenizer> tokenizer_from_json(const nlohmann::json& spec, const std::string& where);

}  // namespace qft::text
