// Non-finite numbers: a NaN or Inf gradient injected at a chosen step, in
// every optimizer, cancels that step's update exactly — the state equals the
// one before it, and the run continues as if the step had not been there —
// and is reported by tensor, layer and element; the policy (stop, skip, at
// most K skips in a row) decides what the run does; qft train's JSON stays
// JSON and its errors name the step.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <filesystem>
#include <limits>
#include <nlohmann/json.hpp>
#include <sstream>

#include "core/error.h"
#include "io/safetensors.h"
#include "model/parameters.h"
#include "test_util.h"
#include "train/nonfinite.h"
#include "train/optimizers.h"
#include "train/training.h"

namespace qft {
namespace {

namespace fs = std::filesystem;
using test::TempDir;

#define EXPECT_MENTIONS(text, part) EXPECT_NE((text).find(part), std::string::npos) << (text)

const std::string kQft = QFT_BINARY;

const nlohmann::json kConfig = {{"architectures", {"LlamaForCausalLM"}}, {"vocab_size", 48},       {"hidden_size", 64},
                                {"intermediate_size", 96},               {"num_hidden_layers", 2}, {"num_attention_heads", 4},
                                {"num_key_value_heads", 2}};

struct Method {
  const char* name;
  std::string optimizer;
  int grad_accum = 1;
  bool stack_gradients = false;
};

void PrintTo(const Method& method, std::ostream* out) { *out << method.name; }

struct Case {
  TempDir dir;
  std::string config = dir.file("config.json");
  std::vector<TokenSequence> lines;
  Method method;
  TrainingSettings settings;

  explicit Case(const Method& m, int vocab_size = 48) : method(m) {
    nlohmann::json json = kConfig;
    json["vocab_size"] = vocab_size;
    test::write_text(config, json.dump());
    for (int line = 0; line < 8; ++line) {
      TokenSequence tokens;
      for (int i = 0; i < 11 + line % 3; ++i) tokens.push_back((line * 7 + i * 5) % 48);
      lines.push_back(tokens);
    }
    settings = default_settings(parse_optimizer(m.optimizer));
    settings.hyper.weight_decay = 0.01f;
    settings.grad_accum = m.grad_accum;
    settings.seed = 9;
    settings.qft.stack_gradients = m.stack_gradients;
  }
  std::unique_ptr<Training> training() const { return make_training(ModelSource::random(config, 4), settings); }
  double step(Training& training, int step) const {
    std::vector<Batch> batches;
    for (int b = 0; b < method.grad_accum; ++b) {
      batches.push_back(make_batch({lines[(step * 2 + b) % 8], lines[(step * 3 + b + 1) % 8]}));
    }
    return training.step(step, 1e-3f * step, batches);
  }
  std::string state(const Training& training, const std::string& name) const {
    training.save_checkpoint(dir.file(name));
    return test::read_text(dir.file(name + "/state.safetensors"));
  }
};

// Poisons one element of `tensor`'s gradient at `step` while it lives.
class Poison {
 public:
  Poison(int step, std::string tensor, size_t element, float value) {
    set_gradient_test_hook([=](int at, const std::string& name, float* grad, size_t count, size_t first) {
      if (at == step && name == tensor && element >= first && element < first + count) grad[element - first] = value;
    });
  }
  ~Poison() { set_gradient_test_hook({}); }
};

constexpr float kNaN = std::numeric_limits<float>::quiet_NaN();
constexpr float kInf = std::numeric_limits<float>::infinity();

class NonFiniteStep : public testing::TestWithParam<Method> {};

// Steps 1, 2, 3 (poisoned), 4 against steps 1, 2, 4: the same state after
// the poisoned step as before it, and the same state at the end.
TEST_P(NonFiniteStep, IsDroppedExactlyAndNamed) {
  const Case c(GetParam());
  auto clean = c.training();
  c.step(*clean, 1);
  c.step(*clean, 2);
  const std::string before = c.state(*clean, "before");
  c.step(*clean, 4);
  const std::string want = c.state(*clean, "want");

  auto poisoned = c.training();
  c.step(*poisoned, 1);
  c.step(*poisoned, 2);
  EXPECT_FALSE(poisoned->nonfinite());
  {
    const Poison poison(3, "model.layers.0.mlp.down_proj.weight", 17, kNaN);
    c.step(*poisoned, 3);
  }
  ASSERT_TRUE(poisoned->nonfinite());
  const NonFinite& found = *poisoned->nonfinite();
  EXPECT_EQ(found.tensor, "model.layers.0.mlp.down_proj.weight");
  EXPECT_EQ(found.layer, 0);
  EXPECT_EQ(found.element, 17u);
  EXPECT_EQ(found.describe(), "the gradient of model.layers.0.mlp.down_proj.weight (layer 0, element 17)");
  const bool fused = c.method.optimizer == "qlion" && c.method.grad_accum == 1 && !c.method.stack_gradients;
  if (fused) {
    // Layer 1 and the head were updated inside backward before layer 0's gradient existed.
    EXPECT_TRUE(found.state_changed);
    return;
  }
  EXPECT_FALSE(found.state_changed);
  EXPECT_TRUE(c.state(*poisoned, "skipped") == before) << "the skipped step changed the state";
  c.step(*poisoned, 4);
  EXPECT_FALSE(poisoned->nonfinite());
  EXPECT_TRUE(c.state(*poisoned, "got") == want) << "the run after the skipped step differs";
}

const Method kMethods[] = {
    {"qlion_fused", "qlion"},       {"qlion_stacked", "qlion", 1, true}, {"qlion_accum2", "qlion", 2},
    {"lion", "lion"},               {"adamw", "adamw"},                  {"adamw_accum2", "adamw", 2},
    {"adamw8bit", "adamw8bit"},     {"mixed_adamw", "mixed-adamw"},      {"mixed_adamw_accum2", "mixed-adamw", 2},
};
INSTANTIATE_TEST_SUITE_P(Optimizers, NonFiniteStep, testing::ValuesIn(kMethods),
                         [](const auto& info) { return std::string(info.param.name); });

// Fused QLion: the first gradient of backward (the final norm's) is checked
// before anything is updated, so a step that goes wrong there is dropped
// exactly — the usual case, since a NaN in the forward pass reaches it first.
TEST(NonFiniteFused, FirstGradientOfBackwardIsDroppedExactly) {
  const Case c({"qlion_fused", "qlion"});
  auto clean = c.training();
  c.step(*clean, 1);
  const std::string before = c.state(*clean, "before");
  auto poisoned = c.training();
  c.step(*poisoned, 1);
  {
    const Poison poison(2, "model.norm.weight", 3, -kInf);
    c.step(*poisoned, 2);
  }
  ASSERT_TRUE(poisoned->nonfinite());
  EXPECT_EQ(poisoned->nonfinite()->describe(), "the gradient of model.norm.weight (element 3)");
  EXPECT_FALSE(poisoned->nonfinite()->state_changed);
  EXPECT_TRUE(c.state(*poisoned, "skipped") == before);
}

// Fused QLion over a 200-token vocabulary takes the LM head in blocks of 96
// rows (its largest linear, 96 × 64): a NaN in the first block is met before
// any update, so the step is dropped exactly; one in the second block is
// named by its element in the whole matrix, after the first block's update.
TEST(NonFiniteFused, HeadBlocksAreCheckedAsTheyComplete) {
  const Case c({"qlion_fused", "qlion"}, 200);
  auto clean = c.training();
  c.step(*clean, 1);
  const std::string before = c.state(*clean, "before");
  for (const size_t element : {size_t{5}, size_t{96 * 64 + 3}}) {
    auto poisoned = c.training();
    c.step(*poisoned, 1);
    {
      const Poison poison(2, "lm_head.weight", element, kNaN);
      c.step(*poisoned, 2);
    }
    ASSERT_TRUE(poisoned->nonfinite());
    EXPECT_EQ(poisoned->nonfinite()->describe(), "the gradient of lm_head.weight (element " + std::to_string(element) + ")");
    const bool first_block = element < 96 * 64;
    EXPECT_EQ(poisoned->nonfinite()->state_changed, !first_block);
    if (first_block) EXPECT_TRUE(c.state(*poisoned, "dropped") == before);
  }
}

TEST(NonFiniteGuard, FollowsThePolicy) {
  const NonFinite bad{"model.layers.2.self_attn.q_proj.weight", 2, 5, false};
  NonFiniteGuard stop(NonFinitePolicy::Stop, 3);
  EXPECT_EQ(stop.judge(7, std::nullopt), NonFiniteGuard::Outcome::Applied);
  EXPECT_EQ(stop.judge(8, bad), NonFiniteGuard::Outcome::Stop);
  EXPECT_EQ(stop.stop_reason(),
            "step 8: the gradient of model.layers.2.self_attn.q_proj.weight (layer 2, element 5) is NaN or Inf; "
            "the step changed nothing and nothing from it is saved (--on-nonfinite skip goes on)");

  NonFiniteGuard skip(NonFinitePolicy::Skip, 3);
  EXPECT_EQ(skip.judge(1, bad), NonFiniteGuard::Outcome::Skipped);
  EXPECT_EQ(skip.judge(2, bad), NonFiniteGuard::Outcome::Skipped);
  EXPECT_EQ(skip.judge(3, std::nullopt), NonFiniteGuard::Outcome::Applied);  // the count in a row starts over
  EXPECT_EQ(skip.judge(4, bad), NonFiniteGuard::Outcome::Skipped);
  EXPECT_EQ(skip.judge(5, bad), NonFiniteGuard::Outcome::Skipped);
  EXPECT_EQ(skip.judge(6, bad), NonFiniteGuard::Outcome::Stop);
  EXPECT_MENTIONS(skip.stop_reason(), "step 6: ");
  EXPECT_MENTIONS(skip.stop_reason(), "3 steps in a row were skipped (--max-skips 3)");
  EXPECT_EQ(skip.skipped(), 5);
  EXPECT_EQ(skip.record(6, bad, NonFiniteGuard::Outcome::Stop),
            (nlohmann::json{{"step", 6}, {"nonfinite", bad.tensor}, {"layer", 2}, {"action", "stopped"}, {"skipped_steps", 5}}));

  NonFinite half_applied = bad;
  half_applied.state_changed = true;
  NonFiniteGuard lenient(NonFinitePolicy::Skip, 100);
  EXPECT_EQ(lenient.judge(1, half_applied), NonFiniteGuard::Outcome::Stop);
  EXPECT_MENTIONS(lenient.stop_reason(), "cannot be skipped");
  EXPECT_THROW(NonFiniteGuard(NonFinitePolicy::Skip, 0), Error);
  EXPECT_THROW(parse_nonfinite_policy("ignore"), Error);
  EXPECT_EQ(layer_of("model.layers.13.mlp.up_proj.weight"), 13);
  EXPECT_EQ(layer_of("model.embed_tokens.weight"), -1);
  EXPECT_EQ(layer_of("model.layers.x.mlp"), -1);
}

// A model with an Inf weight: every step's loss and gradients are NaN.
std::string broken_model(const TempDir& dir) {
  const std::string path = dir.file("broken");
  fs::create_directories(path);
  test::write_text(path + "/config.json", kConfig.dump());
  const ModelSource source = ModelSource::random(dir.file("broken/config.json"), 1);
  std::vector<TensorInfo> tensors;
  for (const ParamSpec& spec : source.specs()) tensors.push_back({spec.name, spec.shape});
  write_safetensors(path + "/model.safetensors", tensors, [&](size_t i, float* out) {
    source.fill(i, out);
    if (source.specs()[i].name == "model.layers.1.self_attn.v_proj.weight") out[0] = kInf;
  });
  return path;
}

std::vector<nlohmann::json> json_lines(const std::string& output) {
  std::vector<nlohmann::json> records;
  std::istringstream lines(output);
  for (std::string line; std::getline(lines, line);) {
    if (!line.empty() && line[0] == '{') records.push_back(nlohmann::json::parse(line));  // throws on bare nan
  }
  return records;
}

TEST(NonFiniteCli, StopIsTheDefaultAndNamesTheStepAndTensor) {
  TempDir dir;
  const std::string model = broken_model(dir);
  test::write_text(dir.file("tokens.txt"), "1 2 3 4 5 6 7 8\n9 10 11 12 13 14\n");
  const auto result = test::run_command(kQft + " train --model " + model + " --tokens " + dir.file("tokens.txt") +
                                        " --steps 4 --lr 1e-3 --optimizer adamw --json --checkpoint " + dir.file("ckpt") + " 2>&1");
  EXPECT_EQ(result.exit_code, 1) << result.output;
  EXPECT_MENTIONS(result.output, "step 1: the gradient of ");
  EXPECT_MENTIONS(result.output, " is NaN or Inf; the step changed nothing and nothing from it is saved");
  EXPECT_MENTIONS(result.output, "; no checkpoint was written");
  const auto records = json_lines(result.output);
  ASSERT_EQ(records.size(), 1u) << result.output;
  EXPECT_EQ(records[0].at("action"), "stopped");
  EXPECT_FALSE(fs::exists(dir.file("ckpt")));
}

TEST(NonFiniteCli, SkipCountsAndStopsAfterKInARow) {
  TempDir dir;
  const std::string model = broken_model(dir);
  test::write_text(dir.file("tokens.txt"), "1 2 3 4 5 6 7 8\n9 10 11 12 13 14\n");
  const auto result = test::run_command(kQft + " train --model " + model + " --tokens " + dir.file("tokens.txt") +
                                        " --steps 10 --lr 1e-3 --optimizer adamw --json --on-nonfinite skip --max-skips 3 2>&1");
  EXPECT_EQ(result.exit_code, 1) << result.output;
  const auto records = json_lines(result.output);
  ASSERT_EQ(records.size(), 3u) << result.output;
  for (int i = 0; i < 3; ++i) {
    EXPECT_EQ(records[i].at("step"), i + 1);
    EXPECT_EQ(records[i].at("skipped_steps"), i + 1);
    EXPECT_EQ(records[i].at("action"), i < 2 ? "skipped" : "stopped");
  }
  EXPECT_MENTIONS(result.output, "step 3: ");
  EXPECT_MENTIONS(result.output, "3 steps in a row were skipped (--max-skips 3)");
}

}  // namespace
}  // namespace qft
