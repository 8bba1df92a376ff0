// Incremental decoding against the float64 transformers logits of the
// reference models, and the sampler's contract.
#include "model/generator.h"

#include <gtest/gtest.h>

#include "core/error.h"
#include "data/batch.h"
#include "model/weights.h"
#include "test_util.h"

namespace qft {
namespace {

class GeneratorCase : public testing::TestWithParam<const char*> {};

// Half of each line as one prompt chunk, the rest one token at a time: the
// logits after every position equal transformers' for the whole line. With
// longrope, a line longer than the original context gets the long factors in
// transformers from its first token; the generator (like transformers'
// generate) switches when its context grows past it, so the positions before
// are not compared.
TEST_P(GeneratorCase, CachedDecodingMatchesTransformersLogits) {
  const std::string dir = test::reference_case(GetParam());
  LoadedModel model = load_hf_model(dir);
  Fp32ParameterStore store(model.config, *model.weights, nullptr);
  const auto lines = read_token_file(dir + "/tokens.txt", model.config.vocab_size);
  const auto expected = test::read_tensors(dir + "/logits.safetensors");
  const int V = model.config.vocab_size;
  Generator generator(model.config, store, 64);
  const RopeFrequencies rope = rope_frequencies(model.config.rope_scaling, model.config.head_dim, model.config.rope_theta,
                                                model.config.max_position_embeddings);
  for (size_t line = 0; line < lines.size(); ++line) {
    generator.reset();
    const std::vector<float>& want = expected.at("logits." + std::to_string(line));  // (n, V)
    const size_t prompt = lines[line].size() / 2 + 1;
    const float* logits = generator.append({lines[line].begin(), lines[line].begin() + prompt});
    for (size_t position = prompt - 1; position < lines[line].size(); ++position) {
      if (position >= prompt) logits = generator.append({lines[line][position]});
      const bool long_line = !rope.long_inverse.empty() && lines[line].size() > static_cast<size_t>(rope.long_beyond);
      if (long_line && position + 1 <= static_cast<size_t>(rope.long_beyond)) continue;
      EXPECT_LT(test::relative_error(logits, want.data() + position * V, V), 1e-5)
          << GetParam() << " line " << line << " position " << position;
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Cases, GeneratorCase,
                         testing::Values("llama_tied", "llama_gqa_untied", "qwen2_bias", "mistral_outliers",
                                         "llama31_rope", "llama_yarn_rope", "mistral_window", "gemma2", "phi3",
                                         "phi3_longrope", "llama_longrope"));

TEST(Generator, RefusesContextsBeyondItsLimit) {
  LoadedModel model = load_hf_model(test::reference_case("llama_tied"));
  Fp32ParameterStore store(model.config, *model.weights, nullptr);
  Generator generator(model.config, store, 4);
  generator.append({1, 2, 3});
  EXPECT_THROW(generator.append({4, 5}), Error);
  EXPECT_THROW(generator.append({model.config.vocab_size}), Error);
}

TEST(SampleToken, GreedyTopPAndReproducibility) {
  const std::vector<float> logits = {0.0f, 3.0f, 1.0f, 2.9f};
  std::mt19937_64 generator(1);
  EXPECT_EQ(sample_token(logits.data(), 4, {0.0f, 1.0f}, generator), 1);
  // A nucleus of one token is the argmax at any temperature.
  for (int i = 0; i < 100; ++i) EXPECT_EQ(sample_token(logits.data(), 4, {1.0f, 1e-6f}, generator), 1);
  // At temperature 1 tokens 1 and 3 carry 0.79 of the mass: top-p 0.7 keeps {1, 3} only.
  int counts[4] = {0, 0, 0, 0};
  for (int i = 0; i < 4000; ++i) ++counts[sample_token(logits.data(), 4, {1.0f, 0.7f}, generator)];
  EXPECT_EQ(counts[0] + counts[2], 0);
  EXPECT_NEAR(counts[1] / 4000.0, std::exp(3.0) / (std::exp(3.0) + std::exp(2.9)), 0.03);
  std::mt19937_64 a(7), b(7);
  for (int i = 0; i < 50; ++i) EXPECT_EQ(sample_token(logits.data(), 4, {1.0f, 1.0f}, a), sample_token(logits.data(), 4, {1.0f, 1.0f}, b));
}

}  // namespace
}  // namespace qft
