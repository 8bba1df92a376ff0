#include "text/unicode.h"

#include <unicode/locid.h>
#include <unicode/normalizer2.h>
#include <unicode/uchar.h>
#include <unicode/unistr.h>

#include "core/error.h"

namespace qft::text {
namespace {

// Length of the valid UTF-8 prefix of the sequence starting at `pos` (Unicode's "maximal
// subpart"), and whether it is a whole character.
struct Sequence {
  size_t length;
  bool complete;
};

Sequence utf8_sequence(std::string_view text, size_t pos) {
  const auto lead = static_cast<unsigned char>(text[pos]);
  if (lead < 0x80) return {1, true};
  size_t need;
  unsigned char low = 0x80, high = 0xBF;  // range of the second byte
  if (lead >= 0xC2 && lead <= 0xDF) {
    need = 1;
  } else if (lead >= 0xE0 && lead <= 0xEF) {
    need = 2;
    if (lead == 0xE0) low = 0xA0;
    if (lead == 0xED) high = 0x9F;  // no surrogates
  } else if (lead >= 0xF0 && lead <= 0xF4) {
    need = 3;
    if (lead == 0xF0) low = 0x90;
    if (lead == 0xF4) high = 0x8F;
  } else {
    return {1, false};
  }
  size_t length = 1;
  for (size_t i = 0; i < need; ++i) {
    if (pos + length >= text.size()) return {length, false};
    const auto byte = static_cast<unsigned char>(text[pos + length]);
    if (byte < (i == 0 ? low : 0x80) || byte > (i == 0 ? high : 0xBF)) return {length, false};
    ++length;
  }
  return {length, true};
}

std::string to_utf8(const icu::UnicodeString& text) {
  std::string out;
  text.toUTF8String(out);
  return out;
}

icu::UnicodeString from_utf8(std::string_view text) {
  return icu::UnicodeString::fromUTF8(icu::StringPiece(text.data(), static_cast<int32_t>(text.size())));
}

}  // namespace

std::optional<size_t> invalid_utf8_offset(std::string_view text) {
  for (size_t pos = 0; pos < text.size();) {
    const Sequence sequence = utf8_sequence(text, pos);
    if (!sequence.complete) return pos;
    pos += sequence.length;
  }
  return std::nullopt;
}

std::string utf8_lossy(std::string_view bytes) {
  std::string out;
  out.reserve(bytes.size());
  for (size_t pos = 0; pos < bytes.size();) {
    const Sequence sequence = utf8_sequence(bytes, pos);
    if (sequence.complete) {
      out.append(bytes.substr(pos, sequence.length));
    } else {
      out += "\xEF\xBF\xBD";  // U+FFFD
    }
    pos += sequence.length;
  }
  return out;
}

char32_t next_code_point(std::string_view text, size_t& pos) {
  const auto lead = static_cast<unsigned char>(text[pos]);
  if (lead < 0x80) {
    ++pos;
    return lead;
  }
  const size_t length = lead >= 0xF0 ? 4 : lead >= 0xE0 ? 3 : 2;
  char32_t c = lead & (0x7F >> length);
  for (size_t i = 1; i < length; ++i) c = (c << 6) | (static_cast<unsigned char>(text[pos + i]) & 0x3F);
  pos += length;
  return c;
}

void append_utf8(std::string& out, char32_t c) {
  if (c < 0x80) {
    out += static_cast<char>(c);
  } else if (c < 0x800) {
    out += static_cast<char>(0xC0 | (c >> 6));
    out += static_cast<char>(0x80 | (c & 0x3F));
  } else if (c < 0x10000) {
    out += static_cast<char>(0xE0 | (c >> 12));
    out += static_cast<char>(0x80 | ((c >> 6) & 0x3F));
    out += static_cast<char>(0x80 | (c & 0x3F));
  } else {
    out += static_cast<char>(0xF0 | (c >> 18));
    out += static_cast<char>(0x80 | ((c >> 12) & 0x3F));
    out += static_cast<char>(0x80 | ((c >> 6) & 0x3F));
    out += static_cast<char>(0x80 | (c & 0x3F));
  }
}

std::vector<std::string_view> utf8_chars(std::string_view text) {
  std::vector<std::string_view> chars;
  chars.reserve(text.size());
  for (size_t pos = 0; pos < text.size();) {
    const size_t start = pos;
    next_code_point(text, pos);
    chars.push_back(text.substr(start, pos - start));
  }
  return chars;
}

bool is_white_space(char32_t c) {
  return (c >= 0x09 && c <= 0x0D) || c == 0x20 || c == 0x85 || c == 0xA0 || c == 0x1680 ||
         (c >= 0x2000 && c <= 0x200A) || c == 0x2028 || c == 0x2029 || c == 0x202F || c == 0x205F ||
         c == 0x3000;
}

bool is_word_char(char32_t c) {
  const auto category = u_charType(static_cast<UChar32>(c));
  return u_hasBinaryProperty(static_cast<UChar32>(c), UCHAR_ALPHABETIC) || category == U_NON_SPACING_MARK ||
         category == U_ENCLOSING_MARK || category == U_COMBINING_SPACING_MARK ||
         category == U_DECIMAL_DIGIT_NUMBER || category == U_CONNECTOR_PUNCTUATION ||
         u_hasBinaryProperty(static_cast<UChar32>(c), UCHAR_JOIN_CONTROL);
}

const std::array<std::string, 256>& byte_to_unicode() {
  // Printable Latin-1 bytes stand for themselves; the others map to 256 + n in order.
  static const std::array<std::string, 256> table = [] {
    std::array<std::string, 256> map;
    char32_t next = 256;
    for (int b = 0; b < 256; ++b) {
      const bool printable = (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF);
      append_utf8(map[b], printable ? static_cast<char32_t>(b) : next++);
    }
    return map;
  }();
  return table;
}

std::optional<unsigned char> unicode_to_byte(char32_t c) {
  static const std::array<int, 512> table = [] {
    std::array<int, 512> inverse;
    inverse.fill(-1);
    const auto& forward = byte_to_unicode();
    for (int b = 0; b < 256; ++b) {
      size_t pos = 0;
      inverse[next_code_point(forward[b], pos)] = b;
    }
    return inverse;
  }();
  if (c >= table.size() || table[c] < 0) return std::nullopt;
  return static_cast<unsigned char>(table[c]);
}

std::string normalize(std::string_view text, NormalForm form) {
  UErrorCode status = U_ZERO_ERROR;
  const icu::Normalizer2* normalizer = nullptr;
  switch (form) {
    case NormalForm::kNfc: normalizer = icu::Normalizer2::getNFCInstance(status); break;
    case NormalForm::kNfd: normalizer = icu::Normalizer2::getNFDInstance(status); break;
    case NormalForm::kNfkc: normalizer = icu::Normalizer2::getNFKCInstance(status); break;
    case NormalForm::kNfkd: normalizer = icu::Normalizer2::getNFKDInstance(status); break;
  }
  if (U_FAILURE(status)) fail("ICU normalizer unavailable: ", u_errorName(status));
  const icu::UnicodeString result = normalizer->normalize(from_utf8(text), status);
  if (U_FAILURE(status)) fail("ICU normalization failed: ", u_errorName(status));
  return to_utf8(result);
}

std::string lowercase(std::string_view text) {
  icu::UnicodeString unicode = from_utf8(text);
  unicode.toLower(icu::Locale::getRoot());
  return to_utf8(unicode);
}

std::string uppercase(std::string_view text) {
  icu::UnicodeString unicode = from_utf8(text);
  unicode.toUpper(icu::Locale::getRoot());
  return to_utf8(unicode);
}

}  // namespace qft::text
