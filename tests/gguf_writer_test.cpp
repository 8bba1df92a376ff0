// GGUF files qft writes: read back by qft's reader and by the gguf Python
// package (ggml's own reader).
#include "io/gguf_writer.h"

#include <gtest/gtest.h>

#include <cmath>
#include <nlohmann/json.hpp>
#include <random>

#include "core/error.h"
#include "core/float16.h"
#include "test_util.h"

namespace qft {
namespace {

struct Written {
  test::TempDir dir;
  std::string path;
  std::vector<std::vector<float>> values;
  const std::vector<GgmlType> types = {GgmlType::F32, GgmlType::F16, GgmlType::BF16, GgmlType::Q8_0};

  Written() {
    path = dir.file("model.gguf");
    GgufWriter writer(64);
    writer.add_string("general.architecture", "llama");
    writer.add_uint32("llama.block_count", 3);
    writer.add_float32("llama.rope.freq_base", 10000.0f);
    writer.add_bool("tokenizer.ggml.add_bos_token", true);
    writer.add_string_array("tokenizer.ggml.tokens", {"<s>", "a", "\xc3\xa9", ""});
    writer.add_float32_array("tokenizer.ggml.scores", {0.0f, -1.5f, 2.25f, 0.0f});
    writer.add_int32_array("tokenizer.ggml.token_type", {3, 1, 1, 6});
    std::mt19937 generator(3);
    std::normal_distribution<float> normal(0.0f, 0.5f);
    for (size_t t = 0; t < types.size(); ++t) {
      values.emplace_back(3 * 64);
      for (float& v : values.back()) v = normal(generator);
      writer.add_tensor("t." + std::string(ggml_type_name(types[t])), {3, 64}, types[t]);
    }
    writer.write(path, [&](size_t i, float* out) { std::copy(values[i].begin(), values[i].end(), out); });
  }
};

TEST(GgufWriter, ReadsBackThroughQftsReader) {
  const Written written;
  const GgufFile file(written.path);
  EXPECT_EQ(file.version(), 3u);
  EXPECT_EQ(file.alignment(), 64u);
  EXPECT_EQ(file.get_string("general.architecture"), "llama");
  EXPECT_EQ(file.get_uint("llama.block_count"), 3u);
  EXPECT_EQ(file.get_float("llama.rope.freq_base"), 10000.0);
  EXPECT_TRUE(file.get_bool("tokenizer.ggml.add_bos_token"));
  EXPECT_EQ(file.get_string_array("tokenizer.ggml.tokens"), (std::vector<std::string>{"<s>", "a", "\xc3\xa9", ""}));
  EXPECT_EQ(file.get_float_array("tokenizer.ggml.scores"), (std::vector<double>{0.0, -1.5, 2.25, 0.0}));
  EXPECT_EQ(file.get_int_array("tokenizer.ggml.token_type"), (std::vector<int64_t>{3, 1, 1, 6}));
  for (size_t t = 0; t < written.types.size(); ++t) {
    const GgufTensor& tensor = file.tensor("t." + std::string(ggml_type_name(written.types[t])));
    EXPECT_EQ(tensor.shape(), (Shape{3, 64}));
    EXPECT_EQ(tensor.offset % 64, 0u);
    std::vector<float> back(tensor.numel);
    file.dequantize(tensor, back.data());
    for (size_t j = 0; j < back.size(); ++j) {
      const float x = written.values[t][j];
      switch (written.types[t]) {
        case GgmlType::F32: ASSERT_EQ(back[j], x); break;
        case GgmlType::F16: ASSERT_EQ(back[j], half_to_float(float_to_half(x))); break;
        case GgmlType::BF16: ASSERT_EQ(back[j], bf16_to_float(float_to_bf16(x))); break;
        default: {
          // Q8_0: within half a step of its block's scale max|x|/127.
          const float* block = written.values[t].data() + j / 32 * 32;
          float amax = 0.0f;
          for (int i = 0; i < 32; ++i) amax = std::max(amax, std::abs(block[i]));
          ASSERT_LE(std::abs(back[j] - x), amax / 127.0f * 0.5f * 1.01f) << j;
        }
      }
    }
  }
  // A copied value keeps its type.
  GgufWriter copy;
  copy.add_value("tokenizer.ggml.tokens", file.get("tokenizer.ggml.tokens"));
  copy.add_value("tokenizer.ggml.scores", file.get("tokenizer.ggml.scores"));
  copy.write(written.dir.file("copy.gguf"), [](size_t, float*) {});
  const GgufFile copied(written.dir.file("copy.gguf"));
  EXPECT_EQ(copied.get_string_array("tokenizer.ggml.tokens"), file.get_string_array("tokenizer.ggml.tokens"));
  EXPECT_EQ(copied.get_float_array("tokenizer.ggml.scores"), file.get_float_array("tokenizer.ggml.scores"));
}

// ggml's Python reader (the gguf package) parses the same file and
// de-quantizes every tensor to what qft's reader gives.
TEST(GgufWriter, ReadsBackThroughTheGgufPackage) {
  const Written written;
  const std::string script = written.dir.file("read.py");
  test::write_text(script, R"(import json, sys
import gguf
reader = gguf.GGUFReader(sys.argv[1])
out = {"fields": {}, "tensors": {}}
for name in ["general.architecture", "llama.block_count", "tokenizer.ggml.tokens"]:
    field = reader.fields[name]
    out["fields"][name] = field.contents() if hasattr(field, "contents") else str(field.parts[-1])
for tensor in reader.tensors:
    values = gguf.quants.dequantize(tensor.data, tensor.tensor_type)
    out["tensors"][tensor.name] = [float(v) for v in values.reshape(-1)]
print(json.dumps(out))
)");
  const auto result = test::run_command(std::string(QFT_PYENV_DIR) + "/bin/python " + script + " " + written.path);
  ASSERT_EQ(result.exit_code, 0) << result.output;
  const auto parsed = nlohmann::json::parse(result.output);
  EXPECT_EQ(parsed["fields"]["general.architecture"], "llama");
  EXPECT_EQ(parsed["fields"]["llama.block_count"], 3);
  const GgufFile file(written.path);
  for (const GgufTensor& tensor : file.tensors()) {
    std::vector<float> ours(tensor.numel);
    file.dequantize(tensor, ours.data());
    const auto theirs = parsed["tensors"][tensor.name].get<std::vector<float>>();
    EXPECT_EQ(ours, theirs) << tensor.name;
  }
}

TEST(GgufWriter, RefusesRowsThatDoNotFillBlocks) {
  GgufWriter writer;
  EXPECT_THROW(writer.add_tensor("x", {2, 40}, GgmlType::Q8_0), Error);
  EXPECT_THROW(GgufWriter(12), Error);
}

}  // namespace
}  // namespace qft
