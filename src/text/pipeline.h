#pragma once
// The stages of an HF tokenizer.json around the model: normalizer, pre-tokenizer,
// post-processor and decoder, each built from its JSON object and behaving as the
// `tokenizers` library's component of the same name.
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

namespace qft::text {

// A piece of text between stages. at_origin: it starts where the original text started
// (Metaspace's prepend_scheme "first" prepends only there).
struct Piece {
  std::string text;
  bool at_origin = false;
};

class Normalizer {
 public:
  virtual ~Normalizer() = default;
  virtual void normalize(std::string& text) const = 0;
};

class PreTokenizer {
 public:
  virtual ~PreTokenizer() = default;
  virtual std::vector<Piece> split(std::vector<Piece> pieces) const = 0;
};

// Decoders rewrite the list of token strings; the result is their concatenation.
class Decoder {
 public:
  virtual ~Decoder() = default;
  virtual void decode(std::vector<std::string>& tokens) const = 0;
};

// Token ids added around a single sequence (TemplateProcessing and friends).
struct PostProcessor {
  std::vector<int> prefix, suffix;
  std::vector<int> apply(std::vector<int> ids) const;
};

// `where` names the file for error messages. A null JSON value gives nullptr (or an
// empty PostProcessor).
std::unique_ptr<Normalizer> make_normalizer(const nlohmann::json& spec, const std::string& where);
std::unique_ptr<PreTokenizer> make_pre_tokenizer(const nlohmann::json& spec, const std::string& where);
std::unique_ptr<Decoder> make_decoder(const nlohmann::json& spec, const std::string& where);
PostProcessor make_post_processor(const nlohmann::json& spec, const std::string& where);

}  // namespace qft::text
