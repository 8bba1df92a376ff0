#include "args.h"

#include <cstdio>
#include <filesystem>

#include "core/error.h"

namespace qft::cli {

Args::Args(std::string command, std::string summary, std::vector<OptionSpec> specs)
    : command_(std::move(command)), summary_(std::move(summary)), specs_(std::move(specs)) {
  specs_.push_back({"help", "", "print this help and exit", ""});
}

const OptionSpec* Args::find_spec(const std::string& name) const {
  for (const OptionSpec& spec : specs_) {
    if (spec.name == name) return &spec;
  }
  return nullptr;
}

const OptionSpec& Args::spec(const std::string& name) const {
  if (const OptionSpec* found = find_spec(name)) return *found;
  fail("unknown option '--", name, "' (see qft ", command_, " --help)");
}

bool Args::parse(int argc, char** argv) {
  for (int i = 0; i < argc; ++i) {
    const std::string word = argv[i];
    if (word.rfind("--", 0) != 0) fail("unexpected argument '", word, "' (see qft ", command_, " --help)");
    std::string name = word.substr(2);
    std::optional<std::string> value;
    if (const size_t equals = name.find('='); equals != std::string::npos) {
      value = name.substr(equals + 1);
      name.resize(equals);
    }
    const OptionSpec& option = spec(name);
    on_command_line_.insert(name);
    if (option.value_name.empty()) {
      const std::optional<bool> on = value ? parse_recipe_bool(*value) : true;
      if (!on) fail("option '--", name, "' is a flag: give it alone, or as --", name, "=true|false");
      if (*on) values_[name] = "1";
      else values_.erase(name);
    } else {
      if (!value) {
        if (i + 1 >= argc) fail("option '--", name, "' needs a value ", option.value_name);
        value = argv[++i];
      }
      values_[name] = *value;
    }
  }
  if (has("help")) {
    std::fputs(usage().c_str(), stdout);
    return false;
  }
  return true;
}

bool Args::has(const std::string& name) const { return values_.count(name) > 0; }

void Args::resolve(const std::string& name, const std::string& value) {
  spec(name);  // throws for an unknown option
  values_.emplace(name, value);
}

std::optional<std::string> Args::find(const std::string& name) const {
  const auto found = values_.find(name);
  if (found != values_.end()) return found->second;
  const OptionSpec& option = spec(name);
  if (!option.default_value.empty()) return option.default_value;
  return std::nullopt;
}

std::string Args::get(const std::string& name) const {
  const auto value = find(name);
  if (!value) fail("missing required option '--", name, "' (see qft ", command_, " --help)");
  return *value;
}

std::string Args::source(const std::string& name) const {
  const auto line = recipe_lines_.find(name);
  if (line != recipe_lines_.end()) return line->second + ": key '" + name + "'";
  return "option '--" + name + "'";
}

long long Args::get_int64(const std::string& name) const {
  const std::string text = get(name);
  size_t used = 0;
  long long value = 0;
  try {
    value = std::stoll(text, &used);
  } catch (const std::exception&) {
    used = 0;
  }
  if (used == 0 || used != text.size()) fail(source(name), " expects an integer, got '", text, "'");
  return value;
}

int Args::get_int(const std::string& name) const {
  const long long value = get_int64(name);
  if (value < -(1ll << 31) || value >= (1ll << 31)) fail(source(name), " is out of range");
  return static_cast<int>(value);
}

float Args::get_float(const std::string& name) const {
  const std::string text = get(name);
  size_t used = 0;
  float value = 0;
  try {
    value = std::stof(text, &used);
  } catch (const std::exception&) {
    used = 0;
  }
  if (used == 0 || used != text.size()) fail(source(name), " expects a number, got '", text, "'");
  return value;
}

void Args::require(const std::vector<std::string>& names) const {
  for (const std::string& name : names) {
    if (find(name)) continue;
    if (recipe_path_.empty()) fail("missing required option '--", name, "' (see qft ", command_, " --help)");
    fail(recipe_path_, ": missing required key '", name, "' (set it in the recipe or give --", name, ")");
  }
}

void Args::apply_recipe(const Recipe& recipe, const std::string& recipe_option) {
  recipe_path_ = recipe.path;
  for (const RecipeEntry& entry : recipe.entries) {
    const std::string where = recipe.path + ":" + std::to_string(entry.line);
    const OptionSpec* known = find_spec(entry.key);
    if (!known || entry.key == "help" || entry.key == recipe_option) {
      fail(where, ": unknown key '", entry.key, "' (qft ", command_, " --help lists the options a recipe can set)");
    }
    if (on_command_line_.count(entry.key)) continue;  // the command line overrides the file
    if (known->value_name.empty()) {
      const std::optional<bool> on = parse_recipe_bool(entry.value);
      if (!on) fail(where, ": key '", entry.key, "' is a flag and expects true or false, got '", entry.value, "'");
      if (*on) values_[entry.key] = "1";
      continue;
    }
    values_[entry.key] = entry.value;
    recipe_lines_[entry.key] = where;
  }
}

std::string Args::resolved_recipe(const std::string& recipe_option, const std::vector<std::string>& header) const {
  std::vector<std::pair<std::string, std::string>> entries;
  for (const OptionSpec& option : specs_) {
    if (option.name == "help" || option.name == recipe_option) continue;
    if (option.value_name.empty()) {
      entries.emplace_back(option.name, has(option.name) ? "true" : "false");
    } else if (const auto value = find(option.name)) {
      // Paths absolute, so the settings repeat the run from any directory.
      const bool path = option.value_name == "PATH" || option.value_name == "FILE" || option.value_name == "DIR";
      entries.emplace_back(option.name, path ? std::filesystem::absolute(*value).lexically_normal().string() : *value);
    }
  }
  return format_recipe(entries, header);
}

std::string Args::usage() const {
  std::string text = "usage: qft " + command_ + " [options]\n\n" + summary_ + "\n\noptions:\n";
  for (const OptionSpec& option : specs_) {
    std::string left = "  --" + option.name + (option.value_name.empty() ? "" : " " + option.value_name);
    if (left.size() < 28) left.append(28 - left.size(), ' ');
    else left += "\n" + std::string(28, ' ');
    text += left + option.help;
    if (!option.default_value.empty()) text += " (default: " + option.default_value + ")";
    text += "\n";
  }
  return text;
}

}  // namespace qft::cli
