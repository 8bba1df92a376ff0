#pragma once
// The split regexes of HF pre-tokenizers (written for Oniguruma) through PCRE2 in UTF
// mode with Unicode properties: \p{L}, \p{N}, case-insensitive groups, look-ahead.
#include <cstddef>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace qft::text {

class Regex {
 public:
  explicit Regex(const std::string& pattern);  // fails naming the pattern when it is invalid
  Regex(const Regex&) = delete;
  Regex& operator=(const Regex&) = delete;
  ~Regex();

  // [begin, end) byte ranges of the successive non-overlapping matches in valid UTF-8
  // `text`, left to right (after an empty match the search resumes one character later).
  std::vector<std::pair<size_t, size_t>> find_all(std::string_view text) const;

  const std::string& pattern() const { return pattern_; }

 private:
  std::string pattern_;
  void* code_ = nullptr;  // pcre2_code_8
};

// Oniguruma's \s and \S are Unicode White_Space; PCRE2's UCP classes leave out U+0085
// and the like, so patterns are rewritten with the explicit set before compiling.
std::string onig_to_pcre2(const std::string& pattern);

}  // namespace qft::text
