// GGUF tokenizer metadata to tokenizers: a "gpt2" vocabulary becomes the tokenizer.json
// that HF would ship for it (so it can be written back out as one); a "llama"
// vocabulary becomes LLaMA-2's pipeline around SentencePiece's merge-by-score BPE.
#include <map>

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

// LLaMA-2's tokenizer.json around SentencePiece's BPE: "▁" prepended (add_space_prefix)
// and standing for every space; decoding reverses both.
std::unique_ptr<Tokenizer> sentencepiece_bpe(const GgufTokenizerData& gguf) {
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

  PipelineParts parts;
  parts.kind = "SentencePiece BPE (by score)";
  parts.normalizer = text::make_normalizer({{"type", "Sequence"}, {"normalizers", normalizers}}, kWhere);
  parts.decoder = text::make_decoder({{"type", "Sequence"}, {"decoders", decoders}}, kWhere);
  parts.post_processor = text::make_post_processor(template_json(gguf, add_bos, add_eos), kWhere);
  for (const auto& item : added_tokens_json(gguf, true)) {
    parts.added_tokens.push_back(text::AddedToken{item.at("id").get<int>(), item.at("content").get<std::string>(),
                                                  false, false, false, false, item.at("special").get<bool>()});
  }
  const std::optional<int> unk = gguf.unk >= 0 ? std::optional<int>(gguf.unk) : std::nullopt;
  parts.model = std::make_unique<text::ScoreBpe>(gguf.tokens, gguf.scores, gguf.token_types, unk, kWhere);
  return std::make_unique<PipelineTokenizer>(std::move(parts));
}

}  // namespace

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
