#include "train/trainer.h"

#include <chrono>
#include <filesystem>

#include "core/error.h"
#include "core/json_integer.h"
#include "core/memory.h"
#include "dist/world.h"

namespace qft {
namespace {

using Clock = std::chrono::steady_clock;

double seconds_since(Clock::time_point start) { return std::chrono::duration<double>(Clock::now() - start).count(); }

std::string parent_of(const std::string& path) { return std::filesystem::path(path).parent_path().string(); }

}  // namespace

Trainer::Trainer(const ModelSource& source, TrainerSettings settings, TrainingData& data, TrainerHooks hooks)
    : settings_(std::move(settings)),
      data_(data),
      hooks_(std::move(hooks)),
      guard_(settings_.on_nonfinite, settings_.max_skips) {
  if (!hooks_.learning_rate) fail("a trainer needs a learning rate");
  if (settings_.save_every < 0) fail("--save-every must not be negative");
  check_plan(source.config());
  const dist::World& world = dist::world();
  // Data-parallel, rank 0 holds the lock and writes what every rank shares.
  if (!settings_.checkpoint.empty() && world.is_root()) {
    checkpoint_lock_.emplace(sibling_lock_file(settings_.checkpoint), settings_.checkpoint);
  }
  training_ = make_training(source, settings_.training);
  if (!settings_.resume.empty()) resume();
  // Hours of training must not end at a full disk: room for a checkpoint and the rest, now.
  std::vector<SpaceNeed> needs = hooks_.space_needs ? hooks_.space_needs(*training_) : std::vector<SpaceNeed>{};
  if (!settings_.checkpoint.empty()) {
    needs.insert(needs.begin(), {parent_of(settings_.checkpoint), training_->checkpoint_bytes(), "a checkpoint"});
  }
  if (world.is_root()) require_free_space(needs);
}

Trainer::~Trainer() = default;

// The plan of this rank for the longest micro-batch the data can make.
void Trainer::check_plan(const ModelConfig& config) {
  PlanShape shape = data_.plan_shape();
  shape.ranks = dist::world().size();
  shape.rank = dist::world().rank();
  plan_ = plan_memory(config, settings_.training, shape);
  const size_t limit = settings_.max_memory ? settings_.max_memory : physical_memory_bytes();
  if (hooks_.planned) hooks_.planned(plan_, plan_table(plan_, config, settings_.training, shape), plan_.peak <= limit);
  if (plan_.peak > limit) {
    fail("the plan's peak of ", plan_.peak / 1073741824.0, " GiB exceeds the allowed ", limit / 1073741824.0,
         " GiB (--max-memory); ", settings_.memory_advice);
  }
}

void Trainer::resume() {
  const ResumePoint point = training_->load_checkpoint(settings_.resume);
  const std::string where = point.directory + "/manifest.json";
  if (point.directory != settings_.resume) {
    log(settings_.resume + " is missing (a checkpoint write was interrupted); resuming from " + point.directory);
  }
  try {
    const std::string key = data_.state_key();
    const nlohmann::json& state = key.empty() ? point.trainer_state : point.trainer_state.at(key);
    data_.seek(state, where);
    if (hooks_.resumed) hooks_.resumed(state, where);
    const nlohmann::json skips = state.value("nonfinite", nlohmann::json::object());
    guard_ = NonFiniteGuard(settings_.on_nonfinite, settings_.max_skips,
                            json_integer<int>(skips.value("skipped", nlohmann::json(0)), where + ": 'nonfinite.skipped'", 0),
                            json_integer<int>(skips.value("consecutive", nlohmann::json(0)),
                                              where + ": 'nonfinite.consecutive'", 0));
  } catch (const nlohmann::json::exception& error) {
    fail(where, ": not a ", data_.command(), " checkpoint (", error.what(), ")");
  }
  first_step_ = point.step + 1;
  checkpoint_step_ = result_.last_step = point.step;
  log("resumed from " + point.directory + " after step " + std::to_string(point.step));
}

std::vector<Batch> Trainer::next_micro_batches(int64_t* tokens) {
  const dist::World& world = dist::world();
  const int per_step = settings_.training.grad_accum * world.size();
  for (int epochs = data_.next_step(per_step); epochs > 0; --epochs) training_->new_epoch();
  std::vector<Batch> mine;
  int64_t rows = 0;
  for (int i = world.rank(); i < per_step; i += world.size()) {
    mine.push_back(data_.micro_batch(i));
    rows += mine.back().size();
  }
  *tokens = world.sum(rows);
  return mine;
}

TrainerResult Trainer::run() {
  const dist::World& world = dist::world();
  const int steps = settings_.steps;
  if (first_step_ > steps) log("the checkpoint is at step " + std::to_string(first_step_ - 1) + " of " +
                               std::to_string(steps) + ": nothing to train");
  const auto start = Clock::now();
  for (int step = first_step_; step <= steps; ++step) {
    StepReport report{step, steps, 0, 0.0, hooks_.learning_rate(step)};
    const std::vector<Batch> batches = next_micro_batches(&report.tokens);
    report.epoch = data_.epoch();
    const auto step_start = Clock::now();
    report.loss = training_->step(step, report.lr, batches);
    report.seconds = seconds_since(step_start);
    if (settings_.check_replicas) training_->check_replicas();
    report.seconds_left = seconds_since(start) / (step - first_step_ + 1) * (steps - step);
    report.memory_bytes = memory_stats().total_current;
    result_.last_step = step;
    judge(report);
    if (hooks_.after_step) hooks_.after_step(step);
    const bool stop = world.any(hooks_.stop_requested && hooks_.stop_requested());  // every rank at the same step
    const bool due = (settings_.save_every > 0 && step % settings_.save_every == 0) ||
                     (settings_.save_last_step && step == steps);
    if (!settings_.checkpoint.empty() && (stop || due)) save_checkpoint(step);
    if (stop) {
      result_.stopped = true;
      break;
    }
  }
  result_.skipped_steps = guard_.skipped();
  if (!result_.stopped && guard_.skipped() > 0) {
    log(std::to_string(guard_.skipped()) + " steps were skipped for a NaN or Inf loss or gradient");
  }
  return result_;
}

void Trainer::judge(const StepReport& report) {
  const std::optional<NonFinite>& finding = training_->nonfinite();
  const NonFiniteGuard::Outcome outcome = guard_.judge(report.step, finding);
  if (outcome == NonFiniteGuard::Outcome::Applied) {
    if (hooks_.step_applied) hooks_.step_applied(report);
    return;
  }
  const bool stopping = outcome == NonFiniteGuard::Outcome::Stop;
  if (hooks_.step_skipped) hooks_.step_skipped(report, *finding, guard_.record(report.step, *finding, outcome), stopping);
  if (stopping) stop_for_nonfinite();
}

void Trainer::stop_for_nonfinite() const {
  if (checkpoint_step_ >= 0) {
    fail(guard_.stop_reason(), "; the last checkpoint is ", settings_.checkpoint, " (step ", checkpoint_step_,
         ", continue with --resume)");
  }
  fail(guard_.stop_reason(), "; no checkpoint was written (",
       settings_.checkpoint.empty() ? "--checkpoint DIR --save-every N" : "--save-every N", " keeps one)");
}

void Trainer::save_checkpoint(int step) {
  nlohmann::json state = data_.position();
  state["nonfinite"] = {{"skipped", guard_.skipped()}, {"consecutive", guard_.consecutive()}};
  if (hooks_.save_state) hooks_.save_state(state);
  const std::string key = data_.state_key();
  training_->save_checkpoint(settings_.checkpoint, key.empty() ? state : nlohmann::json{{key, state}});
  result_.checkpoint = settings_.checkpoint;
  checkpoint_step_ = step;
}

void Trainer::log(const std::string& line) const {
  if (hooks_.log) hooks_.log(line);
}

}  // namespace qft
