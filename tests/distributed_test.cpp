// Data-parallel training over MPI (src/dist), run as users run it: `mpirun -np
// 2 qft …`, one thread per rank. Two ranks with batch B take the same
// examples as one rank with batch 2B, so their losses agree (FP32 optimizers
// to 1e-6 relative; QLion within the tolerance its stochastic rounding allows
// when the gradient sums are ordered differently) and every rank holds the
// same INT8 weights after every step (--check-replicas). Checkpoints resume
// bit for bit at the same number of ranks and re-shard every optimizer's state at
// another; SIGINT to one rank stops both with one checkpoint, a dead rank
// ends the job with the last checkpoint loadable; qft eval gives
// one rank's numbers; two network namespaces joined by a veth pair train as
// two hosts would.
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <thread>

#include <nlohmann/json.hpp>

#include "chat_task.h"
#include "test_util.h"

namespace qft {
namespace {

namespace fs = std::filesystem;
using test::TempDir;

const std::string kQft = QFT_BINARY;
// Ranks yield the core while they wait: ctest runs other tests beside these on
// the same two cores, and a busy-polling rank would starve them (and its peer).
const std::string kMpirun =
    "mpirun --allow-run-as-root --oversubscribe --bind-to none --mca mpi_yield_when_idle 1 -x QFT_COMPUTE=fp32 "
    "-x OMP_NUM_THREADS=1";

// Open MPI 4.1 creates its session directory under /tmp with a race: two
// mpiruns starting together (ctest -j2) can fail with "mkdir ... File exists".
// Each test process gets a directory of its own.
std::string session_option() {
  static const TempDir sessions;
  return " --mca orte_tmpdir_base " + sessions.path();
}

#define EXPECT_MENTIONS(text, part) EXPECT_NE((text).find(part), std::string::npos) << (text)

// `qft ARGS` alone (ranks 1, as a user without mpirun runs it) or on `ranks` ranks.
std::string on_ranks(int ranks, const std::string& args) {
  if (ranks == 1) return kQft + " " + args + " --threads 1";
  return kMpirun + session_option() + " -np " + std::to_string(ranks) + " " + kQft + " " + args + " --threads 1";
}

// The losses of `qft train --json`, by step.
std::vector<double> train_losses(const std::string& output) {
  std::vector<double> losses;
  std::istringstream lines(output);
  for (std::string line; std::getline(lines, line);) {
    if (line.empty() || line[0] != '{') continue;
    const auto record = nlohmann::json::parse(line);
    if (record.contains("step") && record.contains("loss")) losses.push_back(record.at("loss").get<double>());
  }
  return losses;
}

nlohmann::json final_report(const std::string& output) {
  return nlohmann::json::parse(output.substr(output.rfind("\n{\"compute\"") + 1));
}

std::string train_args(const std::string& optimizer, int batch, int steps, const std::string& extra) {
  const std::string model = test::reference_case("llama_gqa_untied");
  return "train --config " + model + "/config.json --init random --seed 3 --tokens " + model +
         "/train_tokens.txt --batch " + std::to_string(batch) + " --steps " + std::to_string(steps) +
         " --lr 1e-3 --json --optimizer " + optimizer + " " + extra;
}

struct Method {
  const char* name;
  std::string optimizer, options;
  double tolerance;         // of each step's loss, relative, between 2 ranks × B and 1 rank × 2B
  double weight_tolerance;  // of each trained tensor after 10 steps (relative error)
};

void PrintTo(const Method& m, std::ostream* out) { *out << m.name; }

class TwoRanks : public testing::TestWithParam<Method> {};

TEST_P(TwoRanks, EqualOneRankWithTheSameExamplesAndKeepReplicasIdentical) {
  const Method& m = GetParam();
  TempDir dir;
  const auto two = test::run_command(on_ranks(2, train_args(m.optimizer, 1, 10, m.options + " --check-replicas --out " +
                                                                                   dir.file("two"))));
  ASSERT_EQ(two.exit_code, 0) << two.output;
  const auto one = test::run_command(on_ranks(1, train_args(m.optimizer, 2, 10, m.options + " --out " + dir.file("one"))));
  ASSERT_EQ(one.exit_code, 0) << one.output;
  const std::vector<double> a = train_losses(two.output), b = train_losses(one.output);
  ASSERT_EQ(a.size(), 10u) << two.output;
  ASSERT_EQ(b.size(), 10u) << one.output;
  for (size_t i = 0; i < a.size(); ++i) EXPECT_NEAR(a[i], b[i], m.tolerance * std::abs(b[i])) << "step " << i + 1;
  const auto got = test::read_tensors(dir.file("two/model.safetensors"));
  const auto want = test::read_tensors(dir.file("one/model.safetensors"));
  for (const auto& [name, values] : want) {
    EXPECT_LT(test::relative_error(got.at(name), values), m.weight_tolerance) << name;
  }
  // Every rank's plan is its accounting (sharded state, the exchange buffers;
  // QLion's weights differ by the known sampling of its outlier thresholds).
  const auto report = final_report(two.output);
  ASSERT_EQ(report.at("per_rank").size(), 2u);
  for (const auto& rank : report.at("per_rank")) {
    const auto& plan = rank.at("plan");
    const auto& peak = rank.at("memory").at("peak_bytes");
    if (m.optimizer != "qlion") EXPECT_EQ(plan.at("weights"), peak.at("weights"));
    EXPECT_EQ(plan.at("grads"), peak.at("gradients"));
    EXPECT_EQ(plan.at("momentum").get<size_t>() + plan.at("variances").get<size_t>(), peak.at("optimizer_state").get<size_t>());
  }
  const auto alone = final_report(one.output);
  EXPECT_LT(report.at("plan").at("momentum").get<double>(), 0.75 * alone.at("plan").at("momentum").get<double>());
}

// The FP32 optimizers differ only in the order of each gradient's sum. QLion
// rounds stochastically, so a sum in another order now and then lands on the
// other INT8 code, and Lion's sign turns a near-zero difference into a whole
// step of lr: a few percent of a 0.02-sized weight after 10 steps at lr 1e-3.
// With the INT8 gradient stack (grad-accum 2) each rank quantizes its own
// partial gradient, so the noise itself differs; 8-bit AdamW's codes flip
// likewise, rarely.
INSTANTIATE_TEST_SUITE_P(Methods, TwoRanks,
                         testing::Values(Method{"qlion_fused", "qlion", "", 2e-3, 2e-2},
                                         Method{"qlion_stacked", "qlion", "--grad-accum 2", 5e-3, 0.15},
                                         Method{"lion", "lion", "", 1e-6, 1e-5}, Method{"adamw", "adamw", "", 1e-6, 1e-5},
                                         Method{"adamw8bit", "adamw8bit", "", 1e-6, 1e-3}),
                         [](const auto& info) { return std::string(info.param.name); });

// 8 steps straight against 4, a checkpoint and 4 more: the same losses and
// weights bit for bit at 2 ranks.
class TwoRankResume : public testing::TestWithParam<Method> {};

TEST_P(TwoRankResume, ContinuesBitForBit) {
  const Method& m = GetParam();
  TempDir dir;
  const auto straight = test::run_command(on_ranks(2, train_args(m.optimizer, 1, 8, m.options + " --out " + dir.file("straight"))));
  ASSERT_EQ(straight.exit_code, 0) << straight.output;
  const std::string checkpoint = dir.file("checkpoint");
  const auto first = test::run_command(on_ranks(2, train_args(m.optimizer, 1, 4, m.options + " --checkpoint " + checkpoint)));
  ASSERT_EQ(first.exit_code, 0) << first.output;
  const auto manifest = nlohmann::json::parse(test::read_text(checkpoint + "/manifest.json"));
  EXPECT_EQ(manifest.at("ranks"), 2);
  EXPECT_TRUE(fs::exists(checkpoint + "/shard-0.safetensors") && fs::exists(checkpoint + "/shard-1.safetensors"));
  const auto second = test::run_command(
      on_ranks(2, train_args(m.optimizer, 1, 8, m.options + " --resume " + checkpoint + " --out " + dir.file("resumed"))));
  ASSERT_EQ(second.exit_code, 0) << second.output;
  std::vector<double> joined = train_losses(first.output);
  for (double loss : train_losses(second.output)) joined.push_back(loss);
  EXPECT_EQ(joined, train_losses(straight.output));
  EXPECT_TRUE(test::read_text(dir.file("resumed/model.safetensors")) == test::read_text(dir.file("straight/model.safetensors")));
}

INSTANTIATE_TEST_SUITE_P(Methods, TwoRankResume,
                         testing::Values(Method{"qlion_fused", "qlion", "", 0, 0}, Method{"qlion_stacked", "qlion", "--grad-accum 2", 0, 0},
                                         Method{"qlion_momentum4", "qlion", "--momentum-bits 4", 0, 0},
                                         Method{"adamw", "adamw", "", 0, 0}, Method{"adamw8bit", "adamw8bit", "", 0, 0}),
                         [](const auto& info) { return std::string(info.param.name); });

// Beyond 2 ranks a sum's order is the collective algorithm's: Open MPI picks
// it by communicator and message size, so a fixed N repeats bit for bit.
TEST(FourRanks, RepeatBitForBit) {
  TempDir dir;
  const auto first = test::run_command(on_ranks(4, train_args("qlion", 1, 6, "--check-replicas --out " + dir.file("a"))));
  ASSERT_EQ(first.exit_code, 0) << first.output;
  const auto second = test::run_command(on_ranks(4, train_args("qlion", 1, 6, "--out " + dir.file("b"))));
  ASSERT_EQ(second.exit_code, 0) << second.output;
  EXPECT_EQ(train_losses(first.output), train_losses(second.output));
  EXPECT_TRUE(test::read_text(dir.file("a/model.safetensors")) == test::read_text(dir.file("b/model.safetensors")));
}

// QLion's momentum is re-sharded: a 2-rank checkpoint continues on 1 rank
// (--grad-accum 2 keeps the global batch) and a 1-rank one on 2, each close
// to the run that never changed (stacked and fused QLion round differently);
// 4-bit momentum blocks move with their rows.
TEST(ReshardedResume, QlionContinuesAtAnotherNumberOfRanks) {
  TempDir dir;
  for (const std::string momentum : {"", "--momentum-bits 4 "}) {
    SCOPED_TRACE(momentum);
    const auto straight = test::run_command(on_ranks(2, train_args("qlion", 1, 8, momentum)));
    ASSERT_EQ(straight.exit_code, 0) << straight.output;
    const std::vector<double> want = train_losses(straight.output);
    const std::string two = dir.file("two" + std::to_string(momentum.size()));
    ASSERT_EQ(test::run_command(on_ranks(2, train_args("qlion", 1, 4, momentum + "--checkpoint " + two))).exit_code, 0);
    const auto on_one = test::run_command(on_ranks(1, train_args("qlion", 1, 8, momentum + "--grad-accum 2 --resume " + two)));
    ASSERT_EQ(on_one.exit_code, 0) << on_one.output;
    const std::vector<double> got = train_losses(on_one.output);
    ASSERT_EQ(got.size(), 4u);
    for (size_t i = 0; i < got.size(); ++i) EXPECT_NEAR(got[i], want[4 + i], 2e-2 * want[4 + i]) << "step " << i + 5;
  }
  const std::string two = dir.file("two0");

  const std::string one = dir.file("one");
  ASSERT_EQ(test::run_command(on_ranks(1, train_args("qlion", 1, 4, "--grad-accum 2 --checkpoint " + one))).exit_code, 0);
  const auto on_two = test::run_command(on_ranks(2, train_args("qlion", 1, 8, "--resume " + one + " --check-replicas")));
  ASSERT_EQ(on_two.exit_code, 0) << on_two.output;
  EXPECT_EQ(train_losses(on_two.output).size(), 4u);

  // Another global batch is refused by name.
  const auto other_batch = test::run_command(on_ranks(1, train_args("qlion", 1, 8, "--resume " + two)));
  EXPECT_NE(other_batch.exit_code, 0);
  EXPECT_MENTIONS(other_batch.output, "grad_accum");
}

// The FP32 optimizers' state is re-sharded by 256-value blocks: 2 ranks → 1
// and 1 → 2 continue as the uninterrupted 2-rank run, to the order of a sum.
TEST(ReshardedResume, Fp32OptimizersContinueAtAnotherNumberOfRanks) {
  for (const std::string optimizer : {"adamw", "adamw8bit", "lion"}) {
    TempDir dir;
    const auto straight = test::run_command(on_ranks(2, train_args(optimizer, 1, 8, "")));
    ASSERT_EQ(straight.exit_code, 0) << straight.output;
    const std::vector<double> want = train_losses(straight.output);
    const std::string two = dir.file("two"), one = dir.file("one");
    ASSERT_EQ(test::run_command(on_ranks(2, train_args(optimizer, 1, 4, "--checkpoint " + two))).exit_code, 0);
    ASSERT_EQ(test::run_command(on_ranks(1, train_args(optimizer, 1, 4, "--grad-accum 2 --checkpoint " + one))).exit_code, 0);
    const auto on_one = test::run_command(on_ranks(1, train_args(optimizer, 1, 8, "--grad-accum 2 --resume " + two)));
    const auto on_two = test::run_command(on_ranks(2, train_args(optimizer, 1, 8, "--resume " + one + " --check-replicas")));
    for (const auto* run : {&on_one, &on_two}) {
      ASSERT_EQ(run->exit_code, 0) << run->output;
      const std::vector<double> got = train_losses(run->output);
      ASSERT_EQ(got.size(), 4u) << optimizer;
      for (size_t i = 0; i < got.size(); ++i) EXPECT_NEAR(got[i], want[4 + i], 1e-6 * want[4 + i]) << optimizer << " step " << i + 5;
    }
  }
}

TEST(DataParallelMemory, PlanPerRank) {
  const std::string config = test::reference_case("llama_gqa_untied") + "/config.json";
  const auto one = test::run_command(kQft + " memory --config " + config + " --json");
  const auto two = test::run_command(kQft + " memory --config " + config + " --ranks 2 --json");
  ASSERT_EQ(one.exit_code, 0) << one.output;
  ASSERT_EQ(two.exit_code, 0) << two.output;
  const auto a = nlohmann::json::parse(one.output), b = nlohmann::json::parse(two.output);
  EXPECT_EQ(a.at("weights"), b.at("weights"));
  EXPECT_LT(b.at("momentum").get<double>(), 0.75 * a.at("momentum").get<double>());
  EXPECT_GT(b.at("grads").get<double>(), a.at("grads").get<double>());  // the exchange buffers
  const auto table = test::run_command(kQft + " memory --config " + config + " --ranks 2");
  EXPECT_MENTIONS(table.output, "per rank (2 ranks)");
  EXPECT_NE(test::run_command(kQft + " memory --config " + config + " --ranks 0").exit_code, 0);
}

// ------------------------------------------------------------ finetune, eval ---

// A tiny chat model and 24 Alpaca records (test_util.h).
struct Task {
  TempDir dir;
  std::string model = dir.file("model"), data = dir.file("data.json");

  Task() {
    test::write_tiny_chat_model(model, dir.file("config.json"));
    test::write_alpaca_records(data, 24);
  }

  std::string finetune(const std::string& out, int batch, const std::string& options) const {
    return "finetune --model " + model + " --data " + data + " --out " + dir.file(out) + " --seq-len 96 --batch " +
           std::to_string(batch) + " --lr 1e-3 --seed 3 --eval-split 0.2 --eval-every 2 --log-every 1 " + options;
  }
};

std::map<int, double> metric(const std::string& out, const char* key) {
  std::map<int, double> values;
  std::istringstream lines(test::read_text(out + "/metrics.jsonl"));
  for (std::string line; std::getline(lines, line);) {
    const auto record = nlohmann::json::parse(line);
    if (record.contains(key)) values[record.at("step").get<int>()] = record.at(key).get<double>();
  }
  return values;
}

void expect_close(const std::map<int, double>& got, const std::map<int, double>& want, double tolerance) {
  ASSERT_EQ(got.size(), want.size());
  for (const auto& [step, value] : want) EXPECT_NEAR(got.at(step), value, tolerance * std::abs(value)) << "step " << step;
}

TEST(DataParallelFinetune, TwoRanksTrainTheDemoWayWithOneRanksLoss) {
  const Task task;
  const auto two = test::run_command(on_ranks(2, task.finetune("two", 1, "--max-steps 6 --check-replicas --optimizer adamw")));
  ASSERT_EQ(two.exit_code, 0) << two.output;
  EXPECT_MENTIONS(two.output, "data-parallel: 2 ranks");
  const auto one = test::run_command(on_ranks(1, task.finetune("one", 2, "--max-steps 6 --optimizer adamw")));
  ASSERT_EQ(one.exit_code, 0) << one.output;
  expect_close(metric(task.dir.file("two"), "loss"), metric(task.dir.file("one"), "loss"), 1e-6);
  expect_close(metric(task.dir.file("two"), "eval_loss"), metric(task.dir.file("one"), "eval_loss"), 1e-6);
  EXPECT_TRUE(fs::exists(task.dir.file("two/model/model.safetensors")));

  const auto qlion = test::run_command(on_ranks(2, task.finetune("qlion2", 1, "--max-steps 6 --check-replicas")));
  ASSERT_EQ(qlion.exit_code, 0) << qlion.output;
  const auto qlion_one = test::run_command(on_ranks(1, task.finetune("qlion1", 2, "--max-steps 6")));
  ASSERT_EQ(qlion_one.exit_code, 0) << qlion_one.output;
  expect_close(metric(task.dir.file("qlion2"), "loss"), metric(task.dir.file("qlion1"), "loss"), 2e-3);
}

// The pid of rank `rank` of a job whose command line mentions `marker`.
pid_t rank_pid(const std::string& marker, int rank) {
  for (const auto& entry : fs::directory_iterator("/proc")) {
    const std::string name = entry.path().filename().string();
    if (name.find_first_not_of("0123456789") != std::string::npos) continue;
    std::ifstream cmdline(entry.path() / "cmdline"), environ(entry.path() / "environ");
    std::string command((std::istreambuf_iterator<char>(cmdline)), {}), environment((std::istreambuf_iterator<char>(environ)), {});
    if (command.rfind(kQft, 0) != 0 || command.find(marker) == std::string::npos) continue;
    if (environment.find(std::string("OMPI_COMM_WORLD_RANK=") + std::to_string(rank) + '\0') != std::string::npos) {
      return static_cast<pid_t>(std::stoi(name));
    }
  }
  return -1;
}

// Starts a long 2-rank fine-tune into `out`, waits for its third step and
// sends `signal` to rank 1 alone; returns mpirun's wait status (-1: no rank 1 found).
int signal_rank1(const Task& task, const std::string& out, const std::string& options, int signal) {
  const std::string log = task.dir.file(out + ".log");
  std::vector<std::string> arguments;
  std::istringstream words(on_ranks(2, task.finetune(out, 1, "--max-steps 100000 " + options)));
  for (std::string word; words >> word;) arguments.push_back(word == "mpirun" ? "/usr/bin/mpirun" : word);
  const pid_t job = test::spawn(arguments, {}, log);
  if (job <= 0) return -1;
  for (int i = 0; i < 600 && test::read_text(log).find("step 3/") == std::string::npos; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  const pid_t rank1 = rank_pid(task.dir.file(out), 1);
  kill(rank1 > 0 ? rank1 : job, rank1 > 0 ? signal : SIGKILL);
  const int status = test::wait_status(job);
  return rank1 > 0 ? status : -1;
}

TEST(DataParallelSignals, SigintToOneRankStopsBothWithOneCheckpointThatResumes) {
  const Task task;
  const int status = signal_rank1(task, "stopped", "--warmup-ratio 0 --min-lr-ratio 1", SIGINT);
  const std::string output = test::read_text(task.dir.file("stopped.log"));
  ASSERT_NE(status, -1) << output;
  ASSERT_TRUE(WIFEXITED(status)) << output;
  EXPECT_EQ(WEXITSTATUS(status), 130) << output;
  const std::string checkpoint = task.dir.file("stopped/checkpoint");
  const auto manifest = nlohmann::json::parse(test::read_text(checkpoint + "/manifest.json"));
  EXPECT_EQ(manifest.at("ranks"), 2);
  const int last = manifest.at("step").get<int>();
  EXPECT_EQ(metric(task.dir.file("stopped"), "loss").rbegin()->first, last);

  const std::string total = "--max-steps " + std::to_string(last + 2) + " --warmup-ratio 0 --min-lr-ratio 1";
  const auto straight = test::run_command(on_ranks(2, task.finetune("straight", 1, total)));
  ASSERT_EQ(straight.exit_code, 0) << straight.output;
  const auto resumed = test::run_command(on_ranks(2, task.finetune("stopped", 1, total + " --resume " + checkpoint)));
  ASSERT_EQ(resumed.exit_code, 0) << resumed.output;
  EXPECT_EQ(metric(task.dir.file("stopped"), "loss"), metric(task.dir.file("straight"), "loss"));
  EXPECT_TRUE(test::read_text(task.dir.file("stopped/model/model.safetensors")) ==
              test::read_text(task.dir.file("straight/model/model.safetensors")));
}

// A rank that dies ends the job (MPI's default error handler, mpirun's
// watch over its processes); the last checkpoint stays loadable.
TEST(DataParallelFaults, ADeadRankEndsTheJobAndTheLastCheckpointResumes) {
  const Task task;
  const int status = signal_rank1(task, "killed", "--save-every 1", SIGKILL);
  const std::string output = test::read_text(task.dir.file("killed.log"));
  ASSERT_NE(status, -1) << output;
  EXPECT_FALSE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << output;
  const auto resumed = test::run_command(
      on_ranks(2, task.finetune("resumed", 1, "--max-steps 6 --resume " + task.dir.file("killed/checkpoint"))));
  ASSERT_EQ(resumed.exit_code, 0) << resumed.output;
  EXPECT_MENTIONS(resumed.output, "resumed from");
}

TEST(DataParallelEval, TwoRanksGiveOneRanksScores) {
  const Task task;
  // Single-token choices (the next-token path) and longer ones (packed batches).
  std::string questions;
  for (int i = 0; i < 7; ++i) {
    const nlohmann::json choices = i % 2 ? nlohmann::json{" A", " B", " C"} : nlohmann::json{" red apples", " a blue sky", " green"};
    questions += nlohmann::json{{"context", "Question " + std::to_string(i) + ": pick one."}, {"choices", choices}, {"label", i % 3}}.dump() + "\n";
  }
  test::write_text(task.dir.file("choice.jsonl"), questions);
  for (const std::string& args : {"eval --model " + task.model + " --data " + task.dir.file("choice.jsonl") + " --task choice --json",
                                  "eval --model " + task.model + " --data " + task.data + " --task perplexity --json --batch-tokens 64"}) {
    const auto one = test::run_command(on_ranks(1, args));
    const auto two = test::run_command(on_ranks(2, args));
    ASSERT_EQ(one.exit_code, 0) << one.output;
    ASSERT_EQ(two.exit_code, 0) << two.output;
    auto a = nlohmann::json::parse(one.output.substr(one.output.rfind("\n{") + 1));
    auto b = nlohmann::json::parse(two.output.substr(two.output.rfind("\n{") + 1));
    for (auto* report : {&a, &b}) report->erase("tokens_per_second"), report->erase("seconds");
    EXPECT_EQ(a, b) << args;
  }
}

// Two "hosts": network namespaces joined by a veth pair, one rank in each,
// over Open MPI's TCP transport (no shared memory between them).
TEST(TwoHosts, NetworkNamespacesTrainLikeOneHost) {
  if (geteuid() != 0) GTEST_SKIP() << "needs root for ip netns";
  const std::string suffix = std::to_string(getpid());
  const std::string a = "qfta" + suffix, b = "qftb" + suffix;
  const auto setup = test::run_command(
      "ip netns add " + a + " && ip netns add " + b + " && ip link add va" + suffix + " type veth peer name vb" + suffix +
      " && ip link set va" + suffix + " netns " + a + " && ip link set vb" + suffix + " netns " + b +
      " && ip -n " + a + " addr add 10.77.0.1/24 dev va" + suffix + " && ip -n " + b + " addr add 10.77.0.2/24 dev vb" +
      suffix + " && ip -n " + a + " link set va" + suffix + " up && ip -n " + b + " link set vb" + suffix +
      " up && ip -n " + a + " link set lo up && ip -n " + b + " link set lo up");
  struct Cleanup {
    std::string a, b;
    ~Cleanup() { test::run_command("ip netns del " + a + "; ip netns del " + b); }
  } cleanup{a, b};
  if (setup.exit_code != 0) GTEST_SKIP() << "this machine does not allow network namespaces: " << setup.output;
  TempDir dir;
  // mpirun in namespace A starts the rank in B through `ip netns exec` as its
  // remote shell; both ranks talk TCP over the veth pair only.
  const std::string agent = dir.file("netns-agent.sh");
  test::write_text(agent, "#!/bin/sh\nhost=$1; shift\nexec ip netns exec " + b + " sh -c \"$*\"\n");
  fs::permissions(agent, fs::perms::owner_all);
  test::write_text(dir.file("hosts"), "10.77.0.1 slots=1\n10.77.0.2 slots=1\n");
  const std::string args = train_args("qlion", 1, 6, "--check-replicas") + " --threads 1";
  const auto two = test::run_command(
      "ip netns exec " + a + " mpirun --allow-run-as-root" + session_option() + " -np 2 --hostfile " + dir.file("hosts") +
      " --mca plm_rsh_agent " + agent + " --mca btl tcp,self --mca btl_tcp_if_include 10.77.0.0/24" +
      " --mca oob_tcp_if_include 10.77.0.0/24 -x QFT_COMPUTE=fp32 -x OMP_NUM_THREADS=1 " + kQft + " " + args);
  ASSERT_EQ(two.exit_code, 0) << two.output;
  // The ranks' traffic went over the veth pair: the gradient sums and gathered rows of 6 steps.
  const auto sent = test::run_command("ip netns exec " + a + " cat /sys/class/net/va" + suffix + "/statistics/tx_bytes");
  ASSERT_EQ(sent.exit_code, 0) << sent.output;
  EXPECT_GT(std::stoll(sent.output), 6 * 100000) << "bytes sent over the veth pair";
  const auto local = test::run_command(on_ranks(2, train_args("qlion", 1, 6, "")));
  ASSERT_EQ(local.exit_code, 0) << local.output;
  EXPECT_EQ(train_losses(two.output), train_losses(local.output));
}

}  // namespace
}  // namespace qft
