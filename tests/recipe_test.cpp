// Recipe files (io/recipe.h): the shape checks and the line numbers their
// errors carry; booleans; the writer's output reads back to the same values.
#include <gtest/gtest.h>

#include "core/error.h"
#include "io/recipe.h"

namespace qft {
namespace {

std::string error_of(const std::string& text) {
  try {
    parse_recipe(text, "r.yaml");
  } catch (const Error& error) {
    return error.what();
  }
  return "no error";
}

TEST(Recipe, ReadsScalarsInOrderWithTheirLines) {
  const Recipe recipe = parse_recipe("# a comment\nlr: 2e-5\n\nseq-len: 2048   # segments\npack: true\nmodel: \"a b/c\"\n",
                                     "r.yaml");
  ASSERT_EQ(recipe.entries.size(), 4u);
  EXPECT_EQ(recipe.path, "r.yaml");
  EXPECT_EQ(recipe.entries[0].key, "lr");
  EXPECT_EQ(recipe.entries[0].value, "2e-5");
  EXPECT_EQ(recipe.entries[0].line, 2);
  EXPECT_EQ(recipe.entries[1].key, "seq-len");
  EXPECT_EQ(recipe.entries[1].value, "2048");
  EXPECT_EQ(recipe.entries[1].line, 4);
  EXPECT_EQ(recipe.entries[2].value, "true");
  EXPECT_EQ(recipe.entries[3].value, "a b/c");
  EXPECT_EQ(recipe.entries[3].line, 6);
  EXPECT_TRUE(parse_recipe("", "r.yaml").entries.empty());
  EXPECT_TRUE(parse_recipe("# only a comment\n", "r.yaml").entries.empty());
}

TEST(Recipe, ShapeErrorsNameTheFileAndLine) {
  EXPECT_EQ(error_of("lr: 1\nbatch: [1, 2]\n"), "r.yaml:2: key 'batch' needs a single value, not a list");
  EXPECT_EQ(error_of("lr: 1\n\nbatch:\n  a: 1\n"), "r.yaml:3: key 'batch' needs a single value, not a map");
  EXPECT_EQ(error_of("lr:\n"), "r.yaml:1: key 'lr' needs a single value, not nothing");
  EXPECT_EQ(error_of("lr: 1\nbatch: 2\nlr: 3\n"), "r.yaml:3: key 'lr' is given twice");
  EXPECT_EQ(error_of("- lr\n- 1\n"), "r.yaml:1: a recipe is a map of option: value, not a list");
  EXPECT_EQ(error_of("just text\n"), "r.yaml:1: a recipe is a map of option: value, not a scalar");
  EXPECT_EQ(error_of("[a, b]: 1\n"), "r.yaml:1: a key must be an option name, not a list");
  const std::string syntax = error_of("lr: 1\nbatch: [1, 2\n");
  EXPECT_EQ(syntax.rfind("r.yaml:", 0), 0u) << syntax;
  EXPECT_NE(syntax.find("not valid YAML"), std::string::npos) << syntax;
  const std::string indent = error_of("lr: 1\n  batch: 2\n");
  EXPECT_EQ(indent.rfind("r.yaml:2:", 0), 0u) << indent;
}

TEST(Recipe, MissingFileIsNamed) {
  try {
    read_recipe("/nonexistent/recipe.yaml");
    FAIL() << "no error";
  } catch (const Error& error) {
    EXPECT_STREQ(error.what(), "/nonexistent/recipe.yaml: cannot open the recipe file");
  }
}

TEST(Recipe, Booleans) {
  for (const char* yes : {"true", "True", "yes", "on"}) EXPECT_EQ(parse_recipe_bool(yes), true) << yes;
  for (const char* no : {"false", "FALSE", "no", "off"}) EXPECT_EQ(parse_recipe_bool(no), false) << no;
  for (const char* neither : {"1", "0", "", "truth"}) EXPECT_EQ(parse_recipe_bool(neither), std::nullopt) << neither;
}

TEST(Recipe, WrittenRecipesReadBackToTheSameValues) {
  const std::vector<std::pair<std::string, std::string>> entries = {
      {"model", "dir with spaces/m.gguf"}, {"lr", "2e-5"}, {"pack", "true"}, {"chat-template", "yes"},
      {"data", "a: b # c.json"}, {"note", "[x]"}, {"empty-looking", "~"}};
  const std::string text = format_recipe(entries, {"made by a test", "second line"});
  EXPECT_EQ(text.rfind("# made by a test\n# second line\n", 0), 0u) << text;
  const Recipe recipe = parse_recipe(text, "w.yaml");
  ASSERT_EQ(recipe.entries.size(), entries.size()) << text;
  for (size_t i = 0; i < entries.size(); ++i) {
    EXPECT_EQ(recipe.entries[i].key, entries[i].first) << text;
    EXPECT_EQ(recipe.entries[i].value, entries[i].second) << text;
  }
}

// Found by fuzz/recipe_fuzz (build-fuzz/artifacts/recipe-crash-0957b881…): a
// value with a form feed and a byte that is not UTF-8 did not read back.
TEST(Recipe, ControlCharactersRoundTripAndInvalidUtf8IsRefused) {
  const std::vector<std::pair<std::string, std::string>> controls = {{"model", "build/models/Sm\x0clLM2\t1\n2\x7f"}};
  const Recipe recipe = parse_recipe(format_recipe(controls, {}), "w.yaml");
  ASSERT_EQ(recipe.entries.size(), 1u);
  EXPECT_EQ(recipe.entries[0].value, controls[0].second);
  try {
    format_recipe({{"model", "build/models/SmolLM2-135\xa7/x.gguf"}}, {});
    FAIL() << "no error";
  } catch (const Error& error) {
    EXPECT_STREQ(error.what(), "option 'model': its value is not valid UTF-8 (byte 24), which a YAML recipe cannot hold");
  }
}

}  // namespace
}  // namespace qft
