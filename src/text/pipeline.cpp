#include "text/pipeline.h"

#include <algorithm>
#include <optional>

#include "core/error.h"
#include "core/json_integer.h"
#include "text/regex.h"
#include "text/unicode.h"

namespace qft::text {
namespace {

using nlohmann::json;

const std::string kGpt2Pattern =
    R"('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+)";

std::string type_of(const json& spec, const std::string& where, const char* stage) {
  if (!spec.is_object() || !spec.contains("type")) fail(where, ": ", stage, " without a \"type\": ", spec.dump());
  return spec.at("type").get<std::string>();
}

template <class T>
T get_or(const json& spec, const char* key, T fallback) {
  return spec.contains(key) && !spec.at(key).is_null() ? spec.at(key).get<T>() : fallback;
}

void replace_all(std::string& text, const std::string& from, const std::string& to) {
  if (from.empty()) return;
  std::string out;
  size_t pos = 0;
  for (size_t found; (found = text.find(from, pos)) != std::string::npos; pos = found + from.size()) {
    out.append(text, pos, found - pos);
    out += to;
  }
  out.append(text, pos);
  text = std::move(out);
}

// A {"String": s} or {"Regex": r} pattern, as Replace and Split take them.
struct Pattern {
  std::string literal;
  std::shared_ptr<Regex> regex;

  Pattern(const json& spec, const std::string& where) {
    if (spec.contains("String")) {
      literal = spec.at("String").get<std::string>();
    } else if (spec.contains("Regex")) {
      regex = std::make_shared<Regex>(spec.at("Regex").get<std::string>());
    } else {
      fail(where, ": pattern must be {\"String\": ...} or {\"Regex\": ...}, got ", spec.dump());
    }
  }
  explicit Pattern(std::shared_ptr<Regex> r) : regex(std::move(r)) {}

  std::vector<std::pair<size_t, size_t>> find_all(std::string_view text) const {
    if (regex) return regex->find_all(text);
    std::vector<std::pair<size_t, size_t>> matches;
    if (literal.empty()) return matches;
    for (size_t pos = 0; (pos = text.find(literal, pos)) != std::string_view::npos; pos += literal.size()) {
      matches.emplace_back(pos, pos + literal.size());
    }
    return matches;
  }

  void replace(std::string& text, const std::string& content) const {
    std::string out;
    size_t done = 0;
    for (const auto& [begin, end] : find_all(text)) {
      out.append(text, done, begin - done);
      out += content;
      done = end;
    }
    out.append(text, done);
    text = std::move(out);
  }
};

// ---------------------------------------------------------------------------- normalizers

class NormalizerSequence : public Normalizer {
 public:
  explicit NormalizerSequence(std::vector<std::unique_ptr<Normalizer>> steps) : steps_(std::move(steps)) {}
  void normalize(std::string& text) const override {
    for (const auto& step : steps_) step->normalize(text);
  }

 private:
  std::vector<std::unique_ptr<Normalizer>> steps_;
};

class Prepend : public Normalizer {
 public:
  explicit Prepend(std::string prefix) : prefix_(std::move(prefix)) {}
  void normalize(std::string& text) const override {
    if (!text.empty()) text.insert(0, prefix_);
  }

 private:
  std::string prefix_;
};

class ReplaceNormalizer : public Normalizer {
 public:
  ReplaceNormalizer(Pattern pattern, std::string content) : pattern_(std::move(pattern)), content_(std::move(content)) {}
  void normalize(std::string& text) const override { pattern_.replace(text, content_); }

 private:
  Pattern pattern_;
  std::string content_;
};

class UnicodeNormalizer : public Normalizer {
 public:
  explicit UnicodeNormalizer(NormalForm form) : form_(form) {}
  void normalize(std::string& text) const override { text = text::normalize(text, form_); }

 private:
  NormalForm form_;
};

class Lowercase : public Normalizer {
 public:
  void normalize(std::string& text) const override { text = lowercase(text); }
};

class StripNormalizer : public Normalizer {
 public:
  StripNormalizer(bool left, bool right) : left_(left), right_(right) {}
  void normalize(std::string& text) const override {
    const auto chars = utf8_chars(text);
    size_t begin = 0, end = chars.size();
    auto white = [&](size_t i) {
      size_t pos = 0;
      return is_white_space(next_code_point(chars[i], pos));
    };
    while (left_ && begin < end && white(begin)) ++begin;
    while (right_ && end > begin && white(end - 1)) --end;
    if (begin == end) {
      text.clear();
      return;
    }
    const size_t from = chars[begin].data() - text.data();
    const size_t to = chars[end - 1].data() + chars[end - 1].size() - text.data();
    text = text.substr(from, to - from);
  }

 private:
  bool left_, right_;
};

// ---------------------------------------------------------------------------- pre-tokenizers

enum class Behavior { kRemoved, kIsolated, kMergedWithPrevious, kMergedWithNext, kContiguous };

Behavior parse_behavior(const std::string& name, const std::string& where) {
  if (name == "Removed") return Behavior::kRemoved;
  if (name == "Isolated") return Behavior::kIsolated;
  if (name == "MergedWithPrevious") return Behavior::kMergedWithPrevious;
  if (name == "MergedWithNext") return Behavior::kMergedWithNext;
  if (name == "Contiguous") return Behavior::kContiguous;
  fail(where, ": unknown split behavior '", name, "'");
}

struct Span {
  size_t begin, end;
  bool is_match;
};

// HF's NormalizedString::split: the pieces of `text` around the matches of `pattern`.
std::vector<Piece> split_piece(const Piece& piece, const Pattern& pattern, Behavior behavior, bool invert) {
  const std::string& text = piece.text;
  std::vector<Span> spans;
  size_t done = 0;
  for (const auto& [begin, end] : pattern.find_all(text)) {
    if (done != begin) spans.push_back({done, begin, invert});
    spans.push_back({begin, end, !invert});
    done = end;
  }
  if (done != text.size()) spans.push_back({done, text.size(), invert});

  std::vector<Span> kept;
  bool previous_match = false;
  switch (behavior) {
    case Behavior::kRemoved:
      for (const Span& span : spans) {
        if (!span.is_match) kept.push_back(span);
      }
      break;
    case Behavior::kIsolated:
      kept = spans;
      break;
    case Behavior::kMergedWithPrevious:
      for (const Span& span : spans) {
        if (span.is_match && !previous_match && !kept.empty()) {
          kept.back().end = span.end;
        } else {
          kept.push_back(span);
        }
        previous_match = span.is_match;
      }
      break;
    case Behavior::kMergedWithNext:
      for (auto it = spans.rbegin(); it != spans.rend(); ++it) {
        if (it->is_match && !previous_match && !kept.empty()) {
          kept.back().begin = it->begin;
        } else {
          kept.push_back(*it);
        }
        previous_match = it->is_match;
      }
      std::reverse(kept.begin(), kept.end());
      break;
    case Behavior::kContiguous:
      for (const Span& span : spans) {
        if (span.is_match == previous_match && !kept.empty()) {
          kept.back().end = span.end;
        } else {
          kept.push_back(span);
        }
        previous_match = span.is_match;
      }
      break;
  }
  std::vector<Piece> pieces;
  for (const Span& span : kept) {
    if (span.end > span.begin) {
      pieces.push_back(Piece{text.substr(span.begin, span.end - span.begin), piece.at_origin && span.begin == 0});
    }
  }
  return pieces;
}

class PreTokenizerSequence : public PreTokenizer {
 public:
  explicit PreTokenizerSequence(std::vector<std::unique_ptr<PreTokenizer>> steps) : steps_(std::move(steps)) {}
  std::vector<Piece> split(std::vector<Piece> pieces) const override {
    for (const auto& step : steps_) pieces = step->split(std::move(pieces));
    return pieces;
  }

 private:
  std::vector<std::unique_ptr<PreTokenizer>> steps_;
};

class Split : public PreTokenizer {
 public:
  Split(Pattern pattern, Behavior behavior, bool invert)
      : pattern_(std::move(pattern)), behavior_(behavior), invert_(invert) {}
  std::vector<Piece> split(std::vector<Piece> pieces) const override {
    std::vector<Piece> out;
    for (const Piece& piece : pieces) {
      for (Piece& part : split_piece(piece, pattern_, behavior_, invert_)) out.push_back(std::move(part));
    }
    return out;
  }

 private:
  Pattern pattern_;
  Behavior behavior_;
  bool invert_;
};

// GPT-2's pre-tokenizer: optional leading space, the GPT-2 split regex, then every byte
// as its printable stand-in character.
class ByteLevel : public PreTokenizer {
 public:
  ByteLevel(bool add_prefix_space, bool use_regex) : add_prefix_space_(add_prefix_space) {
    if (use_regex) split_ = std::make_unique<Split>(Pattern(gpt2_regex()), Behavior::kIsolated, false);
  }
  std::vector<Piece> split(std::vector<Piece> pieces) const override {
    if (add_prefix_space_) {
      for (Piece& piece : pieces) {
        if (piece.text.empty() || piece.text[0] != ' ') piece.text = " " + piece.text;
      }
    }
    if (split_) pieces = split_->split(std::move(pieces));
    const auto& map = byte_to_unicode();
    for (Piece& piece : pieces) {
      std::string mapped;
      mapped.reserve(piece.text.size() * 2);
      for (const char c : piece.text) mapped += map[static_cast<unsigned char>(c)];
      piece.text = std::move(mapped);
    }
    return pieces;
  }

 private:
  static std::shared_ptr<Regex> gpt2_regex() {
    static const auto regex = std::make_shared<Regex>(kGpt2Pattern);
    return regex;
  }
  bool add_prefix_space_;
  std::unique_ptr<Split> split_;
};

class Metaspace : public PreTokenizer {
 public:
  enum class Prepend { kAlways, kFirst, kNever };
  Metaspace(std::string replacement, Prepend prepend, bool split)
      : replacement_(std::move(replacement)), prepend_(prepend), split_(split) {}
  std::vector<Piece> split(std::vector<Piece> pieces) const override {
    std::vector<Piece> out;
    for (Piece& piece : pieces) {
      replace_all(piece.text, " ", replacement_);
      const bool starts = piece.text.compare(0, replacement_.size(), replacement_) == 0;
      if (!starts && (prepend_ == Prepend::kAlways || (prepend_ == Prepend::kFirst && piece.at_origin))) {
        piece.text.insert(0, replacement_);
      }
      if (!split_) {
        out.push_back(std::move(piece));
        continue;
      }
      Pattern pattern(json{{"String", replacement_}}, "Metaspace");
      for (Piece& part : split_piece(piece, pattern, Behavior::kMergedWithNext, false)) out.push_back(std::move(part));
    }
    return out;
  }

 private:
  std::string replacement_;
  Prepend prepend_;
  bool split_;
};

Metaspace::Prepend prepend_scheme(const json& spec, const std::string& where) {
  if (spec.contains("prepend_scheme")) {
    const auto scheme = spec.at("prepend_scheme").get<std::string>();
    if (scheme == "always") return Metaspace::Prepend::kAlways;
    if (scheme == "first") return Metaspace::Prepend::kFirst;
    if (scheme == "never") return Metaspace::Prepend::kNever;
    fail(where, ": unknown Metaspace prepend_scheme '", scheme, "'");
  }
  return get_or(spec, "add_prefix_space", true) ? Metaspace::Prepend::kAlways : Metaspace::Prepend::kNever;
}

// ---------------------------------------------------------------------------- decoders

class DecoderSequence : public Decoder {
 public:
  explicit DecoderSequence(std::vector<std::unique_ptr<Decoder>> steps) : steps_(std::move(steps)) {}
  void decode(std::vector<std::string>& tokens) const override {
    for (const auto& step : steps_) step->decode(tokens);
  }

 private:
  std::vector<std::unique_ptr<Decoder>> steps_;
};

// Byte-level characters back to bytes; a token with any other character keeps its own
// UTF-8 bytes (added tokens such as "<|im_start|>" are plain text).
class ByteLevelDecoder : public Decoder {
 public:
  void decode(std::vector<std::string>& tokens) const override {
    std::string bytes;
    for (const std::string& token : tokens) {
      std::string mapped;
      bool all_mapped = true;
      for (size_t pos = 0; pos < token.size() && all_mapped;) {
        const auto byte = unicode_to_byte(next_code_point(token, pos));
        if (byte) {
          mapped += static_cast<char>(*byte);
        } else {
          all_mapped = false;
        }
      }
      bytes += all_mapped ? mapped : token;
    }
    tokens = {utf8_lossy(bytes)};
  }
};

// Runs of "<0xAB>" tokens become their bytes when those form UTF-8, else one U+FFFD each.
class ByteFallback : public Decoder {
 public:
  void decode(std::vector<std::string>& tokens) const override {
    std::vector<std::string> out;
    std::string pending;
    auto flush = [&] {
      if (pending.empty()) return;
      if (!invalid_utf8_offset(pending)) {
        out.push_back(pending);
      } else {
        for (size_t i = 0; i < pending.size(); ++i) out.push_back("\xEF\xBF\xBD");
      }
      pending.clear();
    };
    for (std::string& token : tokens) {
      if (const auto byte = byte_token(token)) {
        pending += static_cast<char>(*byte);
      } else {
        flush();
        out.push_back(std::move(token));
      }
    }
    flush();
    tokens = std::move(out);
  }

 private:
  static std::optional<unsigned char> byte_token(const std::string& token) {
    if (token.size() != 6 || token.compare(0, 3, "<0x") != 0 || token[5] != '>') return std::nullopt;
    unsigned value = 0;
    for (int i = 3; i < 5; ++i) {
      const char c = token[i];
      const int digit = c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10
                                                          : c >= 'A' && c <= 'F' ? c - 'A' + 10 : -1;
      if (digit < 0) return std::nullopt;
      value = value * 16 + digit;
    }
    return static_cast<unsigned char>(value);
  }
};

class Fuse : public Decoder {
 public:
  void decode(std::vector<std::string>& tokens) const override {
    std::string all;
    for (const std::string& token : tokens) all += token;
    tokens = {std::move(all)};
  }
};

class ReplaceDecoder : public Decoder {
 public:
  ReplaceDecoder(Pattern pattern, std::string content) : pattern_(std::move(pattern)), content_(std::move(content)) {}
  void decode(std::vector<std::string>& tokens) const override {
    for (std::string& token : tokens) pattern_.replace(token, content_);
  }

 private:
  Pattern pattern_;
  std::string content_;
};

// Removes up to `start` leading and `stop` trailing copies of one character per token.
class StripDecoder : public Decoder {
 public:
  StripDecoder(std::string content, size_t start, size_t stop) : content_(std::move(content)), start_(start), stop_(stop) {}
  void decode(std::vector<std::string>& tokens) const override {
    for (std::string& token : tokens) {
      const auto chars = utf8_chars(token);
      size_t begin = 0, end = chars.size();
      while (begin < start_ && begin < end && chars[begin] == content_) ++begin;
      for (size_t i = 0; i < stop_ && end > begin && chars[end - 1] == content_; ++i) --end;
      std::string kept;
      for (size_t i = begin; i < end; ++i) kept += chars[i];
      token = std::move(kept);
    }
  }

 private:
  std::string content_;
  size_t start_, stop_;
};

// The replacement character becomes a space, except in the first token when a prefix
// was prepended (there every one is dropped, as HF does).
class MetaspaceDecoder : public Decoder {
 public:
  MetaspaceDecoder(std::string replacement, bool drop_in_first)
      : replacement_(std::move(replacement)), drop_in_first_(drop_in_first) {}
  void decode(std::vector<std::string>& tokens) const override {
    for (size_t i = 0; i < tokens.size(); ++i) replace_all(tokens[i], replacement_, i == 0 && drop_in_first_ ? "" : " ");
  }

 private:
  std::string replacement_;
  bool drop_in_first_;
};

std::vector<int> template_ids(const json& spec, const std::string& name, const std::string& where) {
  const auto& specials = spec.at("special_tokens");
  if (!specials.contains(name)) fail(where, ": TemplateProcessing names special token '", name, "' without ids");
  std::vector<int> ids;
  for (const json& id : specials.at(name).at("ids")) {
    ids.push_back(json_integer<int>(id, where + ": an id of special token '" + name + "'", 0));
  }
  return ids;
}

void add_template(PostProcessor& post, const json& spec, const std::string& where) {
  bool seen_sequence = false;
  for (const auto& item : spec.at("single")) {
    if (item.contains("Sequence")) {
      seen_sequence = true;
      continue;
    }
    if (!item.contains("SpecialToken")) fail(where, ": unknown TemplateProcessing item ", item.dump());
    const auto ids = template_ids(spec, item.at("SpecialToken").at("id").get<std::string>(), where);
    auto& side = seen_sequence ? post.suffix : post.prefix;
    side.insert(side.end(), ids.begin(), ids.end());
  }
}

}  // namespace

std::vector<int> PostProcessor::apply(std::vector<int> ids) const {
  if (prefix.empty() && suffix.empty()) return ids;
  std::vector<int> out(prefix);
  out.insert(out.end(), ids.begin(), ids.end());
  out.insert(out.end(), suffix.begin(), suffix.end());
  return out;
}

std::unique_ptr<Normalizer> make_normalizer(const json& spec, const std::string& where) {
  if (spec.is_null()) return nullptr;
  const std::string type = type_of(spec, where, "normalizer");
  if (type == "Sequence") {
    std::vector<std::unique_ptr<Normalizer>> steps;
    for (const auto& step : spec.at("normalizers")) {
      if (auto made = make_normalizer(step, where)) steps.push_back(std::move(made));
    }
    return std::make_unique<NormalizerSequence>(std::move(steps));
  }
  if (type == "Prepend") return std::make_unique<Prepend>(spec.at("prepend").get<std::string>());
  if (type == "Replace") {
    return std::make_unique<ReplaceNormalizer>(Pattern(spec.at("pattern"), where), spec.at("content").get<std::string>());
  }
  if (type == "NFC") return std::make_unique<UnicodeNormalizer>(NormalForm::kNfc);
  if (type == "NFD") return std::make_unique<UnicodeNormalizer>(NormalForm::kNfd);
  if (type == "NFKC") return std::make_unique<UnicodeNormalizer>(NormalForm::kNfkc);
  if (type == "NFKD") return std::make_unique<UnicodeNormalizer>(NormalForm::kNfkd);
  if (type == "Lowercase") return std::make_unique<Lowercase>();
  if (type == "Strip") return std::make_unique<StripNormalizer>(get_or(spec, "strip_left", true), get_or(spec, "strip_right", true));
  fail(where, ": normalizer type '", type, "' is not supported");
}

std::unique_ptr<PreTokenizer> make_pre_tokenizer(const json& spec, const std::string& where) {
  if (spec.is_null()) return nullptr;
  const std::string type = type_of(spec, where, "pre_tokenizer");
  if (type == "Sequence") {
    std::vector<std::unique_ptr<PreTokenizer>> steps;
    for (const auto& step : spec.at("pretokenizers")) {
      if (auto made = make_pre_tokenizer(step, where)) steps.push_back(std::move(made));
    }
    return std::make_unique<PreTokenizerSequence>(std::move(steps));
  }
  if (type == "ByteLevel") {
    return std::make_unique<ByteLevel>(get_or(spec, "add_prefix_space", true), get_or(spec, "use_regex", true));
  }
  if (type == "Split") {
    return std::make_unique<Split>(Pattern(spec.at("pattern"), where),
                                   parse_behavior(spec.at("behavior").get<std::string>(), where),
                                   get_or(spec, "invert", false));
  }
  if (type == "Digits") {
    const bool individual = get_or(spec, "individual_digits", false);
    return std::make_unique<Split>(Pattern(json{{"Regex", individual ? "\\p{N}" : "\\p{N}+"}}, where),
                                   Behavior::kIsolated, false);
  }
  if (type == "Metaspace") {
    return std::make_unique<Metaspace>(get_or<std::string>(spec, "replacement", "\xE2\x96\x81"),
                                       prepend_scheme(spec, where), get_or(spec, "split", true));
  }
  fail(where, ": pre_tokenizer type '", type, "' is not supported");
}

std::unique_ptr<Decoder> make_decoder(const json& spec, const std::string& where) {
  if (spec.is_null()) return nullptr;
  const std::string type = type_of(spec, where, "decoder");
  if (type == "Sequence") {
    std::vector<std::unique_ptr<Decoder>> steps;
    for (const auto& step : spec.at("decoders")) {
      if (auto made = make_decoder(step, where)) steps.push_back(std::move(made));
    }
    return std::make_unique<DecoderSequence>(std::move(steps));
  }
  if (type == "ByteLevel") return std::make_unique<ByteLevelDecoder>();
  if (type == "ByteFallback") return std::make_unique<ByteFallback>();
  if (type == "Fuse") return std::make_unique<Fuse>();
  if (type == "Replace") {
    return std::make_unique<ReplaceDecoder>(Pattern(spec.at("pattern"), where), spec.at("content").get<std::string>());
  }
  if (type == "Strip") {
    return std::make_unique<StripDecoder>(spec.at("content").get<std::string>(), json_integer<size_t>(spec.at("start"), where + ": Strip decoder 'start'"),
                                          json_integer<size_t>(spec.at("stop"), where + ": Strip decoder 'stop'"));
  }
  if (type == "Metaspace") {
    return std::make_unique<MetaspaceDecoder>(get_or<std::string>(spec, "replacement", "\xE2\x96\x81"),
                                              prepend_scheme(spec, where) != Metaspace::Prepend::kNever);
  }
  fail(where, ": decoder type '", type, "' is not supported");
}

PostProcessor make_post_processor(const json& spec, const std::string& where) {
  PostProcessor post;
  if (spec.is_null()) return post;
  const std::string type = type_of(spec, where, "post_processor");
  if (type == "Sequence") {
    for (const auto& step : spec.at("processors")) {
      const PostProcessor inner = make_post_processor(step, where);
      // Each step wraps what the previous ones produced.
      post.prefix.insert(post.prefix.begin(), inner.prefix.begin(), inner.prefix.end());
      post.suffix.insert(post.suffix.end(), inner.suffix.begin(), inner.suffix.end());
    }
  } else if (type == "TemplateProcessing") {
    add_template(post, spec, where);
  } else if (type == "RobertaProcessing" || type == "BertProcessing") {
    post.prefix = {json_integer<int>(spec.at("cls").at(1), where + ": post_processor 'cls' id", 0)};
    post.suffix = {json_integer<int>(spec.at("sep").at(1), where + ": post_processor 'sep' id", 0)};
  } else if (type != "ByteLevel") {  // ByteLevel only trims offsets
    fail(where, ": post_processor type '", type, "' is not supported");
  }
  return post;
}

}  // namespace qft::text
