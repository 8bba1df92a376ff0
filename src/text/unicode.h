#pragma once
// UTF-8 and the few Unicode operations the tokenizers need.
#include <array>
#include <cstddef>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace qft::text {

// Byte offset of the first invalid UTF-8 sequence, or nullopt when `text` is valid.
std::optional<size_t> invalid_utf8_offset(std::string_view text);

// Rust's String::from_utf8_lossy (what HF decoders use): every maximal invalid subpart
// becomes U+FFFD.
std::string utf8_lossy(std::string_view bytes);

// Code point at `pos` of valid UTF-8, advancing `pos` past it.
char32_t next_code_point(std::string_view text, size_t& pos);
void append_utf8(std::string& out, char32_t code_point);
// The code points of valid UTF-8, each as a view into `text`.
std::vector<std::string_view> utf8_chars(std::string_view text);

// Unicode White_Space (what Rust's char::is_whitespace and regex \s accept).
bool is_white_space(char32_t c);
// Rust regex's \w: Alphabetic, marks, decimal digits, connector punctuation, joiners.
bool is_word_char(char32_t c);

// GPT-2's byte-level alphabet: every byte as one printable character ("Ġ" for a space).
const std::array<std::string, 256>& byte_to_unicode();
// The byte a byte-level character stands for, or nullopt.
std::optional<unsigned char> unicode_to_byte(char32_t c);

enum class NormalForm { kNfc, kNfd, kNfkc, kNfkd };
std::string normalize(std::string_view text, NormalForm form);  // ICU
std::string lowercase(std::string_view text);                    // full Unicode lowercase
std::string uppercase(std::string_view text);                    // full Unicode uppercase

}  // namespace qft::text
