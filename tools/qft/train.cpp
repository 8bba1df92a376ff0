// qft train: training on token sequences, B lines per micro-batch;
// checkpoints, resuming and clean interruption (SIGINT/SIGTERM).
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <optional>

#include <nlohmann/json.hpp>

#include "commands.h"
#include "common.h"
#include "core/error.h"
#include "core/json_integer.h"
#include "dist/world.h"
#include "io/atomic_file.h"
#include "io/run_lock.h"
#include "io/state_file.h"
#include "model/hf_export.h"
#include "train/memory_plan.h"
#include "train/training.h"

namespace qft::cli {
namespace {

nlohmann::json memory_report() {
  const MemoryStats stats = memory_stats();
  nlohmann::json peaks;
  for (int i = 0; i < kMemCategoryCount; ++i) peaks[category_name(static_cast<MemCategory>(i))] = stats.peak[i];
  return {{"peak_bytes", peaks}, {"peak_total_bytes", stats.total_peak},
          {"peak_rss_bytes", process_peak_rss_bytes()}};
}

// The plan for the longest micro-batch the token file can produce.
PlanSettings plan_settings_for(const TrainingSettings& settings, const std::vector<TokenSequence>& lines, int batch_lines) {
  size_t longest = 2;
  for (const TokenSequence& line : lines) longest = std::max(longest, line.size());
  PlanSettings plan;
  plan.optimizer = settings.optimizer;
  plan.lora = settings.lora;
  plan.grad_accum = settings.grad_accum;
  plan.seq_len = static_cast<int>(longest);
  plan.batch = batch_lines;
  plan.checkpointing = settings.checkpointing;
  plan.outlier_fraction = settings.qft.outlier_fraction;
  plan.ranks = dist::world().size();
  plan.rank = dist::world().rank();
  return plan;
}

// Hands out lines in file order, wrapping around; reports epoch boundaries.
class LineCursor {
 public:
  explicit LineCursor(const std::vector<TokenSequence>& lines) : lines_(lines) {}
  Batch next_batch(int count, bool* new_epoch) {
    std::vector<TokenSequence> taken;
    for (int i = 0; i < count; ++i) {
      if (next_ == lines_.size()) {
        next_ = 0;
        *new_epoch = true;
      }
      taken.push_back(lines_[next_++]);
    }
    return make_batch(taken);
  }

  // The next line to hand out, for checkpoints.
  size_t position() const { return next_; }
  void seek(size_t position) { next_ = position; }

 private:
  const std::vector<TokenSequence>& lines_;
  size_t next_ = 0;
};

// Identifies the token file's contents, so a resumed run continues on the
// same data from the same line.
std::string tokens_checksum(const std::vector<TokenSequence>& lines) {
  uint64_t hash = lines.size();
  for (const TokenSequence& line : lines) hash = xxh64(line.data(), line.size() * sizeof(int), hash) + line.size();
  return hex64(hash);
}

nlohmann::json trainer_state(const LineCursor& cursor, const std::vector<TokenSequence>& lines, int batch_lines,
                             const NonFiniteGuard& guard) {
  return {{"next_line", cursor.position()}, {"lines", lines.size()}, {"batch", batch_lines},
          {"tokens_checksum", tokens_checksum(lines)},
          {"nonfinite", {{"skipped", guard.skipped()}, {"consecutive", guard.consecutive()}}}};
}

// The resumed run's count of skipped steps, in a row and in all.
NonFiniteGuard resumed_guard(const Args& args, const ResumePoint& resume) {
  const nlohmann::json skips = resume.trainer_state.value("nonfinite", nlohmann::json::object());
  const std::string where = resume.directory + "/manifest.json: trainer_state.nonfinite";
  return nonfinite_guard(args, json_integer<int>(skips.value("skipped", nlohmann::json(0)), where, 0),
                         json_integer<int>(skips.value("consecutive", nlohmann::json(0)), where, 0));
}

// Where the checkpoint's data position stands, after checking it was taken
// on the same token file with the same --batch.
size_t resume_position(const ResumePoint& resume, const std::vector<TokenSequence>& lines, int batch_lines) {
  const nlohmann::json& state = resume.trainer_state;
  const std::string where = resume.directory + "/manifest.json";
  try {
    if (state.at("tokens_checksum").get<std::string>() != tokens_checksum(lines) ||
        state.at("lines").get<size_t>() != lines.size()) {
      fail(where, ": the checkpoint was taken on other --tokens data (", state.at("lines").get<size_t>(), " lines)");
    }
    if (state.at("batch").get<int>() != batch_lines) {
      fail(where, ": the checkpoint was taken with --batch ", state.at("batch").get<int>(), ", this run has ", batch_lines);
    }
    const size_t position = state.at("next_line").get<size_t>();
    if (position > lines.size()) fail(where, ": next_line ", position, " is beyond the token file");
    return position;
  } catch (const nlohmann::json::exception& error) {
    fail(where, ": no qft train position in trainer_state (", error.what(), ")");
  }
}

// Room for a checkpoint and the saved model, checked before training starts.
std::vector<SpaceNeed> space_needs(const Training& training, const ModelConfig& config,
                                   const std::optional<std::string>& checkpoint, const std::optional<std::string>& out) {
  std::vector<SpaceNeed> needs;
  const auto parent = [](const std::string& path) { return std::filesystem::path(path).parent_path().string(); };
  if (checkpoint) needs.push_back({parent(*checkpoint), training.checkpoint_bytes(), "a checkpoint"});
  HfExport model;
  model.dtype = DType::F32;  // as Training::save writes it
  if (out) needs.push_back({parent(*out), export_hf_bytes(config, model), "the model (--out)"});
  return needs;
}

}  // namespace

int run_train(int argc, char** argv) {
  std::vector<OptionSpec> options = model_options();
  for (OptionSpec option : std::vector<OptionSpec>{
           {"tokens", "FILE", "one sequence per line, whitespace-separated token ids", ""},
           {"batch", "B", "lines per micro-batch (taken in file order, wrapping around)", "1"},
           {"grad-accum", "N", "micro-batches per optimizer step (qlion: 1 updates inside backward)", "1"},
           {"steps", "N", "optimizer steps", ""},
           {"lr", "X", "learning rate (constant)", ""},
           optimizer_option(),
           {"weight-decay", "W", "decoupled weight decay, applied to every parameter", "0"},
           {"beta1", "B1", "first beta (default: 0.9)", ""},
           {"beta2", "B2", "second beta (default: 0.999 for adamw and adamw8bit, 0.99 for lion and qlion)", ""},
           {"eps", "E", "AdamW epsilon", "1e-8"},
           {"rounding", "MODE", "qlion re-quantization: stochastic | nearest", "stochastic"},
           {"outlier-fraction", "F", "qlion: fraction of each matrix kept as FP32 outliers", "0.01"},
           {"checkpointing", "", "recompute each layer's activations during backward", ""},
           {"stack-gradients", "", "qlion: put gradients on the INT8 stack and update after backward (the paper's pipeline) even with --grad-accum 1", ""},
           nonfinite_options()[0], nonfinite_options()[1],
           {"json", "", "print one JSON object per step and a final memory report", ""},
           {"check-replicas", "", "data-parallel debugging: after every step, fail unless every rank holds the same weights (XXH64)", ""},
           {"max-memory", "SIZE", "refuse a plan whose peak exceeds this (e.g. 16G; default: physical RAM)", ""},
           {"out", "DIR", "save the trained model there as an HF directory (must not exist)", ""},
           {"checkpoint", "DIR", "write checkpoints there: every --save-every steps, at the end, and on SIGINT/SIGTERM (then exit 130/143)", ""},
           {"save-every", "N", "steps between checkpoints (needs --checkpoint)", ""},
           {"resume", "DIR", "continue from this checkpoint: same model, --tokens, --batch and settings; --steps is the total (default --checkpoint: DIR)", ""},
           compute_option(), threads_option()}) {
    options.push_back(option);
  }
  for (const OptionSpec& option : lora_options()) options.push_back(option);
  Args args("train",
            "Trains every parameter on the sequences of --tokens. The loss of a step is the mean\n"
            "next-token cross-entropy over the predicted positions of its B x N lines. With\n"
            "--optimizer qlion (the default) weights, gradients and momentum are stored in INT8 (QFT).\n"
            "--method lora trains PEFT-style adapters on a frozen base instead; --out then holds the\n"
            "merged model.",
            options);
  if (!args.parse(argc, argv)) return 0;
  args.require({"tokens", "steps", "lr"});
  apply_threads(args);
  const std::string compute = apply_compute(args);
  const int batch_lines = args.get_int("batch");
  const int steps = args.get_int("steps");
  const float lr = args.get_float("lr");
  if (batch_lines < 1 || steps < 1) fail("--batch and --steps must be at least 1");
  if (!(lr > 0)) fail("--lr must be positive");
  const bool json = args.flag("json");
  const auto out = args.find("out");
  if (out && std::filesystem::exists(*out)) fail(*out, ": already exists; choose a new --out directory");
  const TrainingSettings settings = training_settings(args);
  const auto resume_from = args.find("resume");
  const std::optional<std::string> checkpoint = args.has("checkpoint") ? args.find("checkpoint") : resume_from;
  const int save_every = args.has("save-every") ? args.get_int("save-every") : 0;
  if (args.has("save-every") && save_every < 1) fail("--save-every must be at least 1");
  if (save_every && !checkpoint) fail("--save-every needs --checkpoint DIR");

  const ModelSource source = model_source_from_args(args);
  const auto sequences = read_token_file(args.get("tokens"), source.config().vocab_size);
  const PlanSettings plan_settings = plan_settings_for(settings, sequences, batch_lines);
  const MemoryPlan plan = plan_memory(source.config(), plan_settings);
  const size_t max_memory = args.has("max-memory") ? parse_memory_size(args.get("max-memory")) : physical_memory_bytes();
  if (plan.peak > max_memory) {
    std::fputs(plan_table(plan, source.config(), plan_settings).c_str(), stderr);
    fail("the plan's peak of ", plan.peak / 1073741824.0, " GiB exceeds the allowed ", max_memory / 1073741824.0,
         " GiB (--max-memory); try --checkpointing, a smaller --batch or --optimizer qlion");
  }
  if (!json) std::printf("%s\n%s", compute.c_str(), plan_table(plan, source.config(), plan_settings).c_str());
  // Data-parallel, rank 0 holds the lock and writes --out (every rank holds the same model).
  const dist::World& world = dist::world();
  std::optional<RunLock> checkpoint_lock;  // one run per checkpoint directory
  if (checkpoint && world.is_root()) checkpoint_lock.emplace(sibling_lock_file(*checkpoint), *checkpoint);
  NonFiniteGuard guard = nonfinite_guard(args);
  auto training = make_training(source, settings);
  const std::vector<SpaceNeed> needs = space_needs(*training, source.config(), checkpoint, out);  // on every rank
  if (world.is_root()) require_free_space(needs);
  const bool check_replicas = args.flag("check-replicas");

  LineCursor cursor(sequences);
  int first_step = 1;
  int checkpoint_step = -1;  // of the last checkpoint written or read
  if (resume_from) {
    const ResumePoint resume = training->load_checkpoint(*resume_from);
    cursor.seek(resume_position(resume, sequences, batch_lines));
    guard = resumed_guard(args, resume);
    first_step = resume.step + 1;
    checkpoint_step = resume.step;
    if (resume.directory != *resume_from) {
      std::fprintf(stderr, "qft train: %s is missing (a checkpoint write was interrupted); resumed from %s\n",
                   resume_from->c_str(), resume.directory.c_str());
    }
    if (!json) std::printf("resumed from %s after step %d\n", resume.directory.c_str(), resume.step);
  }
  const auto save_checkpoint = [&](int step) {
    training->save_checkpoint(*checkpoint, trainer_state(cursor, sequences, batch_lines, guard));
    checkpoint_step = step;
  };
  std::optional<StopSignals> stop_signals(std::in_place);
  for (int step = first_step; step <= steps; ++step) {
    // Data-parallel, a step takes ranks × grad-accum micro-batches; rank r those at r, r + ranks, …
    bool new_epoch = false;
    std::vector<Batch> micro_batches;
    int64_t tokens = 0;
    for (int i = 0; i < settings.grad_accum * world.size(); ++i) {
      Batch batch = cursor.next_batch(batch_lines, &new_epoch);
      tokens += batch.size();
      if (i % world.size() == world.rank()) micro_batches.push_back(std::move(batch));
    }
    if (new_epoch) training->new_epoch();
    const auto start = std::chrono::steady_clock::now();
    const double loss = training->step(step, lr, micro_batches);
    const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    if (check_replicas) training->check_replicas();
    const auto outcome = guard.judge(step, training->nonfinite());
    if (outcome != NonFiniteGuard::Outcome::Applied) {
      if (json) std::printf("%s\n", guard.record(step, *training->nonfinite(), outcome).dump().c_str());
      else std::printf("step %d/%d  skipped: %s is NaN or Inf\n", step, steps, training->nonfinite()->describe().c_str());
      std::fflush(stdout);
      if (outcome == NonFiniteGuard::Outcome::Stop) {
        fail(guard.stop_reason(), checkpoint_step >= 0 ? "; the last checkpoint is " + *checkpoint + " (step " +
                                                             std::to_string(checkpoint_step) + ")"
                                                       : "; no checkpoint was written");
      }
    } else if (json) {
      const nlohmann::json record = {{"step", step}, {"loss", loss}, {"lr", lr}, {"tokens", tokens},
                                     {"seconds", seconds}, {"tokens_per_second", tokens / seconds}};
      std::printf("%s\n", record.dump().c_str());
    } else {
      std::printf("step %d/%d  loss %.6f  lr %.3g  %.1f tokens/s\n", step, steps, loss, lr, tokens / seconds);
    }
    std::fflush(stdout);
    // Read once: a signal arriving from here on is handled after the next step.
    // Any rank's signal stops every rank here.
    const int signal = static_cast<int>(world.max(StopSignals::received()));
    if (checkpoint && ((save_every && step % save_every == 0) || step == steps || signal)) save_checkpoint(step);
    if (signal) {
      const char* name = StopSignals::name(signal);
      if (json) {
        std::printf("%s\n", nlohmann::json{{"interrupted", true}, {"signal", name}, {"step", step},
                                           {"checkpoint", checkpoint ? nlohmann::json(*checkpoint) : nlohmann::json()}}
                                .dump()
                                .c_str());
        std::fflush(stdout);
      }
      if (checkpoint) {
        std::fprintf(stderr, "qft train: %s after step %d; checkpoint in %s (continue with --resume %s)\n", name, step,
                     checkpoint->c_str(), checkpoint->c_str());
      } else {
        std::fprintf(stderr, "qft train: %s after step %d; no --checkpoint given, nothing saved\n", name, step);
      }
      return 128 + signal;
    }
  }
  stop_signals.reset();
  if (first_step > steps && !json) std::printf("the checkpoint is at step %d of %d: nothing to train\n", first_step - 1, steps);
  if (out && world.is_root()) training->save(*out);
  const nlohmann::json report = memory_report();
  if (json) {
    nlohmann::json final = {{"final", true}, {"steps", steps}, {"compute", compute}, {"memory", report}, {"plan", plan_to_json(plan)}};
    if (world.distributed()) {  // rank 0's collectives over the run; every rank's plan and peaks
      final["ranks"] = world.size();
      final["traffic"] = {{"bytes_sent", world.traffic().bytes_sent}, {"wait_seconds", world.traffic().wait_seconds}};
      const nlohmann::json mine = {{"plan", plan_to_json(plan)}, {"memory", report}};
      final["per_rank"] = nlohmann::json::array();
      for (const std::string& text : world.all_strings(mine.dump())) final["per_rank"].push_back(nlohmann::json::parse(text));
    }
    std::printf("%s\n", final.dump().c_str());
  } else {
    std::printf("memory peak: %s\n", report.dump().c_str());
  }
  return 0;
}

}  // namespace qft::cli
