#include "model/config.h"

#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include "core/error.h"
#include "model/parameters.h"

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
  scaling["rope_scaling"] = {{"type", "linear"}, {"factor", 2.0}};
  EXPECT_NE(error_of(scaling).find("rope_scaling"), std::string::npos);
  EXPECT_NE(error_of(scaling).find("cfg.json"), std::string::npos);
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
}  // namespace qft
