#include "model/config.h"

#include <gtest/gtest.h>

#include <cmath>

#include <nlohmann/json.hpp>

#include "core/error.h"
#include "core/json_integer.h"
#include "model/parameters.h"
#include "text/bpe.h"

namespace qft {
namespace {

nlohmann::json llama_json() {
  return {{"architectures", {"LlamaForCausalLM"}}, {"vocab_size", 100}, {"hidden_size", 64},
          {"intermediate_size", 96}, {"num_hidden_layers", 2}, {"num_attention_heads", 4}};
}

std::string error_of(const nlohmann::json& json) {
  try {
    parse_model_config(json, "cfg.json");
  } catch (const Error& error) {
    return error.what();
  }
  return "";
}

TEST(ModelConfig, LlamaDefaultsFollowHf) {
  const ModelConfig config = parse_model_config(llama_json(), "cfg.json");
  EXPECT_EQ(config.architecture, Architecture::Llama);
  EXPECT_EQ(config.num_kv_heads, 4);  // defaults to the query heads
  EXPECT_EQ(config.head_dim, 16);     // hidden / heads
  EXPECT_FALSE(config.tie_word_embeddings);
  EXPECT_FALSE(config.qkv_bias);
}

TEST(ModelConfig, BiasesPerArchitecture) {
  nlohmann::json qwen = llama_json();
  qwen["architectures"] = {"Qwen2ForCausalLM"};
  const ModelConfig qwen_config = parse_model_config(qwen, "cfg.json");
  EXPECT_TRUE(qwen_config.qkv_bias);
  EXPECT_FALSE(qwen_config.o_bias);

  nlohmann::json llama = llama_json();
  llama["attention_bias"] = true;
  const ModelConfig llama_config = parse_model_config(llama, "cfg.json");
  EXPECT_TRUE(llama_config.qkv_bias);
  EXPECT_TRUE(llama_config.o_bias);
}

TEST(ModelConfig, ExplicitHeadDimAndGroupedQueryHeads) {
  nlohmann::json json = llama_json();
  json["head_dim"] = 8;
  json["num_key_value_heads"] = 2;
  const ModelConfig config = parse_model_config(json, "cfg.json");
  EXPECT_EQ(config.q_dim(), 32);
  EXPECT_EQ(config.kv_dim(), 16);
}

TEST(ModelConfig, ClearErrors) {
  nlohmann::json gpt2 = llama_json();
  gpt2["architectures"] = {"GPT2LMHeadModel"};
  EXPECT_NE(error_of(gpt2).find("unsupported architecture 'GPT2LMHeadModel'"), std::string::npos);
  EXPECT_NE(error_of(gpt2).find("Qwen2ForCausalLM"), std::string::npos);

  nlohmann::json groups = llama_json();
  groups["num_key_value_heads"] = 3;
  EXPECT_NE(error_of(groups).find("not a multiple"), std::string::npos);

  nlohmann::json missing = llama_json();
  missing.erase("vocab_size");
  EXPECT_NE(error_of(missing).find("'vocab_size'"), std::string::npos);

  nlohmann::json scaling = llama_json();
  scaling["rope_scaling"] = {{"rope_type", "dynamic"}, {"factor", 2.0}};
  EXPECT_NE(error_of(scaling).find("cfg.json: rope_scaling type 'dynamic' is not supported"), std::string::npos);
  scaling["rope_scaling"] = {{"rope_type", "longrope"}, {"short_factor", {1.0}}, {"long_factor", {1.0}}, {"factor", 2.0}};
  EXPECT_NE(error_of(scaling).find("rope_scaling's 'short_factor' has 1 factors, head_dim / 2 = 8"), std::string::npos);
  scaling["rope_scaling"] = {{"rope_type", "llama3"}, {"factor", 8.0}};
  EXPECT_NE(error_of(scaling).find("rope_scaling needs 'low_freq_factor'"), std::string::npos);
  scaling["rope_scaling"] = {{"type", "linear"}, {"factor", 0.5}};
  EXPECT_NE(error_of(scaling).find("factor must be at least 1"), std::string::npos);
}

// Phi-3: its defaults (original context 4096), the older rope_scaling names
// Phi3Config renames to longrope, and what qft refuses by name.
TEST(ModelConfig, Phi3) {
  nlohmann::json json = llama_json();
  json["architectures"] = {"Phi3ForCausalLM"};
  json["max_position_embeddings"] = 131072;
  const std::vector<float> factors(8, 1.5f);
  json["rope_scaling"] = {{"type", "su"}, {"short_factor", factors}, {"long_factor", factors}};
  const ModelConfig config = parse_model_config(json, "cfg.json");
  EXPECT_TRUE(config.fused_projections());
  EXPECT_EQ(config.original_max_position_embeddings, 4096);
  EXPECT_EQ(config.rope_scaling.type, RopeScaling::Type::LongRope);
  EXPECT_FLOAT_EQ(config.rope_scaling.factor, 32.0f);  // 131072 / 4096
  const RopeFrequencies rope = rope_frequencies(config.rope_scaling, 16, 10000.0f, 131072);
  EXPECT_EQ(rope.long_beyond, 4096);
  EXPECT_FLOAT_EQ(rope.attention_factor, static_cast<float>(std::sqrt(1 + std::log(32.0) / std::log(4096.0))));
  const nlohmann::json written = model_config_to_json(config);
  EXPECT_EQ(written.at("rope_scaling").size(), 3u);  // Phi3Config accepts exactly type, short_factor, long_factor
  EXPECT_EQ(written.at("rope_scaling").at("type"), "longrope");
  EXPECT_EQ(written.at("original_max_position_embeddings"), 4096);
  EXPECT_EQ(parse_model_config(written, "again.json").rope_scaling.long_factors, config.rope_scaling.long_factors);

  nlohmann::json dropout = json;
  dropout["resid_pdrop"] = 0.1;
  EXPECT_NE(error_of(dropout).find("'resid_pdrop' must be 0"), std::string::npos);
  nlohmann::json partial = json;
  partial["partial_rotary_factor"] = 0.5;
  EXPECT_NE(error_of(partial).find("partial RoPE"), std::string::npos);
}

// Llama-3.1's rope_scaling (and the older "type" key) is read and written back.
TEST(ModelConfig, RopeScalingRoundTrips) {
  nlohmann::json json = llama_json();
  json["rope_scaling"] = {{"rope_type", "llama3"}, {"factor", 8.0}, {"low_freq_factor", 1.0},
                          {"high_freq_factor", 4.0}, {"original_max_position_embeddings", 8192}};
  const ModelConfig config = parse_model_config(json, "cfg.json");
  EXPECT_EQ(config.rope_scaling.type, RopeScaling::Type::Llama3);
  EXPECT_EQ(model_config_to_json(config).at("rope_scaling"), json.at("rope_scaling"));
  json["rope_scaling"] = {{"type", "yarn"}, {"factor", 4.0}};
  const nlohmann::json written = model_config_to_json(parse_model_config(json, "cfg.json")).at("rope_scaling");
  EXPECT_EQ(written.at("rope_type"), "yarn");
  EXPECT_EQ(written.at("factor"), 4.0);
  json["rope_scaling"] = nullptr;
  EXPECT_FALSE(model_config_to_json(parse_model_config(json, "cfg.json")).contains("rope_scaling"));
}

TEST(ModelConfig, RoundTripsThroughJson) {
  nlohmann::json json = llama_json();
  json["num_key_value_heads"] = 2;
  json["tie_word_embeddings"] = true;
  json["rope_theta"] = 500000.0;
  const ModelConfig config = parse_model_config(json, "cfg.json");
  const ModelConfig again = parse_model_config(model_config_to_json(config), "again.json");
  EXPECT_EQ(parameter_specs(again).size(), parameter_specs(config).size());
  EXPECT_EQ(again.rope_theta, config.rope_theta);
  EXPECT_EQ(again.num_kv_heads, 2);
  EXPECT_TRUE(again.tie_word_embeddings);
}

// SmolLM2-135M's published parameter count is 134,515,008.
TEST(ParameterSpecs, SmolLM2ShapeHasPublishedParameterCount) {
  const nlohmann::json json = {{"architectures", {"LlamaForCausalLM"}}, {"vocab_size", 49152},
                               {"hidden_size", 576}, {"intermediate_size", 1536},
                               {"num_hidden_layers", 30}, {"num_attention_heads", 9},
                               {"num_key_value_heads", 3}, {"tie_word_embeddings", true}};
  int64_t total = 0;
  for (const ParamSpec& spec : parameter_specs(parse_model_config(json, "smollm2"))) total += shape_numel(spec.shape);
  EXPECT_EQ(total, 134515008);
}

TEST(ParameterSpecs, HfNamesAndShapes) {
  nlohmann::json json = llama_json();
  json["num_key_value_heads"] = 2;
  const auto specs = parameter_specs(parse_model_config(json, "cfg.json"));
  EXPECT_EQ(specs.front().name, "model.embed_tokens.weight");
  EXPECT_EQ(specs.back().name, "lm_head.weight");
  bool found_k = false;
  for (const ParamSpec& spec : specs) {
    if (spec.name == "model.layers.1.self_attn.k_proj.weight") {
      found_k = true;
      EXPECT_EQ(spec.shape, (Shape{32, 64}));
    }
  }
  EXPECT_TRUE(found_k);
}

}  // namespace
// Found by fuzz/gguf_fuzz (fuzz/regressions/gguf/timeout-511c210a…): a block
// count of 10^9 was accepted and building its parameter names never ended;
// sizes beyond any model are refused by name, and a float where an integer
// belongs is an error rather than a cast.
TEST(ModelConfig, SizesBeyondAnyModelAreRefused) {
  nlohmann::json layers = llama_json();
  layers["num_hidden_layers"] = 1000000000;
  EXPECT_EQ(error_of(layers), "cfg.json: 'num_hidden_layers' = 1000000000 is beyond any model qft accepts (at most 4096)");
  nlohmann::json positions = llama_json();
  positions["max_position_embeddings"] = 1e30;
  EXPECT_EQ(error_of(positions), "cfg.json: missing or non-integer 'max_position_embeddings'");
  positions["max_position_embeddings"] = 1 << 30;
  EXPECT_EQ(error_of(positions),
            "cfg.json: 'max_position_embeddings' = 1073741824 is beyond any model qft accepts (at most 16777216)");
}

// Found by fuzz/tokenizer_json_fuzz (fuzz/regressions/tokenizer_json/oom-1ce4835b…):
// an id of 2·10⁹ asked the vocabulary table for gigabytes.
TEST(Vocabulary, IdsBeyondAnyVocabularyAreRefused) {
  text::Vocabulary vocabulary;
  try {
    vocabulary.add("a", 2000000000, "tokenizer.json");
    FAIL() << "no error";
  } catch (const Error& error) {
    EXPECT_STREQ(error.what(), "tokenizer.json: token 'a' has id 2000000000, outside [0, 16777215]");
  }
  EXPECT_NO_THROW(vocabulary.add("b", 5, "tokenizer.json"));
}

// Integers from JSON files (core/json_integer.h): a float or an out-of-range
// value is an error, never nlohmann's cast (undefined behaviour for 1e30;
// found by fuzz/tokenizer_json_fuzz: fuzz/regressions/tokenizer_json/crash-4384bd64…).
TEST(JsonInteger, TakesIntegersInRangeAndRefusesEverythingElse) {
  using nlohmann::json;
  EXPECT_EQ(json_integer<int>(json(7), "x"), 7);
  EXPECT_EQ(json_integer<int>(json(-7), "x"), -7);
  EXPECT_EQ(json_integer<size_t>(json(uint64_t{1} << 40), "x"), size_t{1} << 40);
  EXPECT_EQ(json_integer<uint64_t>(json(UINT64_MAX), "x"), UINT64_MAX);
  EXPECT_EQ(json_integer<int>(json(3), "x", 0, 3), 3);
  const auto refused = [](const json& value, const std::string& message, int low = INT32_MIN) {
    try {
      json_integer<int>(value, "the id", low);
      ADD_FAILURE() << value.dump() << " was accepted";
    } catch (const Error& error) {
      EXPECT_EQ(std::string(error.what()), message);
    }
  };
  refused(json(2.35556e26), "the id must be an integer in [-2147483648, 2147483647], got 2.35556e+26");
  refused(json(1.0), "the id must be an integer in [-2147483648, 2147483647], got 1.0");
  refused(json(int64_t{1} << 31), "the id must be an integer in [-2147483648, 2147483647], got 2147483648");
  refused(json(UINT64_MAX), "the id must be an integer in [-2147483648, 2147483647], got 18446744073709551615");
  refused(json("3"), "the id must be an integer in [-2147483648, 2147483647], got \"3\"");
  refused(json(-1), "the id must be an integer in [0, 2147483647], got -1", 0);
  try {
    json_integer<uint64_t>(json(-1), "bytes");
    ADD_FAILURE() << "-1 accepted as uint64_t";
  } catch (const Error& error) {
    EXPECT_EQ(std::string(error.what()), "bytes must be an integer in [0, 18446744073709551615], got -1");
  }
}

}  // namespace qft
