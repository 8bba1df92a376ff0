// The qft binary as a user runs it: outputs, exit codes and error messages.
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <sstream>

#include "io/safetensors.h"
#include "model/weights.h"
#include "test_util.h"

namespace qft {
namespace {

namespace fs = std::filesystem;
using test::reference_case;
using test::run_command;
using test::TempDir;

const std::string kQft = QFT_BINARY;

std::string grad_command(const std::string& model, const std::string& tokens, const std::string& out) {
  return kQft + " grad --model " + model + " --tokens " + tokens + " --out " + out;
}

TEST(Cli, HelpForEveryCommand) {
  for (const char* command : {"", " grad", " train", " memory"}) {
    const auto result = run_command(kQft + command + " --help");
    EXPECT_EQ(result.exit_code, 0) << command;
    EXPECT_NE(result.output.find("usage: qft"), std::string::npos) << command;
  }
}

TEST(Cli, BadUsageFailsWithOneLineReason) {
  const auto unknown_command = run_command(kQft + " frobnicate");
  EXPECT_NE(unknown_command.exit_code, 0);
  EXPECT_NE(unknown_command.output.find("unknown command 'frobnicate'"), std::string::npos);
  const auto unknown_option = run_command(kQft + " grad --bogus 1");
  EXPECT_NE(unknown_option.exit_code, 0);
  EXPECT_NE(unknown_option.output.find("unknown option '--bogus'"), std::string::npos);
  const auto missing = run_command(kQft + " grad --model x");
  EXPECT_NE(missing.exit_code, 0);
  EXPECT_NE(missing.output.find("--tokens"), std::string::npos);
}

TEST(Cli, GradWritesEveryGradientAndPrintsJson) {
  TempDir dir;
  const std::string model = reference_case("qwen2_bias");
  const auto result = run_command(grad_command(model, model + "/tokens.txt", dir.file("g.safetensors")));
  ASSERT_EQ(result.exit_code, 0) << result.output;
  const auto line = nlohmann::json::parse(result.output);
  const auto expected = test::read_tensors(model + "/expected.safetensors");
  EXPECT_NEAR(line.at("loss").get<double>(), expected.at("loss")[0], 1e-5 * expected.at("loss")[0]);
  EXPECT_EQ(line.at("tokens").get<int>(), 6 + 11 + 4);  // lines of 7, 12 and 5 tokens
  const auto grads = test::read_tensors(dir.file("g.safetensors"));
  EXPECT_EQ(grads.size() + 1, expected.size());
  for (const auto& [name, values] : grads) {
    EXPECT_LT(test::relative_error(values, expected.at("grad." + name)), 2e-5) << name;
  }
}

// Weights holding NaN: the JSON line stays valid (a null loss and the
// reason), the error names the first non-finite tensor in HF order, the
// exit code is 1 and no gradient file is written.
TEST(Cli, GradOnNonFiniteWeightsPrintsValidJsonAndFails) {
  TempDir dir;
  const std::string source = reference_case("qwen2_bias"), model = dir.file("model");
  fs::create_directory(model);
  fs::copy_file(source + "/config.json", model + "/config.json");
  LoadedModel loaded = load_model(source);
  loaded.weights->get("model.layers.1.self_attn.q_proj.weight")[3] = INFINITY;
  loaded.weights->get("model.layers.0.mlp.down_proj.weight")[5] = NAN;
  std::vector<TensorView> views;
  for (size_t i = 0; i < loaded.weights->specs().size(); ++i) {
    views.push_back({loaded.weights->specs()[i].name, loaded.weights->specs()[i].shape, loaded.weights->data(i)});
  }
  write_safetensors(model + "/model.safetensors", views);
  const std::string stderr_file = dir.file("stderr.txt");
  const auto result = run_command("{ " + grad_command(model, source + "/tokens.txt", dir.file("g.safetensors")) +
                                  " 2>" + stderr_file + "; }");
  EXPECT_EQ(result.exit_code, 1) << result.output;
  const auto line = nlohmann::json::parse(result.output);  // stdout alone: one valid JSON object
  EXPECT_TRUE(line.at("loss").is_null()) << result.output;
  EXPECT_EQ(line.at("tokens").get<int>(), 6 + 11 + 4);
  const std::string first = "model.layers.0.mlp.down_proj.weight (element 5 of";
  EXPECT_NE(line.at("error").get<std::string>().find(first), std::string::npos) << result.output;
  const std::string error = test::read_text(stderr_file);
  EXPECT_NE(error.find("qft grad: error: the loss is not finite"), std::string::npos) << error;
  EXPECT_NE(error.find(first), std::string::npos) << error;
  EXPECT_FALSE(fs::exists(dir.file("g.safetensors")));
}

TEST(Cli, VersionNamesTheCommitCompilerAndComputePaths) {
  const auto result = run_command(kQft + " --version");
  ASSERT_EQ(result.exit_code, 0) << result.output;
  for (const char* part : {"qft 0.", "(commit ", "compiler: ", "isa: ", "gemm: oneDNN ", "compute: fp32"}) {
    EXPECT_NE(result.output.find(part), std::string::npos) << part << " in " << result.output;
  }
}

TEST(Cli, TrainJsonReportsStepsAndMemory) {
  TempDir dir;
  const std::string model = reference_case("llama_gqa_untied");
  const auto result = run_command(kQft + " train --config " + model + "/config.json --init random --seed 3" +
                                  " --tokens " + model + "/train_tokens.txt --batch 2 --steps 3 --lr 1e-3" +
                                  " --optimizer adamw --json --checkpointing --out " + dir.file("trained"));
  ASSERT_EQ(result.exit_code, 0) << result.output;
  std::istringstream lines(result.output);
  std::string line;
  int steps = 0;
  nlohmann::json last;
  while (std::getline(lines, line)) {
    last = nlohmann::json::parse(line);
    if (last.contains("step")) {
      EXPECT_EQ(last.at("step").get<int>(), ++steps);
      EXPECT_TRUE(last.contains("loss") && last.contains("lr"));
    }
  }
  EXPECT_EQ(steps, 3);
  const auto& peaks = last.at("memory").at("peak_bytes");
  for (const char* category : {"weights", "gradients", "optimizer_state", "activations", "workspace"}) {
    EXPECT_GT(peaks.at(category).get<size_t>(), 0u) << category;
  }
  EXPECT_EQ(peaks.at("weights"), peaks.at("gradients"));
  EXPECT_EQ(peaks.at("optimizer_state").get<size_t>(), 2 * peaks.at("weights").get<size_t>());  // AdamW: m and v
  EXPECT_GT(last.at("memory").at("peak_rss_bytes").get<size_t>(), 0u);
  // The saved model loads again.
  const auto reload = run_command(grad_command(dir.file("trained"), model + "/tokens.txt", dir.file("g.safetensors")));
  EXPECT_EQ(reload.exit_code, 0) << reload.output;
}

nlohmann::json memory_plan(const std::string& config, const std::string& options) {
  const auto result = run_command(kQft + " memory --config " + config + " --json " + options);
  EXPECT_EQ(result.exit_code, 0) << result.output;
  return nlohmann::json::parse(result.output);
}

TEST(CliMemory, PlanColumnsAddUpAndRankTheOptimizers) {
  TempDir dir;
  // Rows long enough that per-row ranges are a small part of a byte per parameter.
  const std::string config = dir.file("config.json");
  test::write_text(config, nlohmann::json{{"architectures", {"LlamaForCausalLM"}}, {"vocab_size", 1000},
                                          {"hidden_size", 512}, {"intermediate_size", 1024},
                                          {"num_hidden_layers", 2}, {"num_attention_heads", 8}}
                               .dump());
  const auto adamw = memory_plan(config, "--optimizer adamw --seq-len 64");
  const auto qlion = memory_plan(config, "--optimizer qlion --seq-len 64");
  const auto stacked = memory_plan(config, "--optimizer qlion --seq-len 64 --grad-accum 4");
  const auto mixed = memory_plan(config, "--optimizer mixed-adamw --seq-len 64");
  const auto eight_bit = memory_plan(config, "--optimizer adamw8bit --seq-len 64");
  for (const auto* plan : {&adamw, &qlion, &stacked, &mixed, &eight_bit}) {
    const auto& p = *plan;
    size_t columns = 0;
    for (const char* key : {"weights", "grads", "weight_copies", "momentum", "variances", "activations"}) {
      ASSERT_TRUE(p.at(key).is_number_unsigned()) << key;
      columns += p.at(key).get<size_t>();
    }
    EXPECT_EQ(p.at("total").get<size_t>(), columns);
    EXPECT_GE(p.at("peak").get<size_t>(), p.at("total").get<size_t>());
  }
  const double params = adamw.at("params").get<double>();
  // FP32 AdamW: 4 bytes per parameter in each of weights, grads, m and v.
  for (const char* key : {"weights", "grads", "momentum", "variances"}) EXPECT_NEAR(adamw.at(key).get<double>() / params, 4.0, 0.1) << key;
  // Mixed precision: BF16 weights and gradients, FP32 master copy and moments.
  EXPECT_NEAR(mixed.at("weights").get<double>() / params, 2.0, 0.01);
  EXPECT_NEAR(mixed.at("weight_copies").get<double>() / params, 4.0, 0.1);
  // 8-bit AdamW: one byte per state value plus a float per 256-value block.
  EXPECT_NEAR(eight_bit.at("momentum").get<double>() / params, 1.0, 0.05);
  // QLion: about a byte per parameter for weights and momentum; the stack adds about a byte of gradients.
  EXPECT_NEAR(qlion.at("weights").get<double>() / params, 1.1, 0.15);
  EXPECT_NEAR(qlion.at("momentum").get<double>() / params, 1.0, 0.15);
  EXPECT_EQ(qlion.at("variances").get<size_t>(), 0u);
  EXPECT_GT(stacked.at("grads").get<double>() - qlion.at("grads").get<double>(), 0.9 * params);
}

// The plan, made before anything is allocated, against what the accounting
// layer measured during the run.
TEST(CliMemory, PlanMatchesTheMeasurementWithinTenPercent) {
  const std::string model = reference_case("llama_gqa_untied");
  // Lines of one length, so every micro-batch has the planned shape.
  TempDir dir;
  test::write_text(dir.file("tokens.txt"), "1 2 3 4 5 6 7 8\n9 8 7 6 5 4 3 2\n5 5 6 6 7 7 8 8\n2 4 6 8 10 12 14 16\n");
  for (const std::string options : {"--optimizer qlion", "--optimizer qlion --grad-accum 2 --checkpointing",
                                    "--optimizer lion", "--optimizer adamw --checkpointing", "--optimizer adamw8bit",
                                    "--optimizer mixed-adamw --grad-accum 2", "--optimizer qlion --compute bf16",
                                    "--optimizer mixed-adamw --compute bf16", "--optimizer qlion --compute fp32",
                                    "--optimizer lion --compute bf16 --checkpointing", "--method lora",
                                    "--method lora --lora-base int8 --optimizer lion --checkpointing",
                                    "--method lora --compute bf16"}) {
    SCOPED_TRACE(options);
    const auto result = run_command(kQft + " train --model " + model + " --tokens " + dir.file("tokens.txt") +
                                    " --batch 2 --steps 2 --lr 1e-3 --json " + options);
    ASSERT_EQ(result.exit_code, 0) << result.output;
    std::string output = result.output;
    while (!output.empty() && output.back() == '\n') output.pop_back();
    const auto last = nlohmann::json::parse(output.substr(output.rfind('\n') + 1));
    const auto& plan = last.at("plan");
    const auto& measured = last.at("memory").at("peak_bytes");
    const auto close = [](double planned, double seen) { return std::abs(planned - seen) <= 0.1 * std::max(seen, 1.0); };
    EXPECT_TRUE(close(plan.at("weights").get<double>() + plan.at("adapters").get<double>(), measured.at("weights")))
        << plan << measured;
    EXPECT_TRUE(close(plan.at("grads"), measured.at("gradients"))) << plan << measured;
    EXPECT_TRUE(close(plan.at("momentum").get<double>() + plan.at("variances").get<double>(), measured.at("optimizer_state")))
        << plan << measured;
    EXPECT_TRUE(close(plan.at("activations"), measured.at("activations"))) << plan << measured;
    EXPECT_TRUE(close(plan.at("weight_copies"), measured.at("weight_copies"))) << plan << measured;
    EXPECT_TRUE(close(plan.at("peak"), last.at("memory").at("peak_total_bytes"))) << plan << last;
    // BF16 compute's staging of rounded operands is planned to the byte.
    if (options.find("bf16") != std::string::npos) EXPECT_EQ(plan.at("workspace"), measured.at("workspace")) << plan << measured;
    // `qft memory` plans the same run before it exists.
    const auto planned = run_command(kQft + " memory --model " + model + " --seq-len 8 --batch 2 --json " + options);
    ASSERT_EQ(planned.exit_code, 0) << planned.output;
    EXPECT_EQ(nlohmann::json::parse(planned.output), plan);
  }
}

// LoRA's plan: the base, the adapters, and gradients and AdamW moments of the adapters only.
TEST(CliMemory, LoraPlanShowsBaseAndAdapters) {
  const std::string model = reference_case("llama_gqa_untied");
  const auto table = run_command(kQft + " memory --model " + model + " --method lora --seq-len 16");
  ASSERT_EQ(table.exit_code, 0) << table.output;
  EXPECT_NE(table.output.find("LoRA r=8 FP32 base + adamw"), std::string::npos) << table.output;
  EXPECT_NE(table.output.find("adapters"), std::string::npos) << table.output;
  const auto plan_of = [&](const std::string& options) {
    const auto result = run_command(kQft + " memory --model " + model + " --seq-len 16 --json " + options);
    EXPECT_EQ(result.exit_code, 0) << result.output;
    return nlohmann::json::parse(result.output);
  };
  const auto fp32 = plan_of("--method lora"), int8 = plan_of("--method lora --lora-base int8"), full = plan_of("--optimizer adamw");
  EXPECT_EQ(fp32.at("weights"), full.at("weights"));
  EXPECT_LT(int8.at("weights").get<double>(), 0.4 * fp32.at("weights").get<double>());
  EXPECT_EQ(fp32.at("grads"), fp32.at("adapters"));
  EXPECT_EQ(fp32.at("momentum"), fp32.at("adapters"));
  EXPECT_EQ(fp32.at("variances"), fp32.at("adapters"));
  EXPECT_EQ(plan_of("--method lora --lora-rank 16").at("adapters").get<double>(), 2 * fp32.at("adapters").get<double>());
  EXPECT_NE(run_command(kQft + " memory --model " + model + " --lora-rank 4").exit_code, 0);  // needs --method lora
}

TEST(CliMemory, TrainRefusesAPlanOverTheLimitBeforeAllocating) {
  const std::string model = reference_case("llama_tied");
  const auto result = run_command(kQft + " train --model " + model + " --tokens " + model +
                                  "/train_tokens.txt --steps 1 --lr 1e-3 --max-memory 100K");
  EXPECT_EQ(result.exit_code, 1);
  EXPECT_NE(result.output.find("exceeds the allowed"), std::string::npos) << result.output;
  EXPECT_NE(result.output.find("memory plan:"), std::string::npos) << result.output;
  EXPECT_EQ(result.output.find("step 1"), std::string::npos) << result.output;
  EXPECT_NE(run_command(kQft + " train --model " + model + " --tokens x --steps 1 --lr 1 --max-memory lots").exit_code, 0);
}

// A copy of a reference model that a test may break.
std::string copy_model(const TempDir& dir, const std::string& name) {
  const std::string target = dir.file(name);
  fs::copy(reference_case(name), target, fs::copy_options::recursive);
  return target;
}

struct Failure {
  int exit_code;
  std::string output;
  bool wrote_output;
};

Failure grad_failure(const TempDir& dir, const std::string& model) {
  const std::string out = dir.file("out.safetensors");
  const auto result = run_command(grad_command(model, reference_case("llama_tied") + "/tokens.txt", out));
  return {result.exit_code, result.output, fs::exists(out)};
}

void expect_clear_error(const Failure& failure, const std::vector<std::string>& fragments) {
  EXPECT_EQ(failure.exit_code, 1) << failure.output;
  EXPECT_FALSE(failure.wrote_output);
  EXPECT_EQ(std::count(failure.output.begin(), failure.output.end(), '\n'), 1) << failure.output;
  for (const std::string& fragment : fragments) {
    EXPECT_NE(failure.output.find(fragment), std::string::npos) << "'" << fragment << "' not in: " << failure.output;
  }
}

TEST(CliBadModels, UnknownArchitecture) {
  TempDir dir;
  const std::string model = copy_model(dir, "llama_tied");
  auto config = nlohmann::json::parse(test::read_text(model + "/config.json"));
  config["architectures"] = {"GPT2LMHeadModel"};
  test::write_text(model + "/config.json", config.dump());
  expect_clear_error(grad_failure(dir, model), {model + "/config.json", "GPT2LMHeadModel"});
}

TEST(CliBadModels, MissingTensor) {
  TempDir dir;
  const std::string model = copy_model(dir, "llama_tied");
  auto tensors = test::read_tensors(model + "/model.safetensors");
  const SafetensorsFile original(model + "/model.safetensors");
  std::vector<TensorView> kept;
  for (const auto& [name, values] : tensors) {
    if (name != "model.layers.1.mlp.up_proj.weight") kept.push_back({name, original.find(name)->shape, values.data()});
  }
  write_safetensors(model + "/rewritten.safetensors", kept);
  fs::rename(model + "/rewritten.safetensors", model + "/model.safetensors");
  expect_clear_error(grad_failure(dir, model), {model + "/model.safetensors", "model.layers.1.mlp.up_proj.weight"});
}

TEST(CliBadModels, WrongShape) {
  TempDir dir;
  const std::string model = copy_model(dir, "llama_tied");
  auto config = nlohmann::json::parse(test::read_text(model + "/config.json"));
  config["intermediate_size"] = config["intermediate_size"].get<int>() + 1;
  test::write_text(model + "/config.json", config.dump());
  expect_clear_error(grad_failure(dir, model), {"model.layers.0.mlp.gate_proj.weight", "has shape"});
}

TEST(CliBadModels, TruncatedFile) {
  TempDir dir;
  const std::string model = copy_model(dir, "llama_tied");
  const std::string path = model + "/model.safetensors";
  fs::resize_file(path, fs::file_size(path) / 2);
  expect_clear_error(grad_failure(dir, model), {path, "truncated"});
}

TEST(CliBadModels, MissingShard) {
  TempDir dir;
  const std::string model = copy_model(dir, "llama_gqa_untied");
  std::string removed;
  for (const auto& entry : fs::directory_iterator(model)) {
    if (entry.path().filename().string().rfind("model-", 0) == 0) removed = entry.path().string();
  }
  ASSERT_FALSE(removed.empty());
  fs::remove(removed);
  expect_clear_error(grad_failure(dir, model), {removed, "cannot open"});
}

TEST(CliBadInput, TokenOutsideVocabulary) {
  TempDir dir;
  test::write_text(dir.file("tokens.txt"), "1 2 3\n4 99999 5\n");
  const auto result = run_command(grad_command(reference_case("llama_tied"), dir.file("tokens.txt"), dir.file("o")));
  EXPECT_EQ(result.exit_code, 1);
  EXPECT_NE(result.output.find(dir.file("tokens.txt") + ":2"), std::string::npos) << result.output;
  EXPECT_FALSE(fs::exists(dir.file("o")));
}

}  // namespace
}  // namespace qft
