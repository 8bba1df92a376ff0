// The engine against the PyTorch/transformers reference (tests/reference/make_reference.py):
// loss and every parameter gradient, and 10-step training losses.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <nlohmann/json.hpp>

#include "data/batch.h"
#include "kernels/kernels.h"
#include "model/transformer.h"
#include "model/weights.h"
#include "optim/optimizer.h"
#include "train/memory_plan.h"
#include "train/optimizers.h"
#include "train/training.h"
#include "test_util.h"

namespace qft {
namespace {

using test::reference_case;

// Float32 against a float64 reference: observed errors are ~1e-6.
constexpr double kGradientTolerance = 2e-5;
constexpr double kLossTolerance = 1e-5;

const char* const kCases[] = {"llama_tied", "llama_gqa_untied", "qwen2_bias",
                              "mistral_outliers", "llama_bf16", "llama_f16",
                              "llama31_rope", "llama_yarn_rope", "llama_linear_rope",
                              "mistral_window", "gemma2", "phi3", "phi3_longrope", "llama_longrope"};

struct Gradients {
  double loss;
  std::unique_ptr<ParamSet> grads;
};

Gradients compute_gradients(LoadedModel& model, const std::vector<TokenSequence>& sequences,
                            bool checkpointing) {
  Gradients result{0.0, std::make_unique<ParamSet>(MemCategory::Gradients, model.weights->specs())};
  Transformer transformer(model.config, *model.weights, result.grads.get(), {.checkpointing = checkpointing});
  result.loss = transformer.forward_backward(make_batch(sequences));
  return result;
}

class ReferenceCase : public testing::TestWithParam<const char*> {
 protected:
  std::string dir() const { return reference_case(GetParam()); }
};

TEST_P(ReferenceCase, LossAndEveryGradientMatchPyTorch) {
  LoadedModel model = load_hf_model(dir());
  const auto sequences = read_token_file(dir() + "/tokens.txt", model.config.vocab_size);
  const Gradients result = compute_gradients(model, sequences, false);
  const auto expected = test::read_tensors(dir() + "/expected.safetensors");

  EXPECT_NEAR(result.loss, expected.at("loss")[0], kLossTolerance * expected.at("loss")[0]);
  const auto& specs = result.grads->specs();
  size_t compared = 0;
  for (size_t i = 0; i < specs.size(); ++i) {
    const auto& want = expected.at("grad." + specs[i].name);
    ASSERT_EQ(want.size(), result.grads->numel(i)) << specs[i].name;
    EXPECT_LT(test::relative_error(result.grads->data(i), want.data(), want.size()), kGradientTolerance)
        << specs[i].name;
    ++compared;
  }
  // Every reference gradient has a counterpart: no parameter is left out.
  EXPECT_EQ(compared + 1, expected.size());
}

TEST_P(ReferenceCase, RecomputationGivesIdenticalGradients) {
  LoadedModel model = load_hf_model(dir());
  const auto sequences = read_token_file(dir() + "/tokens.txt", model.config.vocab_size);
  const Gradients stored = compute_gradients(model, sequences, false);
  const Gradients recomputed = compute_gradients(model, sequences, true);
  EXPECT_EQ(stored.loss, recomputed.loss);
  EXPECT_EQ(std::memcmp(stored.grads->all(), recomputed.grads->all(),
                        stored.grads->total_numel() * sizeof(float)), 0);
}

TEST_P(ReferenceCase, SplitBatchesWithSharedDenominatorEqualOneBatch) {
  LoadedModel model = load_hf_model(dir());
  const auto sequences = read_token_file(dir() + "/tokens.txt", model.config.vocab_size);
  const Gradients whole = compute_gradients(model, sequences, false);

  ParamSet grads(MemCategory::Gradients, model.weights->specs());
  Transformer transformer(model.config, *model.weights, &grads);
  const Batch first = make_batch({sequences[0]});
  const Batch rest = make_batch({sequences.begin() + 1, sequences.end()});
  const int64_t total = first.predicted + rest.predicted;
  const double loss = transformer.forward_backward(first, total) + transformer.forward_backward(rest, total);
  EXPECT_NEAR(loss, whole.loss, 1e-6 * whole.loss);
  EXPECT_LT(test::relative_error(grads.all(), whole.grads->all(), grads.total_numel()), 1e-6);
  EXPECT_NEAR(transformer.loss(make_batch(sequences)), whole.loss, 1e-6 * whole.loss);
}

// BF16 compute against the same float64 reference: each matrix product's
// operands carry BF16's 2⁻⁹ relative rounding (observed on these cases: loss
// ≤ 9e-5 relative, gradients ≤ 2.4e-2 relative, the worst on the smallest
// tensors); the bounds leave a factor of about 2.
constexpr double kBf16LossTolerance = 2e-4;
constexpr double kBf16GradientTolerance = 5e-2;

TEST_P(ReferenceCase, Bf16ComputeStaysWithinItsToleranceOfPyTorch) {
  LoadedModel model = load_hf_model(dir());
  const auto sequences = read_token_file(dir() + "/tokens.txt", model.config.vocab_size);
  kernels::set_compute(kernels::Compute::BF16);
  const Gradients result = compute_gradients(model, sequences, false);
  kernels::set_compute(kernels::Compute::FP32);
  const auto expected = test::read_tensors(dir() + "/expected.safetensors");
  const double want_loss = expected.at("loss")[0];
  std::printf("%s: bf16 loss error %.2e", GetParam(), std::abs(result.loss - want_loss) / want_loss);
  EXPECT_NEAR(result.loss, want_loss, kBf16LossTolerance * want_loss);
  double worst = 0;
  for (size_t i = 0; i < result.grads->specs().size(); ++i) {
    const auto& want = expected.at("grad." + result.grads->specs()[i].name);
    const double error = test::relative_error(result.grads->data(i), want.data(), want.size());
    worst = std::max(worst, error);
    EXPECT_LT(error, kBf16GradientTolerance) << result.grads->specs()[i].name;
  }
  std::printf(", worst gradient error %.2e\n", worst);
  EXPECT_GT(worst, kGradientTolerance) << "no BF16 rounding happened";
}

INSTANTIATE_TEST_SUITE_P(Cases, ReferenceCase, testing::ValuesIn(kCases));

class TrainingCase : public testing::TestWithParam<std::tuple<const char*, const char*>> {};

// 10 steps from the stored weights, batches of B lines in file order, as the
// reference script's train_settings.json describes.
TEST_P(TrainingCase, LossesMatchPyTorchStepByStep) {
  const auto [name, optimizer_name] = GetParam();
  const std::string dir = reference_case(name);
  std::ifstream settings_file(dir + "/train_settings.json");
  const nlohmann::json settings = nlohmann::json::parse(settings_file);
  const nlohmann::json& hyper = settings.at(optimizer_name);

  LoadedModel model = load_hf_model(dir);
  const auto sequences = read_token_file(dir + "/" + settings.at("tokens_file").get<std::string>(),
                                         model.config.vocab_size);
  const OptimizerKind kind = parse_optimizer(optimizer_name);
  OptimizerSettings optimizer_settings = optimizer_entry(kind).defaults;
  optimizer_settings.beta1 = hyper.at("beta1");
  optimizer_settings.beta2 = hyper.at("beta2");
  optimizer_settings.weight_decay = hyper.at("weight_decay");
  if (hyper.contains("eps")) optimizer_settings.eps = hyper.at("eps");
  const float lr = hyper.at("lr");
  ParamSet grads(MemCategory::Gradients, model.weights->specs());
  Transformer transformer(model.config, *model.weights, &grads);
  auto optimizer = make_fp32_optimizer(kind, optimizer_settings, model.weights->specs());

  const auto expected = test::read_tensors(dir + "/train.safetensors").at(std::string(optimizer_name) + ".losses");
  const int steps = settings.at("steps"), lines = settings.at("batch_lines");
  ASSERT_EQ(expected.size(), static_cast<size_t>(steps));
  for (int step = 0; step < steps; ++step) {
    std::vector<TokenSequence> batch;
    for (int j = 0; j < lines; ++j) batch.push_back(sequences[(step * lines + j) % sequences.size()]);
    grads.zero();
    const double loss = transformer.forward_backward(make_batch(batch));
    EXPECT_NEAR(loss, expected[step], 5e-5 * expected[step]) << "step " << step;
    optimizer->step(*model.weights, grads, lr);
  }
}

// 8-bit block-wise moments follow FP32 AdamW's trajectory closely but not
// exactly: PyTorch's AdamW losses within 1 % at every step.
TEST(TrainingCase8bit, AdamW8bitFollowsPyTorchAdamW) {
  const std::string dir = reference_case("qwen2_bias");
  std::ifstream settings_file(dir + "/train_settings.json");
  const nlohmann::json settings = nlohmann::json::parse(settings_file);
  const nlohmann::json& hyper = settings.at("adamw");
  LoadedModel model = load_hf_model(dir);
  const auto sequences = read_token_file(dir + "/train_tokens.txt", model.config.vocab_size);
  OptimizerSettings optimizer_settings = optimizer_entry(OptimizerKind::AdamW8bit).defaults;
  optimizer_settings.weight_decay = hyper.at("weight_decay");
  ParamSet grads(MemCategory::Gradients, model.weights->specs());
  Transformer transformer(model.config, *model.weights, &grads);
  auto optimizer = make_fp32_optimizer(OptimizerKind::AdamW8bit, optimizer_settings, model.weights->specs());
  const auto expected = test::read_tensors(dir + "/train.safetensors").at("adamw.losses");
  const int lines = settings.at("batch_lines");
  for (int step = 0; step < static_cast<int>(expected.size()); ++step) {
    std::vector<TokenSequence> batch;
    for (int j = 0; j < lines; ++j) batch.push_back(sequences[(step * lines + j) % sequences.size()]);
    grads.zero();
    EXPECT_NEAR(transformer.forward_backward(make_batch(batch)), expected[step], 0.01 * expected[step]) << "step " << step;
    optimizer->step(*model.weights, grads, hyper.at("lr").get<float>());
  }
}

// BF16 weights and gradients with FP32 master weights and moments: close to
// PyTorch's FP32 AdamW, within 1 % at every step.
TEST(TrainingCaseMixed, MixedPrecisionAdamWFollowsPyTorchAdamW) {
  const std::string dir = reference_case("llama_gqa_untied");
  std::ifstream settings_file(dir + "/train_settings.json");
  const nlohmann::json settings = nlohmann::json::parse(settings_file);
  const nlohmann::json& hyper = settings.at("adamw");
  TrainingSettings training_settings = default_settings(OptimizerKind::MixedAdamW);
  training_settings.hyper.weight_decay = hyper.at("weight_decay");
  const ModelSource source = ModelSource::hf_directory(dir);
  auto training = make_training(source, training_settings);
  const auto sequences = read_token_file(dir + "/train_tokens.txt", source.config().vocab_size);
  const auto expected = test::read_tensors(dir + "/train.safetensors").at("adamw.losses");
  const int lines = settings.at("batch_lines");
  for (int step = 0; step < static_cast<int>(expected.size()); ++step) {
    std::vector<TokenSequence> batch;
    for (int j = 0; j < lines; ++j) batch.push_back(sequences[(step * lines + j) % sequences.size()]);
    EXPECT_NEAR(training->step(step + 1, hyper.at("lr").get<float>(), {make_batch(batch)}), expected[step],
                0.01 * expected[step])
        << "step " << step;
  }
}

// The memory plan knows each architecture's buffers (Gemma-2's sandwich-norm
// activations, the windowed layers' attention products): from the
// configuration alone, every category to the byte of the accounting's peak.
TEST(ArchitectureMemory, PlanEqualsTheAccountingPerCategory) {
  for (const char* name : {"gemma2", "mistral_window", "phi3_longrope"}) {
    for (const std::string optimizer : {"adamw", "qlion", "qlion 4-bit momentum"}) {
      for (const bool checkpointing : {false, true}) {
        SCOPED_TRACE(std::string(name) + " " + optimizer + (checkpointing ? " checkpointing" : ""));
        reset_memory_peaks();
        const ModelSource source = ModelSource::hf_directory(reference_case(name));
        TrainingSettings settings = default_settings(parse_optimizer(optimizer.substr(0, optimizer.find(' '))));
        if (optimizer.ends_with("4-bit momentum")) settings.qft.momentum_bits = 4;
        settings.checkpointing = checkpointing;
        const std::vector<TokenSequence> lines = {{1, 2, 3, 4, 5, 6, 7, 8}, {9, 8, 7, 6, 5, 4, 3, 2}};
        PlanShape shape;
        shape.seq_len = 8;
        shape.batch = 2;
        const MemoryPlan plan = plan_memory(source.config(), settings, shape);
        {
          auto training = make_training(source, settings);
          training->step(1, 1e-3f, {make_batch(lines)});
          training->step(2, 1e-3f, {make_batch(lines)});
        }
        test::expect_plan_equals_accounting(plan);
      }
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Cases, TrainingCase,
                         testing::Combine(testing::Values("llama_tied", "qwen2_bias", "mistral_outliers", "gemma2", "phi3_longrope"),
                                          testing::Values("adamw", "lion")));

}  // namespace
}  // namespace qft
