// qft finetune end to end on a tiny model with SmolLM2's tokenizer and chat
// template: it trains and exports; a run resumed from a checkpoint gives the
// losses, evaluations and exported model of an uninterrupted one bit for bit
// (mid-epoch, at an epoch's end, with accumulation, packed); SIGINT/SIGTERM
// finish the step, checkpoint and exit 130/143; resuming refuses other data.
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>

#include <chrono>
#include <cmath>
#include <filesystem>
#include <map>
#include <sstream>
#include <thread>

#include <nlohmann/json.hpp>

#include "core/error.h"
#include "io/recipe.h"
#include "model/weights.h"
#include "chat_task.h"
#include "test_util.h"
#include "report/loss_plot.h"
#include "train/finetune.h"
#include "train/nonfinite.h"
#include "train/training.h"

namespace qft {
namespace {

namespace fs = std::filesystem;
using test::TempDir;

const std::string kQft = QFT_BINARY;

#define EXPECT_MENTIONS(text, part) EXPECT_NE((text).find(part), std::string::npos) << (text)

// An HF directory: a 2-layer LLaMA at SmolLM2's vocabulary with random
// weights, SmolLM2's tokenizer.json and ChatML template; 20 Alpaca records.
struct Task {
  TempDir dir;
  std::string model = dir.file("model"), data = dir.file("data.json");

  Task() {
    test::write_tiny_chat_model(model, dir.file("config.json"));
    test::write_alpaca_records(data, 20);
  }

  std::string command(const std::string& out, const std::string& options) const {
    return kQft + " finetune --model " + model + " --data " + data + " --out " + dir.file(out) +
           " --seq-len 96 --batch 2 --lr 1e-3 --seed 3 --eval-split 0.2 --eval-every 3 --threads 2 " +
           "--log-every 1 " + options;
  }
};

struct Metrics {
  std::map<int, double> loss, eval_loss;
};

Metrics read_metrics(const std::string& out) {
  Metrics metrics;
  std::istringstream lines(test::read_text(out + "/metrics.jsonl"));
  for (std::string line; std::getline(lines, line);) {
    const auto record = nlohmann::json::parse(line);
    const int step = record.at("step").get<int>();
    if (record.contains("loss")) metrics.loss[step] = record.at("loss").get<double>();
    if (record.contains("eval_loss")) metrics.eval_loss[step] = record.at("eval_loss").get<double>();
  }
  return metrics;
}

void expect_same_run(const std::string& got, const std::string& want) {
  const Metrics a = read_metrics(got), b = read_metrics(want);
  EXPECT_EQ(a.loss, b.loss);
  EXPECT_EQ(a.eval_loss, b.eval_loss);
  EXPECT_TRUE(test::read_text(got + "/model/model.safetensors") == test::read_text(want + "/model/model.safetensors"))
      << got << " and " << want << " exported different weights";
}

struct ResumeCase {
  const char* name;
  std::string options;
  int save_every;  // 0: the steps of an epoch, so the checkpoint sits at an epoch's end
};

void PrintTo(const ResumeCase& c, std::ostream* out) { *out << c.name; }

int steps_per_epoch(const std::string& output) {
  const size_t end = output.find(" per epoch)");
  if (end == std::string::npos) return 0;
  return std::stoi(output.substr(output.rfind('(', end) + 1));
}

class FinetuneResume : public testing::TestWithParam<ResumeCase> {};

// 12 steps straight (over more than one epoch) vs. a run that checkpointed
// every `save_every` steps, resumed from its last checkpoint into another --out.
// A record the chat template refuses (Gemma-2's raise_exception on a system
// turn) is skipped with its file, line and the template's message, or stops
// the run under --strict.
TEST(FinetuneChatTemplate, ATemplatesRefusalSkipsTheRecordOrStopsUnderStrict) {
  Task task;
  const std::string data = task.dir.file("chat.jsonl");
  std::string lines;
  for (int i = 0; i < 6; ++i) {
    const std::string system = i == 2 ? R"({"role": "system", "content": "Be brief."}, )" : "";
    lines += R"({"messages": [)" + system + R"({"role": "user", "content": "Count to )" + std::to_string(i) +
             R"(."}, {"role": "assistant", "content": "Done, )" + std::to_string(i) + R"(."}]})" + "\n";
  }
  test::write_text(data, lines);
  const std::string command = kQft + " finetune --model " + task.model + " --data " + data + " --chat-template " +
                              std::string(QFT_SOURCE_DIR) + "/tests/data/chat_templates/gemma-2-it.jinja" +
                              " --seq-len 64 --max-steps 1 --threads 2 --out ";
  const auto skipped = test::run_command(command + task.dir.file("out") + " 2>&1");
  EXPECT_EQ(skipped.exit_code, 0) << skipped.output;
  EXPECT_NE(skipped.output.find("skipped " + data + ":3: System role not supported"), std::string::npos) << skipped.output;
  const auto strict = test::run_command(command + task.dir.file("strict") + " --strict 2>&1");
  EXPECT_NE(strict.exit_code, 0);
  EXPECT_NE(strict.output.find(data + ":3: System role not supported"), std::string::npos) << strict.output;
  EXPECT_FALSE(std::filesystem::exists(task.dir.file("strict") + "/model"));
}

TEST_P(FinetuneResume, MatchesAnUninterruptedRun) {
  const Task task;
  const ResumeCase& c = GetParam();
  const auto straight = test::run_command(task.command("straight", "--max-steps 12 --export-dtype f32 " + c.options));
  ASSERT_EQ(straight.exit_code, 0) << straight.output;
  const auto result = nlohmann::json::parse(straight.output.substr(straight.output.rfind("\n{") + 1));
  EXPECT_EQ(result.at("steps"), 12);
  EXPECT_LT(result.at("eval_loss_after").get<double>(), result.at("eval_loss_before").get<double>());
  for (const char* file : {"config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json"}) {
    EXPECT_TRUE(fs::exists(task.dir.file("straight/model/") + file)) << file;
  }
  EXPECT_TRUE(fs::exists(task.dir.file("straight/loss.svg")));
  const Metrics metrics = read_metrics(task.dir.file("straight"));
  EXPECT_EQ(metrics.loss.size(), 12u);
  EXPECT_EQ(metrics.eval_loss.size(), 5u);  // before, after steps 3, 6 and 9, after the last
  const int epoch = steps_per_epoch(straight.output);
  ASSERT_TRUE(epoch > 1 && epoch < 12) << straight.output;

  const int save_every = c.save_every ? c.save_every : epoch;
  const std::string every = " --save-every " + std::to_string(save_every);
  const auto saving = test::run_command(task.command("saving", "--max-steps 12 --export-dtype f32 " + c.options + every));
  ASSERT_EQ(saving.exit_code, 0) << saving.output;
  expect_same_run(task.dir.file("saving"), task.dir.file("straight"));
  const std::string checkpoint = task.dir.file("saving/checkpoint");
  const int saved_at = 12 / save_every * save_every;
  ASSERT_EQ(nlohmann::json::parse(test::read_text(checkpoint + "/manifest.json")).at("step"), saved_at);

  const auto resumed = test::run_command(
      task.command("resumed", "--max-steps 12 --export-dtype f32 " + c.options + " --resume " + checkpoint));
  ASSERT_EQ(resumed.exit_code, 0) << resumed.output;
  EXPECT_MENTIONS(resumed.output, "after step " + std::to_string(saved_at));
  EXPECT_EQ(resumed.output.find("notice"), std::string::npos) << resumed.output;
  expect_same_run(task.dir.file("resumed"), task.dir.file("straight"));
}

INSTANTIATE_TEST_SUITE_P(
    Settings, FinetuneResume,
    testing::Values(ResumeCase{"QLionMidEpoch", "", 5},
                    ResumeCase{"QLionAtAnEpochsEnd", "", 0},
                    ResumeCase{"QLionAccumulating", "--grad-accum 2", 5},
                    ResumeCase{"AdamWPacked", "--optimizer adamw --pack", 5},
                    ResumeCase{"LoraInt8BaseMidEpoch", "--method lora --lora-base int8 --lora-rank 4", 5}),
    [](const auto& info) { return std::string(info.param.name); });

// --export-lora: the merged model, the PEFT adapter, or both; refused without LoRA.
TEST(FinetuneLora, ExportsTheMergedModelTheAdapterOrBoth) {
  const Task task;
  const auto both = test::run_command(task.command("both", "--max-steps 2 --method lora --export-lora both"));
  ASSERT_EQ(both.exit_code, 0) << both.output;
  EXPECT_MENTIONS(both.output, "LoRA r=8 FP32 base + adamw");
  for (const char* file : {"adapter/adapter_config.json", "adapter/adapter_model.safetensors", "model/model.safetensors"}) {
    EXPECT_TRUE(fs::exists(task.dir.file("both/") + file)) << file;
  }
  const auto config = nlohmann::json::parse(test::read_text(task.dir.file("both/adapter/adapter_config.json")));
  EXPECT_EQ(config.at("peft_type"), "LORA");
  EXPECT_EQ(config.at("r"), 8);
  EXPECT_EQ(config.at("base_model_name_or_path"), fs::absolute(task.model).lexically_normal().string());
  const auto result = nlohmann::json::parse(both.output.substr(both.output.rfind("\n{") + 1));
  EXPECT_EQ(result.at("adapter"), task.dir.file("both/adapter"));

  const auto adapter = test::run_command(task.command("adapter", "--max-steps 2 --method lora --export-lora adapter"));
  ASSERT_EQ(adapter.exit_code, 0) << adapter.output;
  EXPECT_TRUE(fs::exists(task.dir.file("adapter/adapter/adapter_model.safetensors")));
  EXPECT_FALSE(fs::exists(task.dir.file("adapter/model")));
  EXPECT_TRUE(test::read_text(task.dir.file("adapter/adapter/adapter_model.safetensors")) ==
              test::read_text(task.dir.file("both/adapter/adapter_model.safetensors")));

  for (const std::string& bad : {std::string("--export-lora adapter"), std::string("--method lora --export-lora half"),
                                 std::string("--lora-rank 4"), std::string("--method lora --optimizer qlion")}) {
    const auto refused = test::run_command(task.command("refused", "--max-steps 2 " + bad));
    EXPECT_EQ(refused.exit_code, 1) << bad << ": " << refused.output;
    EXPECT_FALSE(fs::exists(task.dir.file("refused"))) << bad;
  }
}

// Waits until `log` shows `wanted` (or two minutes pass).
bool wait_for(const std::string& log, const std::string& wanted) {
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(120);
  while (test::read_text(log).find(wanted) == std::string::npos) {
    if (std::chrono::steady_clock::now() > deadline) return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  return true;
}

// Starts Task::command(out, options) in the background, its output into `log`.
pid_t start_run(const Task& task, const std::string& out, const std::string& options, const std::string& log) {
  std::vector<std::string> arguments;
  std::istringstream words(task.command(out, options));
  for (std::string word; words >> word;) arguments.push_back(word);
  return test::spawn(arguments, {}, log);
}

// Starts a long run, waits until `steps` steps are logged, sends `signal`.
test::CommandResult interrupt(const Task& task, const std::string& out, int signal, int steps) {
  const std::string log = task.dir.file(out + ".log");
  const pid_t pid = start_run(task, out, "--max-steps 100000 --warmup-ratio 0 --min-lr-ratio 1", log);
  if (pid <= 0) return {-1, "spawn failed"};
  wait_for(log, "step " + std::to_string(steps) + "/");
  kill(pid, signal);
  const int status = test::wait_status(pid);
  return {WIFEXITED(status) ? WEXITSTATUS(status) : -WTERMSIG(status), test::read_text(log)};
}

// A constant learning rate, so a run of any length has the interrupted
// run's schedule; the resumed run notices the longer one and goes on.
TEST(FinetuneSignals, SigintFinishesTheStepSavesAndResumesToTheSameRun) {
  const Task task;
  const auto stopped = interrupt(task, "stopped", SIGINT, 3);
  ASSERT_EQ(stopped.exit_code, 130) << stopped.output;
  const auto report = nlohmann::json::parse(stopped.output.substr(stopped.output.rfind("\n{") + 1));
  EXPECT_EQ(report.at("signal"), "SIGINT");
  const int last = report.at("step").get<int>();
  const std::string checkpoint = task.dir.file("stopped/checkpoint");
  EXPECT_EQ(report.at("checkpoint"), checkpoint);
  EXPECT_EQ(read_metrics(task.dir.file("stopped")).loss.rbegin()->first, last);  // the step in flight was finished
  EXPECT_EQ(nlohmann::json::parse(test::read_text(checkpoint + "/manifest.json")).at("step"), last);
  EXPECT_FALSE(fs::exists(task.dir.file("stopped/model")));

  const std::string total = " --max-steps " + std::to_string(last + 4) + " --warmup-ratio 0 --min-lr-ratio 1";
  const auto straight = test::run_command(task.command("straight", total));
  ASSERT_EQ(straight.exit_code, 0) << straight.output;
  const auto resumed = test::run_command(task.command("stopped", total + " --resume " + checkpoint));
  ASSERT_EQ(resumed.exit_code, 0) << resumed.output;
  EXPECT_MENTIONS(resumed.output, "notice: the learning-rate schedule differs");
  expect_same_run(task.dir.file("stopped"), task.dir.file("straight"));
}

TEST(FinetuneSignals, SigtermExits143WithACheckpoint) {
  const Task task;
  const auto stopped = interrupt(task, "stopped", SIGTERM, 2);
  ASSERT_EQ(stopped.exit_code, 143) << stopped.output;
  EXPECT_MENTIONS(stopped.output, "SIGTERM after step");
  EXPECT_TRUE(fs::exists(task.dir.file("stopped/checkpoint/manifest.json")));
}

TEST(FinetuneResumeErrors, OtherDataOrSettingsAreRefused) {
  const Task task;
  ASSERT_EQ(test::run_command(task.command("first", "--max-steps 2 --save-every 2")).exit_code, 0);
  const std::string resume = " --max-steps 4 --resume " + task.dir.file("first/checkpoint");
  const auto batch = test::run_command(task.command("batch", resume + " --batch 4"));
  EXPECT_NE(batch.exit_code, 0);
  EXPECT_MENTIONS(batch.output, "data setting batch = 2, this run has 4");
  const auto optimizer = test::run_command(task.command("optimizer", resume + " --optimizer lion"));
  EXPECT_NE(optimizer.exit_code, 0);
  EXPECT_MENTIONS(optimizer.output, "optimizer");
  const auto prompt = test::run_command(task.command("prompt", resume + " --train-on-prompt"));
  EXPECT_NE(prompt.exit_code, 0);
  EXPECT_MENTIONS(prompt.output, "data setting examples");
  const auto missing = test::run_command(task.command("missing", " --resume " + task.dir.file("nowhere")));
  EXPECT_NE(missing.exit_code, 0);
  EXPECT_MENTIONS(missing.output, task.dir.file("nowhere"));
  EXPECT_FALSE(fs::exists(task.dir.file("missing/model")));
}

// ------------------------------------------------------------------ recipes ---

// A recipe with the options of Task::command but other --optimizer and
// --max-steps, which the command line overrides.
std::string write_recipe(const Task& task, const std::string& name) {
  const std::string path = task.dir.file(name);
  test::write_text(path, "# Task::command as a recipe\nmodel: " + task.model + "\ndata: " + task.data +
                             "\nseq-len: 96\nbatch: 2\nlr: 1e-3\nseed: 3\neval-split: 0.2\neval-every: 3\n"
                             "threads: 2\nlog-every: 1\npack: false\noptimizer: lion  # overridden\nmax-steps: 9\n");
  return path;
}

std::map<std::string, std::string> recipe_values(const std::string& path) {
  std::map<std::string, std::string> values;
  for (const RecipeEntry& entry : read_recipe(path).entries) values[entry.key] = entry.value;
  return values;
}

TEST(FinetuneRecipe, FileSetsOptionsTheCommandLineOverridesAndSettingsRepeatTheRun) {
  const Task task;
  const std::string recipe = write_recipe(task, "recipe.yaml");
  const auto from_recipe = test::run_command(kQft + " finetune --config " + recipe + " --out " + task.dir.file("a") +
                                             " --optimizer qlion --max-steps 4");
  ASSERT_EQ(from_recipe.exit_code, 0) << from_recipe.output;
  const auto from_options = test::run_command(task.command("b", "--max-steps 4"));
  ASSERT_EQ(from_options.exit_code, 0) << from_options.output;
  expect_same_run(task.dir.file("a"), task.dir.file("b"));

  const auto settings = recipe_values(task.dir.file("a/settings.yaml"));
  EXPECT_EQ(settings.at("optimizer"), "qlion");
  EXPECT_EQ(settings.at("max-steps"), "4");
  EXPECT_EQ(settings.at("lr"), "1e-3");
  EXPECT_EQ(settings.at("model"), task.model);
  EXPECT_EQ(settings.at("out"), task.dir.file("a"));
  EXPECT_EQ(settings.at("pack"), "false");
  EXPECT_EQ(settings.at("warmup-ratio"), "0.03");  // defaults are written too
  EXPECT_EQ(settings.count("config"), 0u);
  EXPECT_EQ(settings.count("help"), 0u);
  auto from_options_settings = recipe_values(task.dir.file("b/settings.yaml")), without_out = settings;
  from_options_settings.erase("out"), without_out.erase("out");
  EXPECT_EQ(from_options_settings, without_out);  // the same resolved settings, however they were given

  const auto repeated = test::run_command(kQft + " finetune --config " + task.dir.file("a/settings.yaml") + " --out " +
                                          task.dir.file("c"));
  ASSERT_EQ(repeated.exit_code, 0) << repeated.output;
  expect_same_run(task.dir.file("c"), task.dir.file("a"));
}

TEST(FinetuneRecipe, ErrorsNameTheFileTheLineAndTheKeyAndCreateNoOutput) {
  const Task task;
  const std::string head = "model: " + task.model + "\ndata: " + task.data + "\n";
  const std::vector<std::pair<std::string, std::string>> cases = {
      {head + "lrr: 1e-3\n", "r.yaml:3: unknown key 'lrr'"},
      {head + "batch: 2\nlr: fast\n", "r.yaml:4: key 'lr' expects a number, got 'fast'"},
      {head + "seq-len: 9.5\n", "r.yaml:3: key 'seq-len' expects an integer, got '9.5'"},
      {head + "pack: 3\n", "r.yaml:3: key 'pack' is a flag and expects true or false, got '3'"},
      {head + "batch: [1, 2]\n", "r.yaml:3: key 'batch' needs a single value, not a list"},
      {head + "config: other.yaml\n", "r.yaml:3: unknown key 'config'"},
      {"model: " + task.model + "\n", "r.yaml: missing required key 'data'"},
      {head + "lr: [1\n", "not valid YAML"},
  };
  for (const auto& [text, message] : cases) {
    test::write_text(task.dir.file("r.yaml"), text);
    const auto result = test::run_command(kQft + " finetune --config " + task.dir.file("r.yaml") + " --out " +
                                          task.dir.file("out"));
    EXPECT_EQ(result.exit_code, 1) << text;
    EXPECT_MENTIONS(result.output, message);
    EXPECT_FALSE(fs::exists(task.dir.file("out"))) << text;
  }
  // The command line's --out is not required in the file, and overrides it.
  test::write_text(task.dir.file("r.yaml"), head + "out: " + task.dir.file("ignored") + "\nmax-steps: 1\nseq-len: 96\n");
  const auto overridden = test::run_command(kQft + " finetune --config " + task.dir.file("r.yaml") + " --out " +
                                            task.dir.file("out") + " --threads 2");
  EXPECT_EQ(overridden.exit_code, 0) << overridden.output;
  EXPECT_TRUE(fs::exists(task.dir.file("out/model")));
  EXPECT_FALSE(fs::exists(task.dir.file("ignored")));
}

TEST(FinetuneRecipe, ShippedRecipesParseAndTheirKeysAreOptions) {
  for (const char* name : {"demo.yaml", "smollm2-135m-alpaca.yaml", "llama2-7b-qft-paper.yaml", "llama2-7b-lora-paper.yaml"}) {
    const std::string path = std::string(QFT_SOURCE_DIR) + "/recipes/" + name;
    // A missing model is reported after every key was accepted: no unknown
    // key or wrong type stops the recipe first.
    const auto result = test::run_command(kQft + " finetune --config " + path + " --model /nonexistent/model" +
                                          " --data /nonexistent/data.json --out /nonexistent/out");
    EXPECT_EQ(result.exit_code, 1) << name;
    EXPECT_MENTIONS(result.output, "/nonexistent/model");
  }
}

// ------------------------------------------------------------------- locks ---

TEST(FinetuneLock, ASecondRunOnTheSameOutputIsRefusedAndAKilledRunDoesNotBlock) {
  const Task task;
  const std::string log = task.dir.file("first.log");
  const pid_t first = start_run(task, "run", "--max-steps 100000", log);
  ASSERT_GT(first, 0);
  ASSERT_TRUE(wait_for(log, "step 1/")) << test::read_text(log);
  const std::string settings = test::read_text(task.dir.file("run/settings.yaml"));

  const std::string holder = "is in use by another qft run (pid " + std::to_string(first) + ";";
  const auto same_out = test::run_command(task.command("run", "--max-steps 2"));
  EXPECT_EQ(same_out.exit_code, 1) << same_out.output;
  EXPECT_MENTIONS(same_out.output, task.dir.file("run") + " " + holder);
  EXPECT_EQ(test::read_text(task.dir.file("run/settings.yaml")), settings);  // the first run's files untouched
  const auto same_checkpoint =
      test::run_command(task.command("other", "--max-steps 2 --checkpoint " + task.dir.file("run/checkpoint")));
  EXPECT_EQ(same_checkpoint.exit_code, 1) << same_checkpoint.output;
  EXPECT_MENTIONS(same_checkpoint.output, task.dir.file("run/checkpoint") + " " + holder);
  EXPECT_FALSE(fs::exists(task.dir.file("other")));  // refused before anything was written

  kill(first, SIGKILL);
  test::wait_status(first);
  const auto after_kill = test::run_command(task.command("run", "--max-steps 2"));
  EXPECT_EQ(after_kill.exit_code, 0) << after_kill.output;  // a dead holder's lock file does not block
}

// ------------------------------------------------------------ output files ---

TEST(FinetuneOutput, BadInputLeavesNoOutDirectory) {
  const Task task;
  test::write_text(task.dir.file("broken.json"), "[{\"instruction\": \"a\", \"output\": ");
  const auto broken = test::run_command(kQft + " finetune --model " + task.model + " --data " +
                                        task.dir.file("broken.json") + " --out " + task.dir.file("out1"));
  EXPECT_EQ(broken.exit_code, 1) << broken.output;
  EXPECT_MENTIONS(broken.output, task.dir.file("broken.json"));
  EXPECT_FALSE(fs::exists(task.dir.file("out1")));
  const auto no_model = test::run_command(kQft + " finetune --model " + task.dir.file("nowhere") + " --data " +
                                          task.data + " --out " + task.dir.file("out2"));
  EXPECT_EQ(no_model.exit_code, 1) << no_model.output;
  EXPECT_FALSE(fs::exists(task.dir.file("out2")));
  const auto no_checkpoint = test::run_command(task.command("out3", "--resume " + task.dir.file("nowhere")));
  EXPECT_EQ(no_checkpoint.exit_code, 1) << no_checkpoint.output;
  EXPECT_FALSE(fs::exists(task.dir.file("out3")));
}

TEST(FinetuneOutput, TooLittleDiskIsRefusedBeforeTrainingAndLeavesNothing) {
  const Task task;
  const test::SmallDisk disk(1 << 20);
  MOUNT_OR_SKIP(disk);
  const auto result = test::run_command(kQft + " finetune --model " + task.model + " --data " + task.data + " --out " +
                                        disk.file("out") + " --seq-len 96 --max-steps 2 2>&1");
  EXPECT_EQ(result.exit_code, 1) << result.output;
  EXPECT_MENTIONS(result.output, ": a checkpoint (");
  EXPECT_MENTIONS(result.output, " bytes) and the export (");
  EXPECT_MENTIONS(result.output, "choose another directory");
  EXPECT_EQ(result.output.find("step 1/"), std::string::npos) << "it trained first";
  EXPECT_EQ(disk.others({}), std::vector<std::string>{});
}

TEST(FinetuneOutput, LossPlotHasATitleLabelledAxesAMovingAverageAndEvaluationPoints) {
  const Task task;
  const auto result = test::run_command(task.command("run", "--max-steps 7"));
  ASSERT_EQ(result.exit_code, 0) << result.output;
  const std::string svg = test::read_text(task.dir.file("run/loss.svg"));
  EXPECT_MENTIONS(svg, ">model fine-tuned with qlion on data.json</text>");
  EXPECT_MENTIONS(svg, ">step</text>");
  EXPECT_MENTIONS(svg, ">loss (nats per token)</text>");
  EXPECT_MENTIONS(svg, "stroke-opacity=\"0.3\"");  // the raw loss, faint
  EXPECT_MENTIONS(svg, ">training loss, mean of the last 5 steps</text>");
  size_t points = 0;
  for (size_t at = svg.find("<circle"); at != std::string::npos; at = svg.find("<circle", at + 1)) ++points;
  EXPECT_EQ(points, read_metrics(task.dir.file("run")).eval_loss.size());  // before, at 3 and 6, after
  EXPECT_EQ(points, 4u);
}

TEST(FinetuneOutput, MovingAverageIsTrailingAndSkipsNonFiniteLosses) {
  const std::vector<std::pair<int, double>> series = {{1, 4.0}, {2, 2.0}, {3, NAN}, {4, 6.0}, {5, 1.0}};
  const std::vector<std::pair<int, double>> expected = {{1, 4.0}, {2, 3.0}, {4, 4.0}, {5, 3.5}};
  EXPECT_EQ(moving_average(series, 2), expected);
  EXPECT_EQ(moving_average(series, 1).size(), 4u);
  const std::vector<std::pair<int, double>> all = {{1, 4.0}, {2, 3.0}, {4, 4.0}, {5, 13.0 / 4}};
  EXPECT_EQ(moving_average(series, 10), all);
}

// ------------------------------------------------------ non-finite steps ---

// In process, so a test can poison a gradient: 8 QLion steps, skip policy.
FinetuneSettings nonfinite_settings(const Task& task, const std::string& out) {
  FinetuneSettings settings;
  settings.model = task.model;
  settings.data = task.data;
  settings.out = task.dir.file(out);
  settings.seq_len = 96;
  settings.batch = 2;
  settings.lr = 1e-3f;
  settings.run.training.seed = 3;
  settings.eval_split = 0.2f;
  settings.max_steps = 8;
  settings.run.on_nonfinite = NonFinitePolicy::Skip;
  return settings;
}

// NaN in the first gradient of step 3's backward (fused QLion checks it
// before updating anything).
struct PoisonStep3 {
  PoisonStep3() {
    set_gradient_test_hook([](int step, const std::string& name, float* grad, size_t, size_t) {
      if (step == 3 && name == "model.norm.weight") grad[0] = NAN;
    });
  }
  ~PoisonStep3() { set_gradient_test_hook({}); }
};

FinetuneCallbacks quiet(int stop_after = 0) {
  FinetuneCallbacks callbacks;
  callbacks.log = [](const std::string&) {};
  callbacks.progress = [](const FinetuneProgress&) {};
  auto steps = std::make_shared<int>(0);
  callbacks.stop_requested = [=] { return stop_after > 0 && ++*steps == stop_after; };
  return callbacks;
}

std::vector<nlohmann::json> metrics_records(const std::string& out) {
  std::vector<nlohmann::json> records;
  std::istringstream lines(test::read_text(out + "/metrics.jsonl"));
  for (std::string line; std::getline(lines, line);) records.push_back(nlohmann::json::parse(line));
  return records;
}

TEST(FinetuneNonFinite, SkipDropsTheStepLogsItAndResumesToTheSameRun) {
  const Task task;
  const PoisonStep3 poison;
  const FinetuneResult straight = run_finetune(nonfinite_settings(task, "straight"), quiet());
  EXPECT_EQ(straight.skipped_steps, 1);
  EXPECT_EQ(straight.steps, 8);
  const auto records = metrics_records(task.dir.file("straight"));
  const auto skipped = std::find_if(records.begin(), records.end(), [](const auto& r) { return r.contains("nonfinite"); });
  ASSERT_NE(skipped, records.end());
  EXPECT_EQ(*skipped, (nlohmann::json{{"step", 3}, {"epoch", 1}, {"nonfinite", "model.norm.weight"}, {"action", "skipped"},
                                      {"skipped_steps", 1}}));
  const Metrics metrics = read_metrics(task.dir.file("straight"));
  EXPECT_EQ(metrics.loss.count(3), 0u);
  EXPECT_EQ(metrics.loss.size(), 7u);

  // Stopped after step 5 (a checkpoint), resumed: the same run, the skip counted once.
  const FinetuneResult first = run_finetune(nonfinite_settings(task, "resumed"), quiet(5));
  ASSERT_TRUE(first.stopped);
  FinetuneSettings again = nonfinite_settings(task, "resumed");
  again.run.resume = first.checkpoint;
  const FinetuneResult resumed = run_finetune(again, quiet());
  EXPECT_EQ(resumed.skipped_steps, 1);
  expect_same_run(task.dir.file("resumed"), task.dir.file("straight"));
}

TEST(FinetuneNonFinite, StopNamesTheStepTensorAndLastCheckpointAndExportsNothing) {
  const Task task;
  const PoisonStep3 poison;
  FinetuneSettings settings = nonfinite_settings(task, "run");
  settings.run.on_nonfinite = NonFinitePolicy::Stop;
  settings.run.save_every = 2;
  std::string error;
  try {
    run_finetune(settings, quiet());
  } catch (const Error& e) {
    error = e.what();
  }
  const std::string checkpoint = task.dir.file("run") + "/checkpoint";
  EXPECT_EQ(error, "step 3: the gradient of model.norm.weight (element 0) is NaN or Inf; the step changed nothing and "
                   "nothing from it is saved (--on-nonfinite skip goes on); the last checkpoint is " + checkpoint +
                   " (step 2, continue with --resume)");
  EXPECT_FALSE(fs::exists(task.dir.file("run/model")));
  EXPECT_EQ(metrics_records(task.dir.file("run")).back().at("action"), "stopped");
  EXPECT_EQ(make_training(ModelSource::open(task.model), settings.run.training)->load_checkpoint(checkpoint).step, 2);
}

}  // namespace
}  // namespace qft
