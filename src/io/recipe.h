#pragma once
// Recipe files: a YAML map of command options by their long names
// (`lr: 2e-5`, `seq-len: 2048`, `pack: true`). The reader checks the file's
// shape — one map of scalars, no repeated key — and keeps each value's line
// for error messages; which keys and types are valid is the command's to say.
#include <optional>
#include <string>
#include <utility>
#include <vector>

namespace qft {

struct RecipeEntry {
  std::string key;
  std::string value;  // the scalar as written (quotes removed)
  int line = 0;       // 1-based
};

struct Recipe {
  std::string path;
  std::vector<RecipeEntry> entries;  // in file order
};

// Throws qft::Error naming the file and line on a YAML syntax error, a
// top-level value that is not a map, a key or value that is not a scalar,
// an empty value, or a key given twice.
Recipe read_recipe(const std::string& path);
Recipe parse_recipe(const std::string& text, const std::string& path);

// YAML's booleans as recipes accept them: true/false, yes/no, on/off.
std::optional<bool> parse_recipe_bool(const std::string& text);

// A recipe file's text for (key, value) pairs, values quoted where YAML needs
// it, under a comment header (lines without their "# "). Throws for a value
// that is not valid UTF-8, which YAML cannot represent.
std::string format_recipe(const std::vector<std::pair<std::string, std::string>>& entries,
                          const std::vector<std::string>& header);

}  // namespace qft
