#include "text/pipeline_tokenizer.h"

#include "core/error.h"
#include "core/json_integer.h"
#include "text/unicode.h"

namespace qft {

nlohmann::json Tokenizer::to_tokenizer_json() const {
  fail("a ", kind(), " tokenizer has no tokenizer.json form");
}

namespace text {

using nlohmann::json;

PipelineTokenizer::PipelineTokenizer(PipelineParts parts) : parts_(std::move(parts)) {
  if (!parts_.model) fail("tokenizer: no model");
  const Normalizer* normalizer = parts_.normalizer.get();
  added_ = AddedTokens(parts_.added_tokens, [normalizer](std::string content) {
    if (normalizer) normalizer->normalize(content);
    return content;
  });
}

void PipelineTokenizer::set_metadata(std::optional<int> bos, std::optional<int> eos, std::optional<int> pad,
                                     std::string chat_template) {
  bos_ = bos;
  eos_ = eos;
  pad_ = pad;
  chat_template_ = std::move(chat_template);
}

std::vector<int> PipelineTokenizer::encode(std::string_view text, bool add_special_tokens) const {
  if (const auto bad = invalid_utf8_offset(text)) fail("tokenizer: text is not valid UTF-8 (byte ", *bad, ")");
  std::vector<int> ids;
  ids.reserve(text.size() / 3 + 4);
  for (const Segment& segment : added_.split_raw(text)) {
    if (segment.id >= 0) {
      ids.push_back(segment.id);
    } else {
      encode_text(segment.text, segment.offset == 0, ids);
    }
  }
  return add_special_tokens ? parts_.post_processor.apply(std::move(ids)) : ids;
}

// Normalizes one stretch of text between raw added tokens, then splits it on the
// normalized added tokens and pre-tokenizes and tokenizes what is left.
void PipelineTokenizer::encode_text(std::string_view text, bool at_origin, std::vector<int>& ids) const {
  std::string normalized(text);
  if (parts_.normalizer) parts_.normalizer->normalize(normalized);
  for (const Segment& segment : added_.split_normalized(normalized)) {
    if (segment.id >= 0) {
      ids.push_back(segment.id);
      continue;
    }
    if (segment.text.empty()) continue;
    std::vector<Piece> pieces{Piece{std::string(segment.text), at_origin && segment.offset == 0}};
    if (parts_.pre_tokenizer) pieces = parts_.pre_tokenizer->split(std::move(pieces));
    for (const Piece& piece : pieces) {
      if (!piece.text.empty()) parts_.model->tokenize(piece.text, ids);
    }
  }
}

std::string PipelineTokenizer::decode(const std::vector<int>& ids, bool skip_special_tokens) const {
  std::vector<std::string> tokens;
  tokens.reserve(ids.size());
  for (const int id : ids) {
    if (skip_special_tokens && is_special(id)) continue;
    tokens.push_back(id_to_token(id));
  }
  std::string text;
  if (parts_.decoder) {
    parts_.decoder->decode(tokens);
    for (const std::string& token : tokens) text += token;
  } else {
    for (size_t i = 0; i < tokens.size(); ++i) text += (i ? " " : "") + tokens[i];
  }
  return text;
}

std::optional<int> PipelineTokenizer::token_to_id(std::string_view token) const {
  for (const AddedToken& added : added_.tokens()) {
    if (added.content == token) return added.id;
  }
  return parts_.model->token_to_id(token);
}

std::string PipelineTokenizer::id_to_token(int id) const {
  if (const AddedToken* added = added_.find(id)) return added->content;
  if (auto token = parts_.model->id_to_token(id)) return *token;
  fail("tokenizer: id ", id, " is not in the vocabulary (size ", vocab_size(), ")");
}

bool PipelineTokenizer::is_special(int id) const {
  const AddedToken* added = added_.find(id);
  return added && added->special;
}

int PipelineTokenizer::vocab_size() const {
  int size = parts_.model->size();
  for (const AddedToken& added : added_.tokens()) size = std::max(size, added.id + 1);
  return size;
}

json PipelineTokenizer::to_tokenizer_json() const {
  if (!parts_.tokenizer_json) return Tokenizer::to_tokenizer_json();
  return parts_.tokenizer_json();
}

// ---------------------------------------------------------------------------- tokenizer.json

namespace {

std::vector<std::pair<std::string, std::string>> parse_merges(const json& merges, const std::string& where) {
  std::vector<std::pair<std::string, std::string>> pairs;
  pairs.reserve(merges.size());
  for (const auto& merge : merges) {
    if (merge.is_array() && merge.size() == 2) {
      pairs.emplace_back(merge[0].get<std::string>(), merge[1].get<std::string>());
      continue;
    }
    const std::string line = merge.get<std::string>();
    const size_t space = line.find(' ');
    if (space == std::string::npos || line.find(' ', space + 1) != std::string::npos) {
      fail(where, ": merge '", line, "' is not two tokens separated by one space");
    }
    pairs.emplace_back(line.substr(0, space), line.substr(space + 1));
  }
  return pairs;
}

std::unique_ptr<Model> bpe_from_json(const json& spec, const std::string& where) {
  const std::string type = spec.value("type", "BPE");
  if (type != "BPE") fail(where, ": model type '", type, "' is not supported (only BPE)");
  for (const char* key : {"dropout", "continuing_subword_prefix", "end_of_word_suffix"}) {
    if (spec.contains(key) && !spec.at(key).is_null()) fail(where, ": BPE option '", key, "' is not supported");
  }
  Vocabulary vocabulary;
  for (const auto& [token, id] : spec.at("vocab").items()) vocabulary.add(token, json_integer<int>(id, where + ": the id of '" + token + "'", 0), where);
  RankBpe::Options options;
  if (spec.contains("unk_token") && !spec.at("unk_token").is_null()) options.unk_token = spec.at("unk_token").get<std::string>();
  options.fuse_unk = spec.value("fuse_unk", false);
  options.byte_fallback = spec.value("byte_fallback", false);
  options.ignore_merges = spec.value("ignore_merges", false);
  return std::make_unique<RankBpe>(std::move(vocabulary), parse_merges(spec.at("merges"), where), options, where);
}

std::vector<AddedToken> added_from_json(const json& list, const std::string& where) {
  std::vector<AddedToken> tokens;
  for (const auto& item : list) {
    AddedToken token;
    token.id = json_integer<int>(item.at("id"), where + ": an added token's id", 0);
    token.content = item.at("content").get<std::string>();
    token.single_word = item.value("single_word", false);
    token.lstrip = item.value("lstrip", false);
    token.rstrip = item.value("rstrip", false);
    token.normalized = item.value("normalized", true);
    token.special = item.value("special", false);
    tokens.push_back(std::move(token));
  }
  return tokens;
}

bool has_byte_level(const json& spec) {
  if (spec.is_object()) {
    if (spec.value("type", "") == "ByteLevel") return true;
    for (const auto& [key, value] : spec.items()) {
      if (has_byte_level(value)) return true;
    }
  } else if (spec.is_array()) {
    for (const auto& value : spec) {
      if (has_byte_level(value)) return true;
    }
  }
  return false;
}

const json& member(const json& spec, const char* key) {
  static const json null;
  return spec.contains(key) ? spec.at(key) : null;
}

}  // namespace

std::unique_ptr<PipelineTokenizer> tokenizer_from_json(const json& spec, const std::string& where) {
  try {
    if (!spec.is_object() || !spec.contains("model")) fail(where, ": not a tokenizer.json (no \"model\")");
    PipelineParts parts;
    parts.kind = has_byte_level(member(spec, "pre_tokenizer")) ? "byte-level BPE" : "BPE";
    parts.model = bpe_from_json(spec.at("model"), where);
    parts.normalizer = make_normalizer(member(spec, "normalizer"), where);
    parts.pre_tokenizer = make_pre_tokenizer(member(spec, "pre_tokenizer"), where);
    parts.post_processor = make_post_processor(member(spec, "post_processor"), where);
    parts.decoder = make_decoder(member(spec, "decoder"), where);
    parts.added_tokens = added_from_json(member(spec, "added_tokens"), where);
    parts.tokenizer_json = [spec] { return spec; };
    return std::make_unique<PipelineTokenizer>(std::move(parts));
  } catch (const json::exception& error) {
    fail(where, ": malformed tokenizer.json: ", error.what());
  }
}

}  // namespace text
}  // namespace qft
