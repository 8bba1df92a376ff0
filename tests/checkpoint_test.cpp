// Checkpoints: resuming continues bit for bit for every training method,
// an interrupted write leaves the previous checkpoint loadable, damaged files
// give clear errors, and qft train stops cleanly on SIGINT/SIGTERM.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>
#include <thread>

#include "core/error.h"
#include "io/run_lock.h"
#include "io/state_file.h"
#include "test_util.h"
#include "train/checkpoint.h"
#include "train/optimizers.h"
#include "train/training.h"

namespace qft {
namespace {

namespace fs = std::filesystem;
using test::error_of;
using test::TempDir;

const std::string kQft = QFT_BINARY;

std::string read_bytes(const std::string& path) {
  std::ifstream file(path, std::ios::binary);
  std::stringstream bytes;
  bytes << file.rdbuf();
  return bytes.str();
}

void write_bytes(const std::string& path, const std::string& bytes) {
  std::ofstream(path, std::ios::binary | std::ios::trunc) << bytes;
}

#define EXPECT_MENTIONS(text, part) EXPECT_NE((text).find(part), std::string::npos) << (text)

TEST(RunLock, IsExclusiveNamesTheHolderAndIsReleasedWithIt) {
  TempDir dir;
  const std::string file = dir.file("sub/dir.lock");
  auto first = std::make_unique<RunLock>(file, "the output");
  try {
    RunLock second(file, "the output");
    FAIL() << "a second lock was granted";
  } catch (const Error& error) {
    EXPECT_EQ(std::string(error.what()), "the output is in use by another qft run (pid " + std::to_string(getpid()) +
                                             "; lock " + file + ")");
  }
  first.reset();
  EXPECT_NO_THROW(RunLock again(file, "the output"));
  EXPECT_EQ(sibling_lock_file("/a/checkpoint//"), "/a/checkpoint.lock");
}

TEST(Xxh64, MatchesTheReferenceImplementation) {
  // From libxxhash 0.8.1's XXH64 on bytes (i·7 + 3) mod 256.
  std::vector<uint8_t> data(100);
  for (int i = 0; i < 100; ++i) data[i] = static_cast<uint8_t>((i * 7 + 3) % 256);
  const std::vector<std::pair<size_t, uint64_t>> expected = {
      {0, 0xef46db3751d8e999}, {1, 0x1f25c8d0bc1f4bb6},  {3, 0x31d2363f52e564c9},  {4, 0x9bb64b7d66ee9fda},
      {7, 0x9a7b149959ce60d8}, {8, 0xdab99d95c6f90092},  {31, 0xa2aa5f33cc4a6119}, {32, 0x23c3c17ef790fd97},
      {33, 0x50a7cfc7ba588784}, {63, 0x5e3e54b431c7493c}, {64, 0x0eb64b3ef6eeb01f}, {100, 0xa61f8d4c170fe531}};
  for (const auto& [length, hash] : expected) EXPECT_EQ(xxh64(data.data(), length), hash) << length;
  EXPECT_EQ(xxh64(data.data(), 100, 12345), 0xacb8a02891fea7d2u);
  // XXH64 of no bytes, from a null pointer: an empty tensor (no outliers)
  // made pointer arithmetic on null, found by fuzz/checkpoint_fuzz under UBSan.
  EXPECT_EQ(xxh64(nullptr, 0), 0xef46db3751d8e999u);
}

// Tiny models: untied LLaMA, and tied Qwen2 with biases (norm and bias
// vectors, a shared embedding/LM-head matrix).
struct Model {
  TempDir dir;
  std::string config;
  std::vector<TokenSequence> lines;

  explicit Model(bool qwen2) {
    config = dir.file("config.json");
    nlohmann::json json = {{"architectures", {qwen2 ? "Qwen2ForCausalLM" : "LlamaForCausalLM"}},
                           {"vocab_size", 48}, {"hidden_size", 64}, {"intermediate_size", 96},
                           {"num_hidden_layers", 2}, {"num_attention_heads", 4}, {"num_key_value_heads", 2},
                           {"tie_word_embeddings", qwen2}};
    test::write_text(config, json.dump());
    for (int line = 0; line < 24; ++line) {
      TokenSequence tokens;
      for (int i = 0; i < 10 + line % 7; ++i) tokens.push_back((line * 5 + i * (1 + line % 3)) % 48);
      lines.push_back(tokens);
    }
  }
  // The micro-batches of step `step` (from 1): two lines each, in order.
  std::vector<Batch> batches(int step, int count) const {
    std::vector<Batch> out;
    for (int b = 0; b < count; ++b) {
      const size_t first = (static_cast<size_t>(step - 1) * count + b) * 2;
      out.push_back(make_batch({lines[first % lines.size()], lines[(first + 1) % lines.size()]}));
    }
    return out;
  }
};

struct Method {
  const char* name;
  std::string optimizer;
  int grad_accum = 1;
  bool stack_gradients = false;
  Rounding rounding = Rounding::Stochastic;
  const char* lora_base = nullptr;  // LoRA on an "fp32" or "int8" base; nullptr: every parameter
  int momentum_bits = 8;
};

void PrintTo(const Method& method, std::ostream* out) { *out << method.name; }

TrainingSettings settings_for(const Method& method) {
  TrainingSettings settings = default_settings(parse_optimizer(method.optimizer));
  settings.hyper.weight_decay = 0.01f;
  settings.grad_accum = method.grad_accum;
  settings.seed = 7;
  settings.qft.rounding = method.rounding;
  settings.qft.stack_gradients = method.stack_gradients;
  settings.qft.momentum_bits = method.momentum_bits;
  if (method.lora_base) {
    settings.lora = LoraSettings{};
    settings.lora->rank = 2;
    settings.lora->dropout = 0.1f;  // masks keyed by step: a resumed run draws the same
    settings.lora->int8_base = std::string(method.lora_base) == "int8";
  }
  return settings;
}

// A schedule the caller owns: changing learning rates, an epoch boundary.
float lr_at(int step) { return 2e-3f * (1.0f + static_cast<float>(step % 3)) / 3.0f; }
bool epoch_before(int step) { return step == 3 || step == 6; }

double run_step(Training& training, const Model& model, const Method& method, int step) {
  if (epoch_before(step)) training.new_epoch();
  return training.step(step, lr_at(step), model.batches(step, method.grad_accum));
}

std::vector<std::vector<float>> parameters(Training& training, const ModelSource& source) {
  std::vector<std::vector<float>> values;
  for (size_t i = 0; i < source.specs().size(); ++i) {
    values.emplace_back(shape_numel(source.specs()[i].shape));
    training.parameter(i, values.back().data());
  }
  return values;
}

class Resume : public testing::TestWithParam<std::tuple<Method, bool>> {};

// 2N steps straight vs N steps, a checkpoint, a fresh object (from another
// initialisation, so nothing of it may survive the load; LoRA's frozen base is
// not in the checkpoint, so it comes from the same model) and N more.
TEST_P(Resume, ContinuesBitForBit) {
  const auto& [method, qwen2] = GetParam();
  const Model model(qwen2);
  const TrainingSettings settings = settings_for(method);
  const ModelSource source = ModelSource::random(model.config, 3);
  constexpr int N = 4;
  TempDir dir;

  auto straight = make_training(source, settings);
  std::vector<double> losses;
  for (int step = 1; step <= 2 * N; ++step) losses.push_back(run_step(*straight, model, method, step));

  {
    auto first = make_training(source, settings);
    for (int step = 1; step <= N; ++step) ASSERT_EQ(run_step(*first, model, method, step), losses[step - 1]) << step;
    first->save_checkpoint(dir.file("ckpt"), {{"position", 17}});
  }
  if (method.lora_base) {
    // Another base is refused by its fingerprint.
    auto other_base = make_training(ModelSource::random(model.config, 99), settings);
    EXPECT_NE(test::error_of([&] { other_base->load_checkpoint(dir.file("ckpt")); }).find("lora_base_xxh64"),
              std::string::npos);
  }
  auto resumed = make_training(method.lora_base ? source : ModelSource::random(model.config, 99), settings);
  const ResumePoint resume = resumed->load_checkpoint(dir.file("ckpt"));
  EXPECT_EQ(resume.step, N);
  EXPECT_EQ(resumed->last_step(), N);
  EXPECT_EQ(resume.trainer_state, (nlohmann::json{{"position", 17}}));
  EXPECT_EQ(resume.directory, dir.file("ckpt"));
  for (int step = N + 1; step <= 2 * N; ++step) {
    EXPECT_EQ(run_step(*resumed, model, method, step), losses[step - 1]) << "step " << step;
  }
  const auto want = parameters(*straight, source), got = parameters(*resumed, source);
  for (size_t i = 0; i < want.size(); ++i) {
    EXPECT_EQ(std::memcmp(got[i].data(), want[i].data(), want[i].size() * sizeof(float)), 0) << source.specs()[i].name;
  }
  // The whole state (momentum, codes, ranges, outliers, step counts) too.
  straight->save_checkpoint(dir.file("straight"));
  resumed->save_checkpoint(dir.file("resumed"));
  EXPECT_TRUE(read_bytes(dir.file("straight/state.safetensors")) == read_bytes(dir.file("resumed/state.safetensors")));
}

const Method kMethods[] = {
    {"qlion", "qlion"},
    {"qlion_accum2", "qlion", 2},
    {"qlion_stacked", "qlion", 1, true},
    {"qlion_nearest", "qlion", 1, false, Rounding::Nearest},
    {"qlion_momentum4", "qlion", 1, false, Rounding::Stochastic, nullptr, 4},
    {"qlion_momentum4_accum2", "qlion", 2, false, Rounding::Stochastic, nullptr, 4},
    {"lion", "lion"},
    {"adamw", "adamw"},
    {"adamw_accum2", "adamw", 2},
    {"adamw8bit", "adamw8bit"},
    {"mixed_adamw", "mixed-adamw"},
    {"mixed_adamw_accum2", "mixed-adamw", 2},
    {"lora_adamw", "adamw", 1, false, Rounding::Stochastic, "fp32"},
    {"lora_int8_lion_accum2", "lion", 2, false, Rounding::Stochastic, "int8"},
};

INSTANTIATE_TEST_SUITE_P(Methods, Resume, testing::Combine(testing::ValuesIn(kMethods), testing::Bool()),
                         [](const auto& info) {
                           return std::string(std::get<0>(info.param).name) + (std::get<1>(info.param) ? "_qwen2_tied" : "_llama");
                         });

// A trained QLion object and its checkpoint, for the failure cases.
struct Saved {
  Model model{false};
  Method method{"qlion", "qlion"};
  TrainingSettings settings = settings_for(method);
  ModelSource source = ModelSource::random(model.config, 3);
  TempDir dir;
  std::string path = dir.file("ckpt");

  Saved() {
    auto training = make_training(source, settings);
    run_step(*training, model, method, 1);
    training->save_checkpoint(path);
  }
  std::string load_error(const TrainingSettings& other) const {
    return error_of([&] { make_training(source, other)->load_checkpoint(path); });
  }
  // Through one object: a failed load may leave it half-restored, which
  // does not matter for the error it reports.
  std::string load_error() {
    if (!loader) loader = make_training(source, settings);
    return error_of([&] { loader->load_checkpoint(path); });
  }
  std::unique_ptr<Training> loader;
};

TEST(CheckpointErrors, TruncatedStateFileIsNamed) {
  Saved saved;
  const std::string state = saved.path + "/state.safetensors";
  const std::string bytes = read_bytes(state);
  for (size_t length : {size_t{0}, size_t{5}, bytes.size() / 3, bytes.size() - 1}) {
    write_bytes(state, bytes.substr(0, length));
    const std::string error = saved.load_error();
    EXPECT_MENTIONS(error, state);
    EXPECT_MENTIONS(error, "truncated");
  }
  // Truncated with the manifest's size edited to match: the file's own structure says so.
  write_bytes(state, bytes.substr(0, bytes.size() - 100));
  auto manifest = nlohmann::json::parse(read_bytes(saved.path + "/manifest.json"));
  manifest["state"]["bytes"] = bytes.size() - 100;
  write_bytes(saved.path + "/manifest.json", manifest.dump());
  const std::string error = saved.load_error();
  EXPECT_MENTIONS(error, state);
  EXPECT_MENTIONS(error, "truncated");
}

TEST(CheckpointErrors, EveryCorruptedByteIsCaught) {
  Saved saved;
  const std::string state = saved.path + "/state.safetensors";
  const std::string bytes = read_bytes(state);
  // Header, first tensors, and a spread over the data.
  std::vector<size_t> positions;
  for (size_t i = 0; i < 600; i += 7) positions.push_back(i);
  for (size_t i = 600; i < bytes.size(); i += bytes.size() / 97) positions.push_back(i);
  positions.push_back(bytes.size() - 1);
  for (size_t position : positions) {
    std::string damaged = bytes;
    damaged[position] ^= 0x5a;
    write_bytes(state, damaged);
    const std::string error = saved.load_error();
    EXPECT_MENTIONS(error, state) << "byte " << position;
  }
  std::string damaged = bytes;
  damaged[bytes.size() - 2] ^= 1;
  write_bytes(state, damaged);
  EXPECT_MENTIONS(saved.load_error(), "checksum");
  EXPECT_MENTIONS(saved.load_error(), "lm_head.weight");  // the last tensors written
}

TEST(CheckpointErrors, ManifestProblemsAreNamed) {
  Saved saved;
  const std::string manifest_path = saved.path + "/manifest.json";
  const std::string manifest = read_bytes(manifest_path);
  write_bytes(manifest_path, manifest.substr(0, manifest.size() / 2));
  EXPECT_MENTIONS(saved.load_error(), manifest_path);
  write_bytes(manifest_path, "[1, 2]");
  EXPECT_MENTIONS(saved.load_error(), manifest_path);
  auto json = nlohmann::json::parse(manifest);
  json["version"] = 2;
  write_bytes(manifest_path, json.dump());
  EXPECT_MENTIONS(saved.load_error(), "version 2");
  json = nlohmann::json::parse(manifest);
  json["state"]["checksums"].erase("lm_head.weight.codes");
  write_bytes(manifest_path, json.dump());
  EXPECT_MENTIONS(saved.load_error(), "lm_head.weight.codes");
  json = nlohmann::json::parse(manifest);
  json["state"]["checksums"]["lm_head.weight.codes"] = "0123456789abcdef";
  write_bytes(manifest_path, json.dump());
  EXPECT_MENTIONS(saved.load_error(), "checksum");
  fs::remove(manifest_path);
  EXPECT_MENTIONS(saved.load_error(), manifest_path);
  EXPECT_MENTIONS(error_of([&] { make_training(saved.source, saved.settings)->load_checkpoint(saved.dir.file("none")); }),
                  "no checkpoint");
}

TEST(CheckpointErrors, OtherSettingsOrModelAreRefused) {
  Saved saved;
  TrainingSettings other = saved.settings;
  other.hyper.weight_decay = 0.5f;
  EXPECT_MENTIONS(saved.load_error(other), "weight_decay");
  other = saved.settings;
  other.seed = 8;
  EXPECT_MENTIONS(saved.load_error(other), "seed");
  other = saved.settings;
  other.optimizer = OptimizerKind::Lion;
  EXPECT_MENTIONS(saved.load_error(other), "optimizer");
  other = saved.settings;
  other.qft.momentum_bits = 4;  // an 8-bit checkpoint names no width; the error names both
  EXPECT_MENTIONS(saved.load_error(other), "momentum_bits = 8, this run has 4");
  other = saved.settings;
  other.checkpointing = true;  // recomputation changes nothing
  EXPECT_EQ(saved.load_error(other), "");

  const Model wider(true);
  const std::string error =
      error_of([&] { make_training(ModelSource::random(wider.config, 3), saved.settings)->load_checkpoint(saved.path); });
  EXPECT_MENTIONS(error, "model config");
  EXPECT_MENTIONS(error, saved.path + "/manifest.json");
}

// A failure while writing (here: an injected error) leaves the previous
// checkpoint in place and no temporary directory behind.
TEST(CheckpointWrite, FailureKeepsThePreviousCheckpoint) {
  Saved saved;
  const std::string before = read_bytes(saved.path + "/state.safetensors");
  auto training = make_training(saved.source, saved.settings);
  training->load_checkpoint(saved.path);
  run_step(*training, saved.model, saved.method, 2);
  for (const char* stage : {"tensor", "state", "manifest"}) {
    set_checkpoint_write_hook([&](const std::string& reached) {
      if (reached == stage) fail("injected failure at ", stage);
    });
    EXPECT_MENTIONS(error_of([&] { training->save_checkpoint(saved.path); }), "injected");
    set_checkpoint_write_hook({});
    EXPECT_FALSE(fs::exists(saved.path + ".tmp")) << stage;
    EXPECT_TRUE(read_bytes(saved.path + "/state.safetensors") == before) << stage;
    EXPECT_EQ(make_training(saved.source, saved.settings)->load_checkpoint(saved.path).step, 1);
  }
}

TEST(CheckpointWrite, NeverReplacesADirectoryThatIsNotACheckpoint) {
  Saved saved;
  auto training = make_training(saved.source, saved.settings);
  TempDir other;
  test::write_text(other.file("precious.txt"), "keep me");
  EXPECT_MENTIONS(error_of([&] { training->save_checkpoint(other.path()); }), "not a qft checkpoint");
  EXPECT_EQ(test::read_text(other.file("precious.txt")), "keep me");
  fs::create_directory(saved.path + ".old");
  test::write_text(saved.path + ".old/precious.txt", "keep me");
  EXPECT_MENTIONS(error_of([&] { training->save_checkpoint(saved.path); }), "not a qft checkpoint");
  EXPECT_EQ(test::read_text(saved.path + ".old/precious.txt"), "keep me");
  EXPECT_EQ(make_training(saved.source, saved.settings)->load_checkpoint(saved.path).step, 1);
  // An empty directory is fine to fill.
  fs::create_directory(other.file("empty"));
  training->save_checkpoint(other.file("empty"));
  EXPECT_EQ(make_training(saved.source, saved.settings)->load_checkpoint(other.file("empty")).step, 0);
}

// The child half of the next test: resumes the checkpoint in
// $QFT_CHECKPOINT_CHILD_DIR, takes step 2 and dies by SIGKILL at stage
// $QFT_CHECKPOINT_CHILD_STAGE of writing it.
TEST(CheckpointWriteChild, DiesWhileWriting) {
  const char* directory = std::getenv("QFT_CHECKPOINT_CHILD_DIR");
  const char* stage = std::getenv("QFT_CHECKPOINT_CHILD_STAGE");
  if (!directory || !stage) GTEST_SKIP() << "run by CheckpointWrite.KilledWriterLeavesALoadableCheckpoint";
  const Model model(false);
  const Method method{"qlion", "qlion"};
  auto training = make_training(ModelSource::random(model.config, 3), settings_for(method));
  training->load_checkpoint(directory);
  run_step(*training, model, method, 2);
  int tensors = 0;
  set_checkpoint_write_hook([&](const std::string& reached) {
    // Half-way through the state file, or at a named stage.
    if ((reached == "tensor" && std::string(stage) == "tensor" && ++tensors == 20) || reached == stage) raise(SIGKILL);
  });
  training->save_checkpoint(directory);
  FAIL() << "not killed at " << stage;
}

// A real SIGKILL at each stage of a write: DIR (or DIR.old) still loads, as
// the old checkpoint before the new one is renamed into place and as the
// new one after; the next write cleans up.
TEST(CheckpointWrite, KilledWriterLeavesALoadableCheckpoint) {
  Saved saved;
  TempDir scratch;
  const std::string step1 = read_bytes(saved.path + "/state.safetensors");
  std::string step2;
  {
    auto training = make_training(saved.source, saved.settings);
    training->load_checkpoint(saved.path);
    run_step(*training, saved.model, saved.method, 2);
    training->save_checkpoint(scratch.file("step2"));
    step2 = read_bytes(scratch.file("step2/state.safetensors"));
  }
  ASSERT_NE(step1, step2);
  const std::string original = scratch.file("original");
  fs::copy(saved.path, original);
  for (const std::string stage : {"tensor", "state", "manifest", "moved-aside", "renamed", "done"}) {
    fs::remove_all(saved.path);
    fs::remove_all(saved.path + ".tmp");
    fs::remove_all(saved.path + ".old");
    fs::copy(original, saved.path);
    const pid_t pid = test::spawn({"/proc/self/exe", "--gtest_filter=CheckpointWriteChild.DiesWhileWriting"},
                            {"QFT_CHECKPOINT_CHILD_DIR=" + saved.path, "QFT_CHECKPOINT_CHILD_STAGE=" + stage},
                            scratch.file("child.log"));
    ASSERT_GT(pid, 0);
    const int status = test::wait_status(pid);
    ASSERT_TRUE(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL) << stage << ": " << read_bytes(scratch.file("child.log"));

    auto training = make_training(saved.source, saved.settings);
    const ResumePoint resume = training->load_checkpoint(saved.path);
    const bool renamed = stage == "renamed" || stage == "done";
    EXPECT_EQ(resume.step, renamed ? 2 : 1) << stage;
    EXPECT_EQ(resume.directory, stage == "moved-aside" ? saved.path + ".old" : saved.path) << stage;
    training->save_checkpoint(scratch.file("reloaded"));
    EXPECT_TRUE(read_bytes(scratch.file("reloaded/state.safetensors")) == (renamed ? step2 : step1)) << stage;
    fs::remove_all(scratch.file("reloaded"));
    // Writing again leaves exactly DIR.
    training->save_checkpoint(saved.path);
    EXPECT_FALSE(fs::exists(saved.path + ".tmp")) << stage;
    EXPECT_FALSE(fs::exists(saved.path + ".old")) << stage;
    EXPECT_EQ(make_training(saved.source, saved.settings)->load_checkpoint(saved.path).step, renamed ? 2 : 1);
  }
}

// ---- qft train: --checkpoint, --save-every, --resume, SIGINT/SIGTERM ----

struct CliRun {
  int exit_code = 0;
  std::vector<double> losses;  // by step, from the JSON lines
  std::map<int, double> loss_at;
  nlohmann::json interrupted;
  std::string output;
};

CliRun parse_run(int exit_code, const std::string& output) {
  CliRun run{exit_code, {}, {}, nullptr, output};
  std::istringstream lines(output);
  std::string line;
  while (std::getline(lines, line)) {
    // A line still being written while the run goes on is skipped.
    const auto record = nlohmann::json::parse(line, nullptr, false);
    if (!record.is_object()) continue;
    if (record.contains("step") && record.contains("loss")) {
      run.loss_at[record.at("step").get<int>()] = record.at("loss").get<double>();
    }
    if (record.contains("interrupted")) run.interrupted = record;
  }
  return run;
}

struct CliTask {
  Model model{false};
  TempDir dir;
  std::string tokens = dir.file("tokens.txt");

  CliTask() {
    std::string text;
    for (const TokenSequence& line : model.lines) {
      for (size_t i = 0; i < line.size(); ++i) {
        if (i) text += ' ';
        text += std::to_string(line[i]);
      }
      text += "\n";
    }
    test::write_text(tokens, text);
  }
  std::string command(const std::string& options) const {
    return kQft + " train --config " + model.config + " --init random --seed 5 --tokens " + tokens +
           " --batch 4 --lr 2e-3 --weight-decay 0.01 --json --threads 2 " + options;
  }
  CliRun run(const std::string& options) const {
    const auto result = test::run_command(command(options));
    return parse_run(result.exit_code, result.output);
  }
};

// Resuming in a fresh process: 6 steps + checkpoint, then --resume to 12,
// against 12 straight. 24 lines at --batch 4: without accumulation the
// checkpoint sits exactly at the end of an epoch (the wrap comes first thing
// after resuming); with 2 micro-batches epochs end on both sides of it.
class CliResume : public testing::TestWithParam<const char*> {};

TEST_P(CliResume, MatchesAnUninterruptedRun) {
  const CliTask task;
  const std::string options = GetParam();
  const CliRun straight = task.run(options + " --steps 12 --out " + task.dir.file("straight"));
  ASSERT_EQ(straight.exit_code, 0) << straight.output;
  const CliRun first = task.run(options + " --steps 6 --save-every 4 --checkpoint " + task.dir.file("ckpt"));
  ASSERT_EQ(first.exit_code, 0) << first.output;
  const auto manifest = nlohmann::json::parse(read_bytes(task.dir.file("ckpt/manifest.json")));
  EXPECT_EQ(manifest.at("step"), 6);  // the final checkpoint replaced the periodic one
  const CliRun second = task.run(options + " --steps 12 --resume " + task.dir.file("ckpt") + " --out " + task.dir.file("resumed"));
  ASSERT_EQ(second.exit_code, 0) << second.output;
  ASSERT_EQ(second.loss_at.size(), 6u) << second.output;
  for (int step = 1; step <= 12; ++step) {
    const CliRun& run = step <= 6 ? first : second;
    ASSERT_TRUE(run.loss_at.count(step)) << step;
    EXPECT_EQ(run.loss_at.at(step), straight.loss_at.at(step)) << "step " << step;
  }
  EXPECT_TRUE(read_bytes(task.dir.file("straight/model.safetensors")) == read_bytes(task.dir.file("resumed/model.safetensors")));
}

INSTANTIATE_TEST_SUITE_P(Methods, CliResume,
                         testing::Values("--optimizer qlion", "--optimizer qlion --grad-accum 2", "--optimizer lion",
                                         "--optimizer adamw", "--optimizer adamw8bit", "--optimizer mixed-adamw",
                                         "--optimizer qlion --compute bf16", "--optimizer adamw --compute bf16"),
                         [](const auto& info) {
                           std::string name = info.param;
                           for (char& c : name) c = std::isalnum(static_cast<unsigned char>(c)) ? c : '_';
                           return name;
                         });

TEST(CliCheckpoint, ResumeRefusesOtherDataOrBatch) {
  const CliTask task;
  ASSERT_EQ(task.run("--steps 2 --checkpoint " + task.dir.file("ckpt")).exit_code, 0);
  const auto batch = test::run_command(task.command("--steps 4 --resume " + task.dir.file("ckpt")) + " --batch 2");
  EXPECT_NE(batch.exit_code, 0);
  EXPECT_MENTIONS(batch.output, "--batch 4");
  const auto decay = test::run_command(task.command("--steps 4 --resume " + task.dir.file("ckpt")) + " --weight-decay 0.1");
  EXPECT_NE(decay.exit_code, 0);
  EXPECT_MENTIONS(decay.output, "weight_decay");
  test::write_text(task.tokens, "1 2 3 4\n");
  const auto data = test::run_command(task.command("--steps 4 --resume " + task.dir.file("ckpt")));
  EXPECT_NE(data.exit_code, 0);
  EXPECT_MENTIONS(data.output, "--tokens");
  const auto lonely = test::run_command(task.command("--steps 4 --save-every 2"));
  EXPECT_NE(lonely.exit_code, 0);
  EXPECT_MENTIONS(lonely.output, "--checkpoint");
}

// Starts qft train for very many steps, waits for `steps_first` steps, sends
// `signal`; returns the exit status and output.
CliRun interrupt(const CliTask& task, const std::string& options, int signal, int steps_first) {
  std::vector<std::string> arguments = {kQft};
  std::istringstream words(task.command(options).substr(kQft.size()));
  for (std::string word; words >> word;) arguments.push_back(word);
  const std::string log = task.dir.file("interrupted.log");
  const pid_t pid = test::spawn(arguments, {}, log);
  if (pid <= 0) return {};
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(120);
  while (parse_run(0, read_bytes(log)).loss_at.size() < static_cast<size_t>(steps_first) &&
         std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  kill(pid, signal);
  const int status = test::wait_status(pid);
  return parse_run(WIFEXITED(status) ? WEXITSTATUS(status) : -WTERMSIG(status), read_bytes(log));
}

TEST(CliSignals, SigintFinishesTheStepSavesAndResumesToTheSameLosses) {
  const CliTask task;
  const std::string checkpoint = task.dir.file("ckpt");
  const CliRun stopped = interrupt(task, "--steps 1000000 --checkpoint " + checkpoint, SIGINT, 3);
  ASSERT_EQ(stopped.exit_code, 130) << stopped.output;
  ASSERT_TRUE(stopped.interrupted.is_object()) << stopped.output;
  EXPECT_EQ(stopped.interrupted.at("signal"), "SIGINT");
  const int last = stopped.interrupted.at("step").get<int>();
  EXPECT_EQ(stopped.loss_at.rbegin()->first, last);  // the step in flight was finished
  ASSERT_TRUE(fs::exists(checkpoint + "/manifest.json")) << stopped.output;
  EXPECT_EQ(nlohmann::json::parse(read_bytes(checkpoint + "/manifest.json")).at("step"), last);

  const int total = last + 4;
  const CliRun straight = task.run("--steps " + std::to_string(total) + " --out " + task.dir.file("straight"));
  ASSERT_EQ(straight.exit_code, 0) << straight.output;
  const CliRun resumed = task.run("--steps " + std::to_string(total) + " --resume " + checkpoint + " --out " + task.dir.file("resumed"));
  ASSERT_EQ(resumed.exit_code, 0) << resumed.output;
  for (int step = 1; step <= total; ++step) {
    const CliRun& run = step <= last ? stopped : resumed;
    ASSERT_TRUE(run.loss_at.count(step)) << step;
    EXPECT_EQ(run.loss_at.at(step), straight.loss_at.at(step)) << "step " << step;
  }
  EXPECT_TRUE(read_bytes(task.dir.file("straight/model.safetensors")) == read_bytes(task.dir.file("resumed/model.safetensors")));
}

TEST(CliSignals, SigtermExits143WithACheckpoint) {
  const CliTask task;
  const CliRun stopped = interrupt(task, "--optimizer adamw --steps 1000000 --checkpoint " + task.dir.file("ckpt"), SIGTERM, 2);
  ASSERT_EQ(stopped.exit_code, 143) << stopped.output;
  ASSERT_TRUE(stopped.interrupted.is_object() && fs::exists(task.dir.file("ckpt/manifest.json"))) << stopped.output;
  EXPECT_EQ(stopped.interrupted.at("signal"), "SIGTERM");
  EXPECT_EQ(nlohmann::json::parse(read_bytes(task.dir.file("ckpt/manifest.json"))).at("step"), stopped.interrupted.at("step"));
  // Without --checkpoint: still a clean stop after the step, nothing written.
  const CliRun bare = interrupt(task, "--steps 1000000", SIGINT, 1);
  EXPECT_EQ(bare.exit_code, 130) << bare.output;
  EXPECT_MENTIONS(bare.output, "nothing saved");
}

// SIGKILL at arbitrary moments of a run that checkpoints every step: the
// checkpoint directory always resumes.
TEST(CliSignals, KillAtAnyMomentLeavesAResumableCheckpoint) {
  const CliTask task;
  const std::string checkpoint = task.dir.file("ckpt");
  for (int attempt = 0; attempt < 6; ++attempt) {
    const CliRun killed = interrupt(task, "--steps 1000000 --save-every 1 --checkpoint " + checkpoint, SIGKILL, 2 + attempt);
    ASSERT_EQ(killed.exit_code, -SIGKILL) << killed.output;
    // The checkpoint holds the last printed step, or the one before when
    // the kill came while it was being written.
    const int last = killed.loss_at.rbegin()->first;
    const CliRun resumed = task.run("--steps " + std::to_string(last + 1) + " --resume " + checkpoint);
    ASSERT_EQ(resumed.exit_code, 0) << resumed.output;
    ASSERT_FALSE(resumed.loss_at.empty()) << resumed.output;
    EXPECT_EQ(resumed.loss_at.rbegin()->first, last + 1);
    EXPECT_GE(resumed.loss_at.begin()->first, last) << "attempt " << attempt;
    for (const auto& [step, loss] : resumed.loss_at) {
      if (step <= last) {
        EXPECT_EQ(loss, killed.loss_at.at(step)) << step;
      }
    }
  }
}

}  // namespace
}  // namespace qft
