#include "io/recipe.h"

#include <algorithm>
#include <fstream>
#include <set>
#include <sstream>

#include <yaml-cpp/yaml.h>

#include "core/error.h"
#include "text/unicode.h"

namespace qft {
namespace {

const char* kind_name(const YAML::Node& node) {
  switch (node.Type()) {
    case YAML::NodeType::Sequence: return "a list";
    case YAML::NodeType::Map: return "a map";
    case YAML::NodeType::Null: return "nothing";
    default: return "a scalar";
  }
}

std::string at(const std::string& path, const YAML::Mark& mark) {
  return path + ":" + std::to_string(mark.line + 1);
}

}  // namespace

Recipe parse_recipe(const std::string& text, const std::string& path) {
  YAML::Node root;
  try {
    root = YAML::Load(text);
  } catch (const YAML::Exception& error) {
    fail(path, ":", error.mark.line + 1, ":", error.mark.column + 1, ": not valid YAML: ", error.msg);
  }
  Recipe recipe{path, {}};
  if (root.IsNull()) return recipe;  // an empty file sets nothing
  if (!root.IsMap()) fail(at(path, root.Mark()), ": a recipe is a map of option: value, not ", kind_name(root));
  std::set<std::string> seen;
  for (const auto& item : root) {
    const YAML::Node& key = item.first;
    const YAML::Node& value = item.second;
    if (!key.IsScalar()) fail(at(path, key.Mark()), ": a key must be an option name, not ", kind_name(key));
    const std::string name = key.Scalar();
    if (!seen.insert(name).second) fail(at(path, key.Mark()), ": key '", name, "' is given twice");
    if (!value.IsScalar()) {
      fail(at(path, key.Mark()), ": key '", name, "' needs a single value, not ", kind_name(value));
    }
    recipe.entries.push_back({name, value.Scalar(), key.Mark().line + 1});
  }
  return recipe;
}

Recipe read_recipe(const std::string& path) {
  std::ifstream file(path, std::ios::binary);
  if (!file) fail(path, ": cannot open the recipe file");
  std::ostringstream text;
  text << file.rdbuf();
  if (file.bad()) fail(path, ": cannot read the recipe file");
  return parse_recipe(text.str(), path);
}

std::optional<bool> parse_recipe_bool(const std::string& text) {
  std::string lower = text;
  std::transform(lower.begin(), lower.end(), lower.begin(), [](unsigned char c) { return std::tolower(c); });
  if (lower == "true" || lower == "yes" || lower == "on") return true;
  if (lower == "false" || lower == "no" || lower == "off") return false;
  return std::nullopt;
}

std::string format_recipe(const std::vector<std::pair<std::string, std::string>>& entries,
                          const std::vector<std::string>& header) {
  YAML::Emitter out;
  for (const std::string& line : header) out << YAML::Comment(line) << YAML::Newline;
  out << YAML::BeginMap;
  for (const auto& [key, value] : entries) {
    // YAML holds Unicode text only; control characters are kept by quoting.
    if (const auto bad = text::invalid_utf8_offset(value)) {
      fail("option '", key, "': its value is not valid UTF-8 (byte ", *bad, "), which a YAML recipe cannot hold");
    }
    const bool control = std::any_of(value.begin(), value.end(), [](unsigned char c) { return c < 0x20 || c == 0x7f; });
    out << YAML::Key << key << YAML::Value;
    if (control) out << YAML::DoubleQuoted;
    out << value;
  }
  out << YAML::EndMap;
  return std::string(out.c_str()) + "\n";
}

}  // namespace qft
