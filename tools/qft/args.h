#pragma once
// Long-option parsing for the qft subcommands: `--name value`, `--name=value`
// and boolean `--flag` (or `--flag=true|false`); `--help` prints the usage
// generated from the specs. Options can also come from a recipe file
// (io/recipe.h): the command line overrides it, and errors about a value from
// the file name the file, its line and the key.
#include <map>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "io/recipe.h"

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
  bool declares(const std::string& name) const { return find_spec(name) != nullptr; }
  // Records a value the command chose for an option left unset (a default
  // that depends on other options), so resolved_recipe() names it.
  void resolve(const std::string& name, const std::string& value);
  std::string get(const std::string& name) const;  // value or default; throws when neither
  std::optional<std::string> find(const std::string& name) const;
  int get_int(const std::string& name) const;
  long long get_int64(const std::string& name) const;
  float get_float(const std::string& name) const;
  bool flag(const std::string& name) const { return has(name); }
  // Throws unless exactly the listed options are all present.
  void require(const std::vector<std::string>& names) const;

  // Takes every option of the recipe that the command line did not set; an
  // unknown key, or a flag whose value is not a boolean, is an error with the
  // file and line. `recipe_option` (the option naming the file) and --help
  // cannot be set from a recipe.
  void apply_recipe(const Recipe& recipe, const std::string& recipe_option);
  // Every option's resolved value (given or default; flags true/false) as a
  // recipe that repeats the run, without `recipe_option`.
  std::string resolved_recipe(const std::string& recipe_option, const std::vector<std::string>& header) const;

  std::string usage() const;

 private:
  const OptionSpec* find_spec(const std::string& name) const;  // nullptr when unknown
  const OptionSpec& spec(const std::string& name) const;         // throws when unknown
  // "FILE:LINE: key 'NAME'" for a value from a recipe, "option '--NAME'" otherwise.
  std::string source(const std::string& name) const;

  std::string command_, summary_;
  std::vector<OptionSpec> specs_;
  std::map<std::string, std::string> values_;  // flags: present when true
  std::set<std::string> on_command_line_;       // names the command line set (flags too, true or false)
  std::map<std::string, std::string> recipe_lines_;  // name -> "FILE:LINE" for values from a recipe
  std::string recipe_path_;
};

}  // namespace qft::cli
