#include "args.h"

#include <cstdio>

#include "core/error.h"

namespace qft::cli {

Args::Args(std::string command, std::string summary, std::vector<OptionSpec> specs)
    : command_(std::move(command)), summary_(std::move(summary)), specs_(std::move(specs)) {
  specs_.push_back({"help", "", "print this help and exit", ""});
}

const OptionSpec& Args::spec(const std::string& name) const {
  for (const OptionSpec& spec : specs_) {
    if (spec.name == name) return spec;
  }
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
    if (option.value_name.empty()) {
      if (value) fail("option '--", name, "' takes no value");
      values_[name] = "1";
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

long long Args::get_int64(const std::string& name) const {
  const std::string text = get(name);
  size_t used = 0;
  long long value = 0;
  try {
    value = std::stoll(text, &used);
  } catch (const std::exception&) {
    used = 0;
  }
  if (used == 0 || used != text.size()) fail("option '--", name, "' expects an integer, got '", text, "'");
  return value;
}

int Args::get_int(const std::string& name) const {
  const long long value = get_int64(name);
  if (value < -(1ll << 31) || value >= (1ll << 31)) fail("option '--", name, "' is out of range");
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
  if (used == 0 || used != text.size()) fail("option '--", name, "' expects a number, got '", text, "'");
  return value;
}

void Args::require(const std::vector<std::string>& names) const {
  for (const std::string& name : names) get(name);
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
