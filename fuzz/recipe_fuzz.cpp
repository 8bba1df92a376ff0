// The YAML recipe reader and a recipe written back from what it read.
#include "fuzz_util.h"
#include "io/recipe.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string text(reinterpret_cast<const char*>(data), size);
  qft::fuzz::expect_only_qft_errors([&] {
    const qft::Recipe recipe = qft::parse_recipe(text, "input.yaml");
    std::vector<std::pair<std::string, std::string>> entries;
    for (const qft::RecipeEntry& entry : recipe.entries) {
      qft::parse_recipe_bool(entry.value);
      entries.emplace_back("key" + std::to_string(entries.size()), entry.value);
    }
    // What the writer makes of the values reads back to the same values.
    const qft::Recipe again = qft::parse_recipe(qft::format_recipe(entries, {"fuzz"}), "written.yaml");
    if (again.entries.size() != recipe.entries.size()) std::abort();
    for (size_t i = 0; i < entries.size(); ++i) {
      if (again.entries[i].key != entries[i].first || again.entries[i].value != entries[i].second) std::abort();
    }
  });
  return 0;
}
