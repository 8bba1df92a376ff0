// qft export, checked by reading the results back and by loading them with
// transformers (an HF directory, and a GGUF file through transformers' own
// GGUF loader, which undoes llama.cpp's Q/K layout independently of qft).
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "core/float16.h"
#include "data/batch.h"
#include "io/gguf.h"
#include "model/transformer.h"
#include "model/weights.h"
#include "test_util.h"

namespace qft {
namespace {

namespace fs = std::filesystem;
using test::run_command;
using test::TempDir;

const std::string kQft = QFT_BINARY;
const char* const kText = "The quick brown fox jumps over the lazy dog. 1234 🙂 naïve café";

std::string export_model(const std::string& model, const std::string& out, const std::string& options) {
  const auto result = run_command(kQft + " export --model " + model + " --out " + out + " " + options);
  EXPECT_EQ(result.exit_code, 0) << result.output;
  return out;
}

std::vector<std::vector<float>> all_tensors(const ModelSource& source) {
  std::vector<std::vector<float>> tensors;
  for (size_t i = 0; i < source.specs().size(); ++i) {
    tensors.emplace_back(shape_numel(source.specs()[i].shape));
    source.fill(i, tensors.back().data());
  }
  return tensors;
}

TEST(Export, HfRoundTripIsExactInF32AndRoundedInBf16) {
  TempDir dir;
  for (const char* name : {"qwen2_bias", "llama_gqa_untied", "llama31_rope"}) {
    const std::string model = test::reference_case(name);
    const auto original = all_tensors(ModelSource::hf_directory(model));
    const auto f32 = all_tensors(ModelSource::hf_directory(export_model(model, dir.file(std::string(name) + "-f32"), "--dtype f32")));
    const auto bf16 = all_tensors(ModelSource::hf_directory(export_model(model, dir.file(std::string(name) + "-bf16"), "--dtype bf16")));
    EXPECT_EQ(f32, original) << name;
    for (size_t i = 0; i < original.size(); ++i) {
      for (size_t j = 0; j < original[i].size(); ++j) ASSERT_EQ(bf16[i][j], bf16_to_float(float_to_bf16(original[i][j])));
    }
    const auto config = nlohmann::json::parse(test::read_text(dir.file(std::string(name) + "-bf16/config.json")));
    EXPECT_EQ(config.at("torch_dtype"), "bfloat16");
    const auto original_config = nlohmann::json::parse(test::read_text(model + "/config.json"));
    EXPECT_EQ(config.value("rope_scaling", nlohmann::json()), original_config.value("rope_scaling", nlohmann::json())) << name;
  }
}

// RoPE scaling through GGUF: Llama-3's as llama.cpp's per-frequency divisors
// (rope_freqs.weight, computed as its converter does), linear and YaRN as its
// rope.scaling.* keys. The GGUF gives the HF directory's loss; a model whose
// scaling is only factors cannot go back to config.json.
TEST(Export, RopeScalingSurvivesGguf) {
  TempDir dir;
  for (const char* name : {"llama31_rope", "llama_linear_rope", "llama_yarn_rope"}) {
    const std::string model = test::reference_case(name);
    const std::string gguf = export_model(model, dir.file(std::string(name) + ".gguf"), "--format gguf --dtype f32");
    LoadedModel hf = load_hf_model(model);
    LoadedModel back = load_model(gguf);
    const RopeScaling& want = hf.config.rope_scaling;
    const RopeScaling& got = back.config.rope_scaling;
    if (want.type == RopeScaling::Type::Llama3) {
      ASSERT_EQ(got.type, RopeScaling::Type::FrequencyFactors) << name;
      const RopeFrequencies a = rope_frequencies(want, hf.config.head_dim, hf.config.rope_theta, hf.config.max_position_embeddings);
      const RopeFrequencies b = rope_frequencies(got, back.config.head_dim, back.config.rope_theta, back.config.max_position_embeddings);
      EXPECT_LT(test::relative_error(b.inverse, a.inverse), 1e-6) << name;
      EXPECT_NE(got.frequency_factors.front(), got.frequency_factors.back()) << "no scaling in the factors";
    } else {
      EXPECT_EQ(got.type, want.type) << name;
      EXPECT_EQ(got.factor, want.factor) << name;
    }
    const auto lines = read_token_file(model + "/tokens.txt", hf.config.vocab_size);
    Transformer a(hf.config, *hf.weights, nullptr), b(back.config, *back.weights, nullptr);
    const double loss = a.loss(make_batch(lines));
    EXPECT_NEAR(b.loss(make_batch(lines)), loss, 1e-6 * loss) << name;
  }
  const auto refused = run_command(kQft + " export --model " + dir.file("llama31_rope.gguf") + " --out " + dir.file("hf"));
  EXPECT_NE(refused.exit_code, 0);
  EXPECT_NE(refused.output.find("transformers' config.json cannot express"), std::string::npos) << refused.output;
  EXPECT_FALSE(std::filesystem::exists(dir.file("hf")));
}

struct Loaded {
  std::vector<int> ids;
  double loss;
};
Loaded transformers_load(const std::string& kind, const std::string& path, const std::vector<int>& ids);
double qft_loss(const std::string& model, const std::vector<int>& ids);

double qft_loss_of_lines(const std::string& model, const std::string& tokens) {
  LoadedModel loaded = load_model(model);
  Transformer transformer(loaded.config, *loaded.weights, nullptr);
  return transformer.loss(make_batch(read_token_file(tokens, loaded.config.vocab_size)));
}

// Gemma-2 in its own layouts. HF: every tensor and Gemma-2 key survives, and
// transformers computes the float64 reference loss from the export. GGUF:
// llama.cpp's gemma2 (gguf-py's tensor names, norms stored as 1 + w, its keys
// for the caps and window); a query_pre_attn_scalar llama.cpp would not use is
// refused, since GGUF cannot carry it.
TEST(Export, Gemma2InItsHfAndGgufLayouts) {
  TempDir dir;
  const std::string model = test::reference_case("gemma2");
  const std::string hf = export_model(model, dir.file("hf"), "--dtype f32");
  EXPECT_EQ(all_tensors(ModelSource::hf_directory(hf)), all_tensors(ModelSource::hf_directory(model)));
  const auto config = nlohmann::json::parse(test::read_text(hf + "/config.json"));
  const auto original = nlohmann::json::parse(test::read_text(model + "/config.json"));
  for (const char* key : {"model_type", "hidden_activation", "query_pre_attn_scalar", "attn_logit_softcapping",
                          "final_logit_softcapping", "sliding_window", "head_dim"}) {
    EXPECT_EQ(config.at(key), original.at(key)) << key;
  }
  EXPECT_EQ(config.at("tie_word_embeddings"), true);
  const double reference = test::read_tensors(model + "/expected.safetensors").at("loss")[0];
  EXPECT_NEAR(qft_loss_of_lines(hf, model + "/tokens.txt"), reference, 1e-5 * reference);
  const std::vector<int> line = read_token_file(model + "/tokens.txt", original.at("vocab_size"))[1];
  const Loaded exported = transformers_load("hf", hf, line);
  EXPECT_EQ(exported.loss, transformers_load("hf", model, line).loss);  // transformers reads both alike
  const double qft = qft_loss(hf, line);
  EXPECT_NEAR(exported.loss, qft, 1e-5 * qft);  // transformers keeps Gemma's RMSNorm in float32

  const auto refused = run_command(kQft + " export --model " + model + " --out " + dir.file("refused.gguf") + " --format gguf");
  EXPECT_NE(refused.exit_code, 0);
  EXPECT_NE(refused.output.find("query_pre_attn_scalar 24 differs from the 16 llama.cpp's gemma2 uses"), std::string::npos)
      << refused.output;
  EXPECT_FALSE(fs::exists(dir.file("refused.gguf")));

  // The same weights with the scalar llama.cpp uses (1/√head_dim).
  fs::copy(model, dir.file("scalar16"));
  auto scalar16 = original;
  scalar16["query_pre_attn_scalar"] = 16;
  test::write_text(dir.file("scalar16/config.json"), scalar16.dump());
  const std::string gguf = export_model(dir.file("scalar16"), dir.file("m.gguf"), "--format gguf --dtype f32");
  const auto layout = run_command(std::string(QFT_PYENV_DIR) + "/bin/python " + QFT_SOURCE_DIR +
                                  "/tests/reference/gguf_layout_check.py " + gguf + " " + dir.file("scalar16"));
  ASSERT_EQ(layout.exit_code, 0) << layout.output;
  const auto checked = nlohmann::json::parse(layout.output.substr(layout.output.rfind('{')));
  EXPECT_EQ(checked.at("architecture"), "gemma2");
  EXPECT_LT(checked.at("max_abs_error").get<double>(), 1e-7);  // 1 + w rounded to FP32
  const GgufFile file(gguf);
  EXPECT_FLOAT_EQ(file.get_float("gemma2.attn_logit_softcapping"), 0.5f);
  EXPECT_FLOAT_EQ(file.get_float("gemma2.final_logit_softcapping"), 1.5f);
  EXPECT_EQ(file.get_uint("gemma2.attention.sliding_window"), 3u);
  const double hf_loss = qft_loss_of_lines(dir.file("scalar16"), model + "/tokens.txt");
  EXPECT_NEAR(qft_loss_of_lines(gguf, model + "/tokens.txt"), hf_loss, 1e-6 * hf_loss);
  EXPECT_EQ(load_model(gguf).config.query_pre_attn_scalar, 16.0f);
}

// Phi-3 with longrope in its own layouts. HF: the fused tensors, the factors
// and the original context survive, and transformers computes from the export
// the loss it computes from the original. GGUF: llama.cpp's phi3 (attn_qkv,
// the fused ffn_up, rope_factors_long/short, the original context and window
// keys; gguf-py's names), read back to the same model.
TEST(Export, Phi3InItsHfAndGgufLayouts) {
  TempDir dir;
  const std::string model = test::reference_case("phi3_longrope");
  const std::string hf = export_model(model, dir.file("hf"), "--dtype f32");
  EXPECT_EQ(all_tensors(ModelSource::hf_directory(hf)), all_tensors(ModelSource::hf_directory(model)));
  const std::vector<int> line = read_token_file(model + "/tokens.txt", 80)[1];  // 12 tokens: the long factors
  const Loaded exported = transformers_load("hf", hf, line);
  EXPECT_NEAR(exported.loss, transformers_load("hf", model, line).loss, 1e-7 * exported.loss);  // factors rounded to FP32
  const double qft = qft_loss(hf, line);
  EXPECT_NEAR(exported.loss, qft, 1e-5 * qft);

  const std::string gguf = export_model(model, dir.file("m.gguf"), "--format gguf --dtype f32");
  const auto layout = run_command(std::string(QFT_PYENV_DIR) + "/bin/python " + QFT_SOURCE_DIR +
                                  "/tests/reference/gguf_layout_check.py " + gguf + " " + model);
  ASSERT_EQ(layout.exit_code, 0) << layout.output;
  const auto checked = nlohmann::json::parse(layout.output.substr(layout.output.rfind('{')));
  EXPECT_EQ(checked.at("architecture"), "phi3");
  EXPECT_EQ(checked.at("max_abs_error").get<double>(), 0.0);
  const GgufFile file(gguf);
  EXPECT_EQ(file.get_uint("phi3.rope.scaling.original_context_length"), 8u);
  EXPECT_EQ(file.tensor("blk.0.ffn_up.weight").shape(), (Shape{96, 32}));  // gate and up, fused
  const LoadedModel back = load_model(gguf), original = load_model(model);
  EXPECT_EQ(back.config.rope_scaling.long_factors, original.config.rope_scaling.long_factors);
  EXPECT_EQ(back.config.original_max_position_embeddings, 8);
  EXPECT_EQ(qft_loss_of_lines(gguf, model + "/tokens.txt"), qft_loss_of_lines(model, model + "/tokens.txt"));
}

TEST(Export, RefusesAnExistingTargetAndBadOptions) {
  TempDir dir;
  const std::string model = test::reference_case("llama_tied");
  fs::create_directories(dir.file("taken"));
  EXPECT_NE(run_command(kQft + " export --model " + model + " --out " + dir.file("taken")).exit_code, 0);
  EXPECT_NE(run_command(kQft + " export --model " + model + " --out " + dir.file("x") + " --dtype q8_0").exit_code, 0);
  EXPECT_NE(run_command(kQft + " export --model " + model + " --out " + dir.file("x") + " --format onnx").exit_code, 0);
  EXPECT_FALSE(fs::exists(dir.file("x")));
}

Loaded transformers_load(const std::string& kind, const std::string& path, const std::vector<int>& ids) {
  std::string id_text;
  for (int id : ids) id_text += (id_text.empty() ? "" : " ") + std::to_string(id);
  const auto result = run_command(std::string(QFT_PYENV_DIR) + "/bin/python " + QFT_SOURCE_DIR +
                                  "/tests/reference/export_check.py " + kind + " " + path + " '" + kText + "' '" +
                                  id_text + "'");
  EXPECT_EQ(result.exit_code, 0) << result.output;
  std::string output = result.output;  // transformers' warnings first, the JSON last
  while (!output.empty() && output.back() == '\n') output.pop_back();
  const auto json = nlohmann::json::parse(output.substr(output.rfind('\n') + 1));
  return {json.at("ids").get<std::vector<int>>(), json.at("loss").get<double>()};
}

std::string smollm2_path() {
  std::ifstream file(test::reference_case("gguf/smollm2/model_path.txt"));
  std::string path;
  std::getline(file, path);
  return path;
}

double qft_loss(const std::string& model, const std::vector<int>& ids) {
  LoadedModel loaded = load_model(model);
  Transformer transformer(loaded.config, *loaded.weights, nullptr);
  return transformer.loss(make_batch({ids}));
}

// SmolLM2's GGUF → HF (f32) → GGUF (f32): transformers loads both exports,
// tokenizes like qft, and computes the loss qft computes from the original.
TEST(Export, SmolLM2GgufToHfToGgufLoadsInTransformers) {
  TempDir dir;
  const std::string gguf = smollm2_path();
  const std::string hf = export_model(gguf, dir.file("hf"), "--dtype f32");
  const std::string back = export_model(hf, dir.file("back.gguf"), "--format gguf --dtype f32");

  const auto qft_ids = run_command(kQft + " tokenize --model " + gguf + " --text '" + kText + "'");
  ASSERT_EQ(qft_ids.exit_code, 0);
  std::vector<int> ids;
  std::istringstream fields(qft_ids.output);
  for (int id; fields >> id;) ids.push_back(id);
  const double expected = qft_loss(gguf, ids);

  const Loaded from_hf = transformers_load("hf", hf, ids);
  EXPECT_EQ(from_hf.ids, ids);
  EXPECT_NEAR(from_hf.loss, expected, 1e-4 * expected);  // transformers keeps RMSNorm and RoPE in float32
  const Loaded from_gguf = transformers_load("gguf", back, ids);
  EXPECT_NEAR(from_gguf.loss, expected, 1e-4 * expected);
  EXPECT_EQ(from_gguf.loss, from_hf.loss);  // the same weights reach transformers both ways

  // The round trip keeps every tensor (f32 both ways) and the tokenizer.
  EXPECT_EQ(all_tensors(ModelSource::gguf_file(back)), all_tensors(ModelSource::gguf_file(gguf)));
  const GgufFile original(gguf), copy(back);
  for (const char* key : {"tokenizer.ggml.tokens", "tokenizer.ggml.merges"}) {
    EXPECT_EQ(copy.get_string_array(key), original.get_string_array(key)) << key;
  }
  EXPECT_EQ(copy.get_int_array("tokenizer.ggml.token_type"), original.get_int_array("tokenizer.ggml.token_type"));
  EXPECT_EQ(copy.get_string("tokenizer.ggml.pre"), original.get_string("tokenizer.ggml.pre"));
  EXPECT_EQ(copy.get_uint("tokenizer.ggml.eos_token_id"), original.get_uint("tokenizer.ggml.eos_token_id"));
  EXPECT_EQ(copy.get_string("tokenizer.chat_template"), original.get_string("tokenizer.chat_template"));
}

// Q8_0 export: within Q8_0's rounding of the source, and transformers loads it.
TEST(Export, SmolLM2Q8_0) {
  TempDir dir;
  const std::string gguf = smollm2_path();
  const std::string q8 = export_model(gguf, dir.file("q8.gguf"), "--format gguf --dtype q8_0");
  const GgufFile file(q8);
  EXPECT_EQ(file.tensor("blk.0.attn_q.weight").type, GgmlType::Q8_0);
  EXPECT_EQ(file.tensor("blk.0.attn_norm.weight").type, GgmlType::F32);
  const std::vector<int> ids = {504, 2365, 6354, 16438, 27003, 690, 260, 23790, 2767, 30};
  const double original = qft_loss(gguf, ids);
  EXPECT_NEAR(qft_loss(q8, ids), original, 0.01 * original);
  EXPECT_NEAR(transformers_load("gguf", q8, ids).loss, qft_loss(q8, ids), 1e-4 * original);
}

// The user's path through the CLI on the real model.
TEST(ModelTools, TokenizeRoundTripsAndGenerateAnswersFromTheGguf) {
  const std::string gguf = smollm2_path();
  const auto ids = run_command(kQft + " tokenize --model " + gguf + " --text '" + kText + "'");
  ASSERT_EQ(ids.exit_code, 0) << ids.output;
  const auto text = run_command(kQft + " tokenize --model " + gguf + " --decode --text '" + ids.output + "'");
  EXPECT_EQ(text.output, std::string(kText) + "\n");
  const auto answer = run_command(kQft + " generate --model " + gguf +
                                  " --chat --prompt 'What is the capital of France?' --max-new-tokens 24");
  ASSERT_EQ(answer.exit_code, 0) << answer.output;
  EXPECT_NE(answer.output.find("Paris"), std::string::npos) << answer.output;
  const auto sampled = [&](int seed) {
    return run_command(kQft + " generate --model " + gguf + " --prompt 'Once upon a time' --max-new-tokens 12" +
                       " --temperature 0.8 --top-p 0.9 --seed " + std::to_string(seed)).output;
  };
  EXPECT_EQ(sampled(3), sampled(3));
  const auto unknown = run_command(kQft + " generate --model " + gguf + " --prompt hi --chat-template vicuna");
  EXPECT_EQ(unknown.exit_code, 1);
  EXPECT_NE(unknown.output.find("chatml, llama2, llama3, alpaca"), std::string::npos) << unknown.output;
}

}  // namespace
}  // namespace qft
