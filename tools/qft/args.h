#pragma once
// Long-option parsing for the qft subcommands: `--name value`, `--name=value`
// and boolean `--flag`; `--help` prints the usage generated from the specs.
#include <map>
#include <optional>
#include <string>
#include <vector>

namespace qft::cli {

struct OptionSpec {
  std::string name;         // without the leading dashes
  std::string value_name;   // empty for a boolean flag
  std::string help;
  std::string default_value;  // shown in --help; empty for none
};

class Args {
 public:
  Args(std::string command, std::string summary, std::vector<OptionSpec> specs);

  // Returns false when --help was printed. Throws qft::Error on bad input.
  bool parse(int argc, char** argv);

  bool has(const std::string& name) const;
  std::string get(const std::string& name) const;  // value or default; throws when neither
  std::optional<std::string> find(const std::string& name) const;
  int get_int(const std::string& name) const;
  long long get_int64(const std::string& name) const;
  float get_float(const std::string& name) const;
  bool flag(const std::string& name) const { return has(name); }
  // Throws unless exactly the listed options are all present.
  void require(const std::vector<std::string>& names) const;

  std::string usage() const;

 private:
  const OptionSpec& spec(const std::string& name) const;

  std::string command_, summary_;
  std::vector<OptionSpec> specs_;
  std::map<std::string, std::string> values_;
};

}  // namespace qft::cli
