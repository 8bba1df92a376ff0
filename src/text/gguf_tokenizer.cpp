// GGUF tokenizer metadata to tokenizers: a "gpt2" vocabulary becomes the tokenizer.json
// that HF would ship for it (so it can be written back out as one); a "llama"
// vocabulary becomes LLaMA-2's pipeline around SentencePiece's merge-by-score BPE, and
// is written out as LLaMA-2's tokenizer.json with merges generated from the scores.
#include <algorithm>
#include <map>
#include <unordered_map>

#include "core/error.h"
#include "text/pipeline_tokenizer.h"
#include "text/tokenizer.h"

namespace qft {
namespace {

using nlohmann::json;
using text::PipelineParts;
using text::PipelineTokenizer;

const char* const kWhere = "GGUF tokenizer";
const char* const kMetaspace = "\xE2\x96\x81";  // "▁"

enum TokenType { kNormal = 1, kUnknown = 2, kControl = 3, kUserDefined = 4, kUnused = 5, kByte = 6 };

const std::string kLlama3Pattern =
    R"((?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)";
const std::string kQwen2Pattern =
    R"((?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)";

// How llama.cpp's tokenizer.ggml.pre names map onto HF pre-tokenizers.
enum class PreKind { kGpt2, kDigitsThenGpt2, kLlama3, kQwen2 };

PreKind pre_kind(const std::string& pre) {
  static const std::map<std::string, PreKind> kinds = {
      {"", PreKind::kGpt2},           {"default", PreKind::kGpt2},      {"gpt-2", PreKind::kGpt2},
      {"gpt2", PreKind::kGpt2},       {"mpt", PreKind::kGpt2},          {"olmo", PreKind::kGpt2},
      {"jais", PreKind::kGpt2},       {"smollm", PreKind::kDigitsThenGpt2},
      {"starcoder", PreKind::kDigitsThenGpt2}, {"refact", PreKind::kDigitsThenGpt2},
      {"codeshell", PreKind::kDigitsThenGpt2}, {"command-r", PreKind::kDigitsThenGpt2},
      {"llama-bpe", PreKind::kLlama3}, {"llama3", PreKind::kLlama3},   {"smaug-bpe", PreKind::kLlama3},
      {"dbrx", PreKind::kLlama3},     {"falcon3", PreKind::kLlama3},    {"qwen2", PreKind::kQwen2},
      {"stablelm2", PreKind::kQwen2}, {"deepseek-r1-qwen", PreKind::kQwen2},
  };
  const auto found = kinds.find(pre);
  if (found == kinds.end()) {
    std::string known;
    for (const auto& [name, kind] : kinds) known += (known.empty() ? "" : ", ") + (name.empty() ? "\"\"" : name);
    fail(kWhere, ": tokenizer.ggml.pre '", pre, "' is not supported (known: ", known, ")");
  }
  return found->second;
}

json byte_level(bool use_regex) {
  return {{"type", "ByteLevel"}, {"add_prefix_space", false}, {"trim_offsets", true}, {"use_regex", use_regex}};
}

json split(const std::string& pattern) {
  return {{"type", "Split"}, {"pattern", {{"Regex", pattern}}}, {"behavior", "Isolated"}, {"invert", false}};
}

json pre_tokenizer_json(PreKind kind) {
  switch (kind) {
    case PreKind::kGpt2: return byte_level(true);
    case PreKind::kDigitsThenGpt2:
      return {{"type", "Sequence"},
              {"pretokenizers", {{{"type", "Digits"}, {"individual_digits", true}}, byte_level(true)}}};
    case PreKind::kLlama3: return {{"type", "Sequence"}, {"pretokenizers", {split(kLlama3Pattern), byte_level(false)}}};
    case PreKind::kQwen2: return {{"type", "Sequence"}, {"pretokenizers", {split(kQwen2Pattern), byte_level(false)}}};
  }
  return nullptr;
}

void check_id(const GgufTokenizerData& gguf, int id, const char* what) {
  if (id < -1 || id >= static_cast<int>(gguf.tokens.size())) {
    fail(kWhere, ": ", what, " id ", id, " is outside the ", gguf.tokens.size(), " tokens");
  }
}

int token_type(const GgufTokenizerData& gguf, size_t id) {
  return gguf.token_types.empty() ? kNormal : gguf.token_types[id];
}

// TemplateProcessing with BOS in front and EOS behind, as asked; a pair is two singles.
json template_json(const GgufTokenizerData& gguf, bool add_bos, bool add_eos) {
  if (add_bos && gguf.bos < 0) fail(kWhere, ": add_bos_token is set but there is no bos_token_id");
  if (add_eos && gguf.eos < 0) fail(kWhere, ": add_eos_token is set but there is no eos_token_id");
  json specials = json::object();
  auto special = [&](int id, int type_id) {
    const std::string& token = gguf.tokens[id];
    specials[token] = {{"id", token}, {"ids", {id}}, {"tokens", {token}}};
    return json{{"SpecialToken", {{"id", token}, {"type_id", type_id}}}};
  };
  auto single = [&](const char* sequence, int type_id) {
    json items = json::array();
    if (add_bos) items.push_back(special(gguf.bos, type_id));
    items.push_back({{"Sequence", {{"id", sequence}, {"type_id", type_id}}}});
    if (add_eos) items.push_back(special(gguf.eos, type_id));
    return items;
  };
  json pair = single("A", 0);
  for (const auto& item : single("B", 1)) pair.push_back(item);
  return {{"type", "TemplateProcessing"}, {"single", single("A", 0)}, {"pair", pair}, {"special_tokens", specials}};
}

// Control tokens are special added tokens, user-defined ones plain added tokens; both
// are matched in the raw text (HF's GGUF conversion does the same).
json added_tokens_json(const GgufTokenizerData& gguf, bool unknown_is_special) {
  json list = json::array();
  for (size_t id = 0; id < gguf.tokens.size(); ++id) {
    const int type = token_type(gguf, id);
    const bool special = type == kControl || (unknown_is_special && type == kUnknown);
    if (!special && type != kUserDefined) continue;
    list.push_back({{"id", id}, {"content", gguf.tokens[id]}, {"single_word", false}, {"lstrip", false},
                    {"rstrip", false}, {"normalized", false}, {"special", special}});
  }
  return list;
}

std::unique_ptr<Tokenizer> byte_level_bpe(const GgufTokenizerData& gguf) {
  if (gguf.merges.empty()) fail(kWhere, ": a gpt2 vocabulary needs tokenizer.ggml.merges");
  const PreKind kind = pre_kind(gguf.pre);
  const bool add_bos = gguf.add_bos.value_or(kind == PreKind::kLlama3);
  const bool add_eos = gguf.add_eos.value_or(false);
  json vocab = json::object();
  for (size_t id = 0; id < gguf.tokens.size(); ++id) vocab[gguf.tokens[id]] = id;
  json merges = json::array();
  for (const std::string& merge : gguf.merges) {
    const size_t space = merge.find(' ');
    if (space == std::string::npos) fail(kWhere, ": merge '", merge, "' has no space");
    merges.push_back({merge.substr(0, space), merge.substr(space + 1)});
  }
  json spec = {
      {"version", "1.0"},
      {"truncation", nullptr},
      {"padding", nullptr},
      {"added_tokens", added_tokens_json(gguf, false)},
      {"normalizer", kind == PreKind::kQwen2 ? json{{"type", "NFC"}} : json(nullptr)},
      {"pre_tokenizer", pre_tokenizer_json(kind)},
      {"post_processor", add_bos || add_eos ? template_json(gguf, add_bos, add_eos)
                                            : json{{"type", "ByteLevel"}, {"add_prefix_space", true},
                                                   {"trim_offsets", false}, {"use_regex", true}}},
      {"decoder", {{"type", "ByteLevel"}, {"add_prefix_space", true}, {"trim_offsets", true}, {"use_regex", true}}},
      {"model",
       {{"type", "BPE"}, {"dropout", nullptr}, {"unk_token", nullptr}, {"continuing_subword_prefix", nullptr},
        {"end_of_word_suffix", nullptr}, {"fuse_unk", false}, {"byte_fallback", false},
        {"ignore_merges", kind == PreKind::kLlama3}, {"vocab", std::move(vocab)}, {"merges", std::move(merges)}}},
  };
  return text::tokenizer_from_json(spec, kWhere);
}

// HF's merges for a SentencePiece vocabulary, as transformers' slow->fast conversion
// generates them (transformers 4.49): every split of every piece into two pieces,
// ordered by the piece's score (highest first), the lengths in characters of the left
// and the right half (longest first), the piece's id, then the ids of the halves.
json merges_from_scores(const GgufTokenizerData& gguf) {
  std::unordered_map<std::string, int> ids;
  for (size_t id = 0; id < gguf.tokens.size(); ++id) ids[gguf.tokens[id]] = static_cast<int>(id);
  struct Merge {
    float score;
    size_t left_chars, right_chars;
    int piece, left, right;
  };
  auto characters = [](std::string_view text) {
    size_t count = 0;
    for (const char c : text) count += (static_cast<unsigned char>(c) & 0xC0) != 0x80;
    return count;
  };
  std::vector<Merge> merges;
  for (size_t id = 0; id < gguf.tokens.size(); ++id) {
    const std::string& piece = gguf.tokens[id];
    for (size_t split = 1; split < piece.size(); ++split) {
      if ((static_cast<unsigned char>(piece[split]) & 0xC0) == 0x80) continue;  // inside a character
      const auto left = ids.find(piece.substr(0, split)), right = ids.find(piece.substr(split));
      if (left != ids.end() && right != ids.end()) {
        merges.push_back(Merge{gguf.scores[id], characters(left->first), characters(right->first),
                               static_cast<int>(id), left->second, right->second});
      }
    }
  }
  std::sort(merges.begin(), merges.end(), [](const Merge& a, const Merge& b) {
    if (a.score != b.score) return a.score > b.score;
    if (a.left_chars != b.left_chars) return a.left_chars > b.left_chars;
    if (a.right_chars != b.right_chars) return a.right_chars > b.right_chars;
    if (a.piece != b.piece) return a.piece < b.piece;
    return a.left != b.left ? a.left < b.left : a.right < b.right;
  });
  json list = json::array();
  for (const Merge& merge : merges) list.push_back({gguf.tokens[merge.left], gguf.tokens[merge.right]});
  return list;
}

// LLaMA-2's tokenizer.json: "▁" prepended (add_space_prefix) and standing for every
// space, a BPE with byte fallback, decoding reversing both. Our encoder uses the same
// stages around SentencePiece's merge-by-score BPE instead of the generated merges.
json llama_tokenizer_json(const GgufTokenizerData& gguf, bool with_model) {
  const bool add_bos = gguf.add_bos.value_or(true);
  const bool add_eos = gguf.add_eos.value_or(false);
  const bool prefix = gguf.add_space_prefix.value_or(true);
  json normalizers = json::array();
  if (prefix) normalizers.push_back({{"type", "Prepend"}, {"prepend", kMetaspace}});
  normalizers.push_back({{"type", "Replace"}, {"pattern", {{"String", " "}}}, {"content", kMetaspace}});
  json decoders = {{{"type", "Replace"}, {"pattern", {{"String", kMetaspace}}}, {"content", " "}},
                   {{"type", "ByteFallback"}},
                   {{"type", "Fuse"}}};
  if (prefix) decoders.push_back({{"type", "Strip"}, {"content", " "}, {"start", 1}, {"stop", 0}});
  json spec = {{"version", "1.0"},
               {"truncation", nullptr},
               {"padding", nullptr},
               {"added_tokens", added_tokens_json(gguf, true)},
               {"normalizer", {{"type", "Sequence"}, {"normalizers", normalizers}}},
               {"pre_tokenizer", nullptr},
               {"post_processor", template_json(gguf, add_bos, add_eos)},
               {"decoder", {{"type", "Sequence"}, {"decoders", decoders}}}};
  if (with_model) {
    json vocab = json::object();
    for (size_t id = 0; id < gguf.tokens.size(); ++id) vocab[gguf.tokens[id]] = id;
    spec["model"] = {{"type", "BPE"}, {"dropout", nullptr}, {"unk_token", gguf.unk >= 0 ? json(gguf.tokens[gguf.unk]) : json()},
                     {"continuing_subword_prefix", nullptr}, {"end_of_word_suffix", nullptr}, {"fuse_unk", true},
                     {"byte_fallback", true}, {"ignore_merges", false}, {"vocab", std::move(vocab)},
                     {"merges", merges_from_scores(gguf)}};
  }
  return spec;
}

std::unique_ptr<Tokenizer> sentencepiece_bpe(const GgufTokenizerData& gguf) {
  const json spec = llama_tokenizer_json(gguf, false);
  PipelineParts parts;
  parts.kind = "SentencePiece BPE (by score)";
  parts.normalizer = text::make_normalizer(spec.at("normalizer"), kWhere);
  parts.decoder = text::make_decoder(spec.at("decoder"), kWhere);
  parts.post_processor = text::make_post_processor(spec.at("post_processor"), kWhere);
  for (const auto& item : spec.at("added_tokens")) {
    parts.added_tokens.push_back(text::AddedToken{item.at("id").get<int>(), item.at("content").get<std::string>(),
                                                  false, false, false, false, item.at("special").get<bool>()});
  }
  const std::optional<int> unk = gguf.unk >= 0 ? std::optional<int>(gguf.unk) : std::nullopt;
  parts.model = std::make_unique<text::ScoreBpe>(gguf.tokens, gguf.scores, gguf.token_types, unk, kWhere);
  parts.tokenizer_json = [gguf] { return llama_tokenizer_json(gguf, true); };
  return std::make_unique<PipelineTokenizer>(std::move(parts));
}

}  // namespace

std::string gguf_pre_name(const json& tokenizer_json) {
  const json& pre = tokenizer_json.value("pre_tokenizer", json());
  const json parts = pre.is_object() && pre.value("type", "") == "Sequence" ? pre.value("pretokenizers", json::array())
                                                                           : json::array({pre});
  bool digits = false, byte_level_split = false;
  std::string pattern;
  for (const json& part : parts) {
    if (!part.is_object()) continue;
    const std::string type = part.value("type", "");
    if (type == "Digits") digits = part.value("individual_digits", false);
    if (type == "ByteLevel") byte_level_split = part.value("use_regex", true);
    if (type == "Split" && part.contains("pattern") && part["pattern"].contains("Regex")) pattern = part["pattern"]["Regex"];
  }
  if (pattern == kLlama3Pattern) return "llama-bpe";
  if (pattern == kQwen2Pattern) return "qwen2";
  if (pattern.empty() && byte_level_split) return digits ? "smollm" : "gpt-2";
  fail(kWhere, ": no llama.cpp pre-tokenizer name matches this tokenizer.json's pre_tokenizer");
}

std::unique_ptr<Tokenizer> load_tokenizer(const GgufTokenizerData& gguf) {
  if (gguf.tokens.empty()) fail(kWhere, ": no tokens (tokenizer.ggml.tokens)");
  if (!gguf.token_types.empty() && gguf.token_types.size() != gguf.tokens.size()) {
    fail(kWhere, ": ", gguf.tokens.size(), " tokens but ", gguf.token_types.size(), " token types");
  }
  check_id(gguf, gguf.bos, "bos_token");
  check_id(gguf, gguf.eos, "eos_token");
  check_id(gguf, gguf.unk, "unknown_token");
  check_id(gguf, gguf.pad, "padding_token");
  std::unique_ptr<Tokenizer> tokenizer;
  if (gguf.model == "gpt2") {
    tokenizer = byte_level_bpe(gguf);
  } else if (gguf.model == "llama") {
    tokenizer = sentencepiece_bpe(gguf);
  } else {
    fail(kWhere, ": tokenizer.ggml.model '", gguf.model, "' is not supported (gpt2 and llama are)");
  }
  auto id = [](int value) { return value >= 0 ? std::optional<int>(value) : std::nullopt; };
  static_cast<PipelineTokenizer&>(*tokenizer).set_metadata(id(gguf.bos), id(gguf.eos), id(gguf.pad),
                                                           gguf.chat_template);
  return tokenizer;
}

}  // namespace qft
