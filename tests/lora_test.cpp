// LoRA against PEFT itself (tests/reference/make_lora_reference.py): the adapters'
// gradients, a short AdamW run, PEFT loading what qft exports; the INT8 base against
// the FP32 base on the same (de-quantized) weights; the dropout kernel; bad input.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <random>

#include "core/error.h"
#include "data/batch.h"
#include "kernels/kernels.h"
#include "model/hf_export.h"
#include "model/transformer.h"
#include "model/weights.h"
#include "train/lora_store.h"
#include "train/memory_plan.h"
#include "train/optimizers.h"
#include "train/training.h"
#include "test_util.h"

namespace qft {
namespace {

namespace fs = std::filesystem;
using test::reference_case;

// Float32 against PEFT in float64: the FP32 engine's own reference tolerances.
constexpr double kGradientTolerance = 2e-5;
constexpr double kLossTolerance = 1e-5;

LoraSettings reference_settings(const std::string& dir) {
  LoraSettings lora;
  lora.rank = 4;
  lora.alpha = 8;
  lora.dropout = 0;
  lora.initial_adapter = dir + "/lora/adapter";
  return lora;
}

// LoRA adapters trained by AdamW (the QFT paper's LoRA baseline), at its defaults.
TrainingSettings with_lora(const LoraSettings& lora) {
  TrainingSettings settings = default_settings(OptimizerKind::AdamW);
  settings.lora = lora;
  return settings;
}

class LoraReference : public testing::TestWithParam<const char*> {
 protected:
  std::string dir() const { return reference_case(GetParam()); }
};

struct AdapterGradients {
  double loss;
  std::vector<std::vector<float>> grads;
};

AdapterGradients adapter_gradients(const ModelSource& source, const LoraSettings& lora, const std::string& tokens,
                                   bool checkpointing) {
  LoraStore store(source, with_lora(lora));
  Transformer transformer(source.config(), store, {.checkpointing = checkpointing, .adapter_rank = lora.rank});
  store.begin_micro_batch(1, 0);
  AdapterGradients result;
  result.loss = transformer.forward_backward(make_batch(read_token_file(tokens, source.config().vocab_size)));
  for (size_t i = 0; i < store.adapter_grads().specs().size(); ++i) {
    const float* grad = store.adapter_grads().data(i);
    result.grads.emplace_back(grad, grad + store.adapter_grads().numel(i));
  }
  return result;
}

TEST_P(LoraReference, LossAndAdapterGradientsMatchPeft) {
  const ModelSource source = ModelSource::hf_directory(dir());
  const LoraSettings lora = reference_settings(dir());
  const AdapterGradients result = adapter_gradients(source, lora, dir() + "/tokens.txt", false);
  const auto expected = test::read_tensors(dir() + "/lora/expected.safetensors");
  EXPECT_NEAR(result.loss, expected.at("loss")[0], kLossTolerance * expected.at("loss")[0]);
  const std::vector<ParamSpec> specs = lora_adapter_specs(source.config(), lora);
  ASSERT_EQ(specs.size() + 1, expected.size());  // every PEFT adapter has a counterpart
  for (size_t i = 0; i < specs.size(); ++i) {
    const auto& want = expected.at("grad." + specs[i].name);
    ASSERT_EQ(want.size(), result.grads[i].size()) << specs[i].name;
    EXPECT_LT(test::relative_error(result.grads[i], want), kGradientTolerance) << specs[i].name;
  }
}

TEST_P(LoraReference, RecomputationGivesIdenticalGradients) {
  const ModelSource source = ModelSource::hf_directory(dir());
  LoraSettings lora = reference_settings(dir());
  lora.dropout = 0.2f;  // the recomputed forward must draw the same masks
  const AdapterGradients stored = adapter_gradients(source, lora, dir() + "/tokens.txt", false);
  const AdapterGradients recomputed = adapter_gradients(source, lora, dir() + "/tokens.txt", true);
  EXPECT_EQ(stored.loss, recomputed.loss);
  EXPECT_EQ(stored.grads, recomputed.grads);
}

TEST_P(LoraReference, AdamWOnTheAdaptersMatchesPeftTraining) {
  std::ifstream settings_file(dir() + "/train_settings.json");
  const nlohmann::json settings = nlohmann::json::parse(settings_file);
  const nlohmann::json& hyper = settings.at("adamw");
  const ModelSource source = ModelSource::hf_directory(dir());
  TrainingSettings training_settings = with_lora(reference_settings(dir()));
  training_settings.hyper.beta1 = hyper.at("beta1");
  training_settings.hyper.beta2 = hyper.at("beta2");
  training_settings.hyper.eps = hyper.at("eps");
  training_settings.hyper.weight_decay = hyper.at("weight_decay");
  auto training = make_training(source, training_settings);

  const auto sequences = read_token_file(dir() + "/" + settings.at("tokens_file").get<std::string>(),
                                         source.config().vocab_size);
  const auto expected = test::read_tensors(dir() + "/lora/train.safetensors").at("adamw.losses");
  const int steps = settings.at("steps"), lines = settings.at("batch_lines");
  ASSERT_EQ(expected.size(), static_cast<size_t>(steps));
  for (int step = 0; step < steps; ++step) {
    std::vector<TokenSequence> batch;
    for (int j = 0; j < lines; ++j) batch.push_back(sequences[(step * lines + j) % sequences.size()]);
    const double loss = training->step(step + 1, hyper.at("lr").get<float>(), {make_batch(batch)});
    EXPECT_NEAR(loss, expected[step], 5e-5 * expected[step]) << "step " << step;
  }
}

// What a user's PEFT makes of qft's adapter: the same loss on the base model,
// and merge_and_unload() the same as qft's merged export.
TEST_P(LoraReference, PeftLoadsTheExportedAdapterWithTheSameLoss) {
  const ModelSource source = ModelSource::hf_directory(dir());
  TrainingSettings settings = with_lora(LoraSettings{});  // PEFT's defaults: r 8, alpha 16, dropout 0.05, B = 0
  settings.seed = 3;
  auto training = make_training(source, settings);
  const auto lines = read_token_file(dir() + "/train_tokens.txt", source.config().vocab_size);
  for (int step = 1; step <= 3; ++step) training->step(step, 1e-2f, {make_batch(lines)});

  test::TempDir out;
  training->export_adapter(out.file("adapter"), dir());
  HfExport merged_options;
  merged_options.dtype = DType::F32;
  export_hf_model(out.file("merged"), source.config(), [&](size_t i, float* values) { training->parameter(i, values); },
                  merged_options);
  const Batch batch = make_batch(read_token_file(dir() + "/tokens.txt", source.config().vocab_size));
  const double qft_loss = training->evaluate(batch);
  LoadedModel merged = load_hf_model(out.file("merged"));
  const double merged_loss = Transformer(merged.config, *merged.weights, nullptr).loss(batch);

  const auto result = test::run_command(std::string(QFT_PYENV_DIR) + "/bin/python " + QFT_SOURCE_DIR +
                                        "/tests/reference/make_lora_reference.py --loss " + dir() + " " +
                                        out.file("adapter") + " " + dir() + "/tokens.txt 2>/dev/null");
  ASSERT_EQ(result.exit_code, 0) << result.output;
  const auto peft = nlohmann::json::parse(result.output.substr(result.output.rfind('{')));
  EXPECT_NEAR(qft_loss, peft.at("loss").get<double>(), kLossTolerance * qft_loss);
  EXPECT_NEAR(merged_loss, peft.at("merged_loss").get<double>(), kLossTolerance * merged_loss);
  EXPECT_NEAR(merged_loss, qft_loss, kLossTolerance * qft_loss);
  // The training moved the model: the adapters are not still the identity.
  EXPECT_GT(std::abs(qft_loss - Transformer(merged.config, *load_hf_model(dir()).weights, nullptr).loss(batch)), 1e-4);
}

INSTANTIATE_TEST_SUITE_P(Cases, LoraReference, testing::Values("llama_gqa_untied", "llama_tied", "qwen2_bias"));

// The INT8 base is QFT's hybrid form rounded once: its gradients equal the FP32
// base's on the de-quantized weights, computed by the same kernels, bit for bit.
TEST(LoraInt8Base, EqualsTheFp32BaseOnTheDequantizedWeights) {
  const std::string dir = reference_case("mistral_outliers");
  const ModelSource source = ModelSource::hf_directory(dir);
  LoraSettings lora;
  lora.rank = 2;
  lora.dropout = 0.1f;
  lora.int8_base = true;
  test::TempDir out;
  {
    // B = 0 at the start, so the merged model is the de-quantized base itself.
    LoraStore store(source, with_lora(lora));
    HfExport options;
    options.dtype = DType::F32;
    export_hf_model(out.file("dequantized"), source.config(), [&](size_t i, float* values) { store.merged(i, values); },
                    options);
  }
  const std::string tokens = dir + "/tokens.txt";
  const AdapterGradients int8 = adapter_gradients(source, lora, tokens, false);
  lora.int8_base = false;
  const AdapterGradients fp32 = adapter_gradients(ModelSource::hf_directory(out.file("dequantized")), lora, tokens, false);
  EXPECT_EQ(int8.loss, fp32.loss);
  EXPECT_EQ(int8.grads, fp32.grads);
  // And the INT8 base is an approximation of the model, not a copy of it.
  const AdapterGradients original = adapter_gradients(source, lora, tokens, false);
  EXPECT_NE(original.loss, int8.loss);
  EXPECT_NEAR(original.loss, int8.loss, 1e-2 * original.loss);
}

// dropout(x) as PyTorch defines it, element by element, and a kernel whose
// gradients match central differences of Σ out · G.
TEST(LoraKernels, DropoutAndAdapterGradientsMatchFiniteDifferences) {
  const int N = 5, IC = 12, OC = 7, R = 3;
  const float scale = 1.5f;
  std::mt19937 generator(11);
  std::normal_distribution<float> normal;
  const auto random = [&](size_t n) {
    std::vector<float> v(n);
    for (float& x : v) x = normal(generator);
    return v;
  };
  const std::vector<float> inp = random(N * IC), a = random(R * IC), b = random(OC * R), g = random(N * OC);
  const kernels::DropoutMask mask{0.3f, 42, {5, 9}};

  std::vector<float> dropped = inp;
  kernels::dropout_apply(dropped.data(), mask, N, IC);
  int zeros = 0;
  for (size_t i = 0; i < inp.size(); ++i) {
    if (dropped[i] == 0.0f) ++zeros;
    else EXPECT_FLOAT_EQ(dropped[i], inp[i] / 0.7f);
  }
  EXPECT_GT(zeros, 0);
  EXPECT_LT(zeros, N * IC);

  std::vector<float> x = inp, av = a, bv = b;  // perturbed one element at a time
  const auto objective = [&] {
    std::vector<float> out(N * OC, 0.0f), low(N * R), scratch(N * IC);
    kernels::lora_forward(out.data(), low.data(), scratch.data(), x.data(), av.data(), bv.data(), mask, N, IC, OC, R, scale);
    double sum = 0;
    for (size_t i = 0; i < out.size(); ++i) sum += static_cast<double>(out[i]) * g[i];
    return sum;
  };
  std::vector<float> dinp(N * IC, 0.0f), da(R * IC, 0.0f), db(OC * R, 0.0f), low(N * R), dlow(N * R), scratch(N * IC);
  kernels::lora_backward(dinp.data(), da.data(), db.data(), low.data(), dlow.data(), scratch.data(), g.data(), inp.data(),
                         a.data(), b.data(), mask, N, IC, OC, R, scale);
  const auto check = [&](std::vector<float>& which, const std::vector<float>& analytic, const char* name) {
    ASSERT_EQ(which.size(), analytic.size());
    for (size_t i = 0; i < analytic.size(); ++i) {
      const float saved = which[i], h = 1e-2f;
      which[i] = saved + h;
      const double up = objective();
      which[i] = saved - h;
      const double down = objective();
      which[i] = saved;
      EXPECT_NEAR(analytic[i], (up - down) / (2 * h), 2e-3 * (1 + std::abs(analytic[i]))) << name << " " << i;
    }
  };
  check(x, dinp, "dinp");
  check(av, da, "da");
  check(bv, db, "db");
}

TEST(LoraSettings, BadInputIsRefusedByName) {
  const std::string dir = reference_case("llama_tied");
  const ModelSource source = ModelSource::hf_directory(dir);
  const auto refused = [&](LoraSettings lora) { return test::error_of([&] { LoraStore store(source, with_lora(lora)); }); };
  LoraSettings lora;
  lora.rank = 0;
  EXPECT_NE(refused(lora).find("--lora-rank"), std::string::npos);
  lora.rank = 100000;
  EXPECT_NE(refused(lora).find("exceeds"), std::string::npos);
  lora = LoraSettings{};
  lora.dropout = 1.0f;
  EXPECT_NE(refused(lora).find("--lora-dropout"), std::string::npos);
  EXPECT_NE(test::error_of([] { parse_lora_targets("q_proj,lm_head"); }).find("'lm_head'"), std::string::npos);
  EXPECT_EQ(lora_targets_text(parse_lora_targets("v_proj, q_proj,v_proj")), "q_proj,v_proj");
  EXPECT_EQ(parse_lora_targets("all-linear").size(), 7u);

  // An adapter of another rank, other targets, DoRA, or missing tensors.
  test::TempDir out;
  const std::string adapter = out.file("adapter");
  fs::copy(reference_case("llama_tied") + "/lora/adapter", adapter);
  lora = reference_settings(dir);
  lora.initial_adapter = adapter;
  lora.rank = 2;
  EXPECT_NE(refused(lora).find("r is 4, but --lora-rank is 2"), std::string::npos) << refused(lora);
  lora.rank = 4;
  lora.targets = parse_lora_targets("q_proj,v_proj");
  EXPECT_NE(refused(lora).find("target_modules are"), std::string::npos) << refused(lora);
  lora.targets = LoraSettings{}.targets;
  EXPECT_EQ(refused(lora), "");
  auto config = nlohmann::json::parse(test::read_text(adapter + "/adapter_config.json"));
  config["use_dora"] = true;
  test::write_text(adapter + "/adapter_config.json", config.dump());
  EXPECT_NE(refused(lora).find("'use_dora' is set (DoRA)"), std::string::npos) << refused(lora);
  config["use_dora"] = false;
  test::write_text(adapter + "/adapter_config.json", config.dump());
  fs::remove(adapter + "/adapter_model.safetensors");
  EXPECT_NE(refused(lora).find("adapter_model.safetensors"), std::string::npos) << refused(lora);

  TrainingSettings settings = with_lora(LoraSettings{});
  settings.optimizer = OptimizerKind::QLion;
  EXPECT_NE(test::error_of([&] { make_training(source, settings); }).find("adamw, lion or adamw8bit"), std::string::npos);
  settings.optimizer = OptimizerKind::AdamW;
  const ModelSource phi3 = ModelSource::hf_directory(reference_case("phi3"));
  EXPECT_NE(test::error_of([&] { make_training(phi3, settings); }).find("LoRA on Phi3ForCausalLM's fused qkv_proj"),
            std::string::npos);
}

// The plan, from the configuration alone, against the accounting during a run:
// every category to the byte.
TEST(LoraMemory, PlanEqualsTheAccountingPerCategory) {
  const std::string dir = reference_case("llama_gqa_untied");
  for (const bool int8 : {false, true}) {
    for (const bool checkpointing : {false, true}) {
      SCOPED_TRACE(std::string(int8 ? "int8" : "fp32") + (checkpointing ? " checkpointing" : ""));
      reset_memory_peaks();
      const ModelSource source = ModelSource::hf_directory(dir);
      TrainingSettings settings = with_lora(LoraSettings{});
      settings.checkpointing = checkpointing;
      settings.lora->int8_base = int8;
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

}  // namespace
}  // namespace qft
