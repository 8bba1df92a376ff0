#include "train/finetune.h"

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <optional>

#include <nlohmann/json.hpp>

#include "core/error.h"
#include "core/json_integer.h"
#include "data/examples.h"
#include "dist/world.h"
#include "io/gguf.h"
#include "io/atomic_file.h"
#include "io/run_lock.h"
#include "io/state_file.h"
#include "model/gguf_export.h"
#include "model/hf_export.h"
#include "text/model_tokenizer.h"
#include "report/metrics_log.h"
#include "train/checkpoint.h"
#include "train/optimizers.h"
#include "train/schedule.h"

namespace qft {
namespace {

namespace fs = std::filesystem;

// A record the template refuses (its own raise_exception, say) is skipped with
// its file and line, or fails the run under --strict.
std::vector<Example> tokenize_all(const std::vector<DataRecord>& records, const std::string& path,
                                  const Tokenizer& tokenizer, const ChatTemplate* chat, const FinetuneSettings& settings,
                                  const std::function<void(const std::string&)>& log) {
  std::vector<Example> examples;
  for (const DataRecord& record : records) {
    Example example;
    try {
      example = tokenize_record(record, tokenizer, chat, settings.train_on_prompt);
    } catch (const Error& error) {
      const std::string where = path + ":" + std::to_string(record.line) + ": " + error.what();
      if (settings.strict) fail(where);
      log("skipped " + where);
      continue;
    }
    for (Example& segment : split_into_segments(example, settings.seq_len)) examples.push_back(std::move(segment));
  }
  return examples;
}

// Micro-batches of an epoch: the examples in a seeded order, grouped by count
// or, packed, by a budget of batch × seq_len tokens.
std::vector<std::vector<const Example*>> micro_batches(const std::vector<Example>& examples,
                                                       const FinetuneSettings& settings, int epoch) {
  std::vector<size_t> order(examples.size());
  for (size_t i = 0; i < order.size(); ++i) order[i] = i;
  shuffle_indices(order, settings.run.training.seed * 1000003 + static_cast<uint64_t>(epoch));
  std::vector<std::vector<const Example*>> batches;
  const size_t budget = static_cast<size_t>(settings.batch) * settings.seq_len;
  size_t tokens = 0;
  for (size_t index : order) {
    const Example& example = examples[index];
    const bool full = !batches.empty() && (settings.pack ? tokens + example.tokens.size() > budget
                                                         : batches.back().size() == static_cast<size_t>(settings.batch));
    if (batches.empty() || full) {
      batches.emplace_back();
      tokens = 0;
    }
    batches.back().push_back(&example);
    tokens += example.tokens.size();
  }
  return batches;
}

// qft finetune's data: the training examples' micro-batches, epoch after
// epoch in a seeded order; a last group of fewer than a step's is left out
// of its epoch.
class InstructionBatches final : public TrainingData {
 public:
  InstructionBatches(const std::vector<Example>& examples, const FinetuneSettings& settings, nlohmann::json fingerprint)
      : examples_(examples), settings_(settings), fingerprint_(std::move(fingerprint)) {}

  // Packed, a micro-batch holds up to seq_len × batch tokens; else the longest examples.
  PlanShape plan_shape() const override {
    size_t longest = 2;
    for (const Example& example : examples_) longest = std::max(longest, example.tokens.size());
    PlanShape shape;
    shape.seq_len = static_cast<int>(settings_.pack ? static_cast<size_t>(settings_.seq_len) : longest);
    shape.batch = settings_.batch;
    return shape;
  }
  // Steps of `count` micro-batches an epoch holds.
  int steps_per_epoch(int count) const { return static_cast<int>(batches(0).size() / count); }

  // On to the next epoch while this one has no `count` micro-batches left
  // (packing can leave an epoch with fewer than a step's).
  int next_step(int count) override {
    int new_epochs = 0;
    while (next_ + count > epoch_batches().size()) ++epoch_, next_ = 0, ++new_epochs;
    first_ = next_;
    next_ += count;
    return new_epochs;
  }
  Batch micro_batch(int i) const override { return make_training_batch(epoch_batches().at(first_ + i)); }
  int epoch() const override { return epoch_ + 1; }

  nlohmann::json position() const override {
    return {{"data", fingerprint_}, {"epoch", epoch_}, {"next_micro_batch", next_}};
  }
  void seek(const nlohmann::json& position, const std::string& where) override {
    expect_same_settings(position.at("data"), fingerprint_, "data setting", where);
    epoch_ = json_integer<int>(position.at("epoch"), where + ": 'epoch'", 0);
    next_ = json_integer<size_t>(position.at("next_micro_batch"), where + ": 'next_micro_batch'");
  }
  const char* command() const override { return "qft finetune"; }
  const char* state_key() const override { return "finetune"; }

 private:
  std::vector<std::vector<const Example*>> batches(int epoch) const { return micro_batches(examples_, settings_, epoch); }
  const std::vector<std::vector<const Example*>>& epoch_batches() const {
    if (cached_epoch_ != epoch_) cached_ = batches(epoch_), cached_epoch_ = epoch_;
    return cached_;
  }

  const std::vector<Example>& examples_;
  const FinetuneSettings& settings_;
  nlohmann::json fingerprint_;
  int epoch_ = 0;
  size_t first_ = 0, next_ = 0;  // the current step's micro-batches, and the next one's
  mutable int cached_epoch_ = -1;
  mutable std::vector<std::vector<const Example*>> cached_;
};

// Data-parallel, rank r scores batches r, r + N, … and the sums are shared.
double evaluate_all(Training& training, const std::vector<Example>& examples, const FinetuneSettings& settings) {
  if (examples.empty()) return NAN;
  const dist::World& world = dist::world();
  double loss_sum = 0.0;
  int64_t predicted = 0;
  FinetuneSettings by_tokens = settings;
  by_tokens.pack = true;
  const auto groups = micro_batches(examples, by_tokens, -1);
  for (size_t g = world.rank(); g < groups.size(); g += world.size()) {
    const Batch batch = make_training_batch(groups[g]);
    if (batch.predicted == 0) continue;
    loss_sum += training.evaluate(batch) * static_cast<double>(batch.predicted);
    predicted += batch.predicted;
  }
  loss_sum = world.sum(loss_sum);
  predicted = world.sum(predicted);
  return predicted ? loss_sum / static_cast<double>(predicted) : NAN;
}

// What fixes the sequence of micro-batches: a resumed run must agree on it.
nlohmann::json data_fingerprint(const std::vector<Example>& train, const FinetuneSettings& settings) {
  uint64_t hash = train.size();
  for (const Example& example : train) {
    hash = xxh64(example.tokens.data(), example.tokens.size() * sizeof(int), hash);
    hash = xxh64(example.trained.data(), example.trained.size(), hash);
  }
  return {{"examples", train.size()}, {"examples_checksum", hex64(hash)}, {"seq_len", settings.seq_len},
          {"batch", settings.batch}, {"pack", settings.pack}, {"seed", settings.run.training.seed}};
}

nlohmann::json schedule_json(const LrSchedule& schedule) {
  return {{"lr", schedule.peak}, {"total_steps", schedule.total_steps}, {"warmup_steps", schedule.warmup_steps},
          {"min_lr_ratio", schedule.min_ratio}};
}

struct PreparedData {
  std::unique_ptr<Tokenizer> tokenizer;
  std::vector<Example> train, eval;
};

PreparedData prepare_data(const FinetuneSettings& settings, const std::function<void(const std::string&)>& log) {
  PreparedData prepared;
  prepared.tokenizer = load_model_tokenizer(settings.model);
  DataSet data = read_instruction_data(settings.data, settings.data_format, settings.strict);
  for (const std::string& skipped : data.skipped) log("skipped " + skipped);
  std::optional<ChatTemplate> chat;
  if (data.format != DataFormat::Text) {
    chat = ChatTemplate::choose(settings.chat_template, prepared.tokenizer->chat_template());
  }
  // Hold out the evaluation records: another file, or a seeded slice of this one.
  std::vector<DataRecord> train_records = std::move(data.records), eval_records;
  if (!settings.eval_data.empty()) {
    eval_records = read_instruction_data(settings.eval_data, data.format, settings.strict).records;
  } else if (settings.eval_split > 0) {
    std::vector<size_t> order(train_records.size());
    for (size_t i = 0; i < order.size(); ++i) order[i] = i;
    shuffle_indices(order, settings.run.training.seed);
    const size_t held = std::max<size_t>(1, static_cast<size_t>(std::ceil(settings.eval_split * order.size())));
    std::vector<DataRecord> kept;
    for (size_t i = 0; i < order.size(); ++i) (i < held ? eval_records : kept).push_back(train_records[order[i]]);
    train_records = std::move(kept);
  }
  const ChatTemplate* template_used = chat ? &*chat : nullptr;
  prepared.train = tokenize_all(train_records, settings.data, *prepared.tokenizer, template_used, settings, log);
  prepared.eval = tokenize_all(eval_records, settings.eval_data.empty() ? settings.data : settings.eval_data,
                               *prepared.tokenizer, template_used, settings, log);
  if (prepared.train.empty()) fail(settings.data, ": no example has a token to train on");
  return prepared;
}

// What the export writes: OUT/model (HF) and, with --export-gguf, OUT/model.gguf;
// for LoRA, as --export-lora says, the merged model there and/or OUT/adapter.
struct ExportPlan {
  bool merged = true, adapter = false;
  HfExport hf;
  GgufExport gguf;
  uint64_t bytes = 0;  // of the merged model's files; the adapter's are known once training exists
};

ExportPlan export_plan(const ModelSource& source, const Tokenizer& tokenizer, const FinetuneSettings& settings) {
  ExportPlan plan;
  const std::string& lora = settings.export_lora;
  if (lora != "merged" && lora != "adapter" && lora != "both") {
    fail("--export-lora must be merged, adapter or both, got '", lora, "'");
  }
  if (!settings.run.training.lora && lora != "merged") fail("--export-lora ", lora, " needs --method lora");
  plan.merged = lora != "adapter";
  plan.adapter = lora != "merged";
  if (!plan.merged && settings.export_gguf) fail("--export-gguf writes the merged model: use --export-lora both");
  plan.hf.dtype = parse_export_dtype(settings.export_dtype);
  plan.hf.files = tokenizer_files(tokenizer);
  plan.hf.bos_token_id = tokenizer.bos_id().value_or(-1);
  plan.hf.eos_token_id = tokenizer.eos_id().value_or(-1);
  plan.hf.pad_token_id = tokenizer.pad_id().value_or(-1);
  plan.gguf.matrix_type = parse_gguf_matrix_type(settings.export_dtype);
  plan.gguf.add_tokenizer = [&source, &tokenizer](GgufWriter& writer) {
    if (source.gguf()) copy_gguf_tokenizer(writer, *source.gguf());
    else add_gguf_tokenizer(writer, tokenizer);
  };
  if (plan.merged) {
    plan.bytes = export_hf_bytes(source.config(), plan.hf) +
                 (settings.export_gguf ? export_gguf_bytes(source.config(), plan.gguf) : 0);
  }
  return plan;
}

uint64_t export_bytes(const ExportPlan& plan, const Training& training) {
  return plan.bytes + (plan.adapter ? training.adapter_bytes() : 0);
}

void export_model(Training& training, const ModelSource& source, const ExportPlan& plan,
                  const FinetuneSettings& settings, FinetuneResult& result) {
  const auto fill = [&](size_t i, float* values) { training.parameter(i, values); };
  // Every file or none: the space for all of them is checked before the first.
  require_free_space(settings.out, export_bytes(plan, training), "the export");
  if (plan.adapter) {
    result.adapter_directory = (fs::path(settings.out) / "adapter").string();
    training.export_adapter(result.adapter_directory, fs::absolute(settings.model).lexically_normal().string());
  }
  if (!plan.merged) return;
  result.model_directory = (fs::path(settings.out) / "model").string();
  export_hf_model(result.model_directory, source.config(), fill, plan.hf);
  if (settings.export_gguf) {
    export_gguf_model((fs::path(settings.out) / "model.gguf").string(), source.config(), fill, plan.gguf);
  }
}

std::string plot_title(const FinetuneSettings& settings) {
  const fs::path model = fs::path(settings.model).lexically_normal();
  const fs::path name = model.has_filename() ? model.filename() : model.parent_path().filename();
  const std::string optimizer = optimizer_name(settings.run.training.optimizer);
  const std::string method = settings.run.training.lora ? "LoRA + " + optimizer : optimizer;
  return name.string() + " fine-tuned with " + method + " on " +
         fs::path(settings.data).filename().string();
}

void check_settings(const FinetuneSettings& settings) {
  if (settings.batch < 1 || settings.epochs < 1 || settings.seq_len < 2 || !(settings.lr > 0)) {
    fail("--batch, --epochs must be at least 1, --seq-len at least 2, --lr positive");
  }
  if (settings.eval_split < 0 || settings.eval_split >= 1) fail("--eval-split must be in [0, 1)");
  if (settings.run.max_skips < 1) fail("--max-skips must be at least 1");
  const fs::path out(settings.out);
  if (fs::exists(out / "model")) fail((out / "model").string(), ": already exists; choose a new --out");
  if (fs::exists(out) && !fs::is_directory(out)) fail(settings.out, ": exists and is not a directory");
}

// One run of run_finetune: the data, the schedule, the trainer and its
// hooks (metrics, evaluation, progress), and the export at the end.
class Finetune {
 public:
  Finetune(const FinetuneSettings& settings, const FinetuneCallbacks& callbacks)
      : settings_(settings),
        callbacks_(callbacks),
        source_(ModelSource::open(settings.model)),
        data_(prepare_data(settings, callbacks.log)),
        batches_(data_.train, settings, data_fingerprint(data_.train, settings)),
        run_(trainer_settings()),
        schedule_{settings.lr, run_.steps, static_cast<int>(std::round(settings.warmup_ratio * run_.steps)),
                  settings.min_lr_ratio},
        exports_(export_plan(source_, *data_.tokenizer, settings)) {}

  FinetuneResult run() {
    start();
    FinetuneResult result;
    result.eval_loss_before = trainer_->first_step() == 1 ? record_eval(0) : metrics_->eval_loss_at(0).value_or(NAN);
    const TrainerResult trained = trainer_->run();
    result.steps = trained.last_step;
    result.stopped = trained.stopped;
    result.checkpoint = trained.checkpoint;
    result.skipped_steps = trained.skipped_steps;
    if (!trained.stopped) result.eval_loss_after = record_eval(trained.last_step);
    metrics_->plot();
    if (!trained.stopped && dist::world().is_root()) export_model(trainer_->training(), source_, exports_, settings_, result);
    return result;
  }

 private:
  // The steps the data and --epochs (or --max-steps) make; checkpoints in OUT/checkpoint by default.
  TrainerSettings trainer_settings() const {
    TrainerSettings run = settings_.run;
    const int grad_accum = run.training.grad_accum, ranks = dist::world().size();
    const int steps_per_epoch = batches_.steps_per_epoch(grad_accum * ranks);
    if (steps_per_epoch == 0) {
      fail(settings_.data, ": fewer micro-batches than --grad-accum ", grad_accum,
           ranks > 1 ? " x " + std::to_string(ranks) + " ranks" : "");
    }
    run.steps = settings_.max_steps > 0 ? settings_.max_steps : steps_per_epoch * settings_.epochs;
    if (run.checkpoint.empty()) run.checkpoint = (fs::path(settings_.out) / "checkpoint").string();
    run.memory_advice = "try --checkpointing, a smaller --batch or --seq-len, or --optimizer qlion";
    callbacks_.log(std::to_string(data_.train.size()) + " training and " + std::to_string(data_.eval.size()) +
                   " evaluation sequences; " + std::to_string(run.steps) + " steps (" + std::to_string(steps_per_epoch) +
                   " per epoch)");
    return run;
  }

  // OUT is made (by rank 0) and locked, and the trainer set up; a run
  // refused on the way leaves no new OUT behind.
  void start() {
    const fs::path out(settings_.out);
    const bool out_is_new = !fs::exists(out);
    const bool root = dist::world().is_root();
    if (root) fs::create_directories(out);
    try {
      if (root) {
        out_lock_.emplace((out / ".qft.lock").string(), settings_.out);
        if (!settings_.settings_file.empty()) write_file_atomically((out / "settings.yaml").string(), settings_.settings_file);
      }
      trainer_ = std::make_unique<Trainer>(source_, run_, batches_, hooks());
    } catch (...) {
      if (out_is_new && root) fs::remove_all(out);
      throw;
    }
    metrics_ = std::make_unique<MetricsLog>(out, plot_title(settings_), std::move(resumed_metrics_));
  }

  TrainerHooks hooks() {
    TrainerHooks hooks;
    hooks.log = callbacks_.log;
    hooks.planned = [this](const MemoryPlan&, const std::string& table, bool) { callbacks_.log(table); };
    hooks.learning_rate = [this](int step) { return schedule_.at(step); };
    hooks.step_applied = [this](const StepReport& step) { applied(step); };
    hooks.step_skipped = [this](const StepReport& step, const NonFinite& finding, const nlohmann::json& record,
                                bool stopping) { skipped(step, finding, record, stopping); };
    hooks.after_step = [this](int step) {
      if (settings_.eval_every > 0 && step % settings_.eval_every == 0 && step < run_.steps) record_eval(step);
    };
    hooks.stop_requested = callbacks_.stop_requested;
    hooks.save_state = [this](nlohmann::json& state) {
      state["schedule"] = schedule_json(schedule_);
      state["metrics"] = metrics_->records();
    };
    hooks.resumed = [this](const nlohmann::json& state, const std::string&) { resumed(state); };
    hooks.space_needs = [this](const Training& training) {
      return std::vector<SpaceNeed>{{settings_.out, export_bytes(exports_, training), "the export"}};
    };
    return hooks;
  }

  void applied(const StepReport& step) {
    metrics_->add({{"step", step.step}, {"epoch", step.epoch}, {"loss", step.loss}, {"lr", step.lr},
                   {"tokens", step.tokens}, {"seconds", step.seconds}});
    callbacks_.progress({step.step, step.total_steps, step.epoch, step.loss, step.lr, step.tokens / step.seconds,
                         step.seconds_left, step.memory_bytes, std::nullopt});
  }

  void skipped(const StepReport& step, const NonFinite& finding, nlohmann::json record, bool stopping) {
    record["epoch"] = step.epoch;
    metrics_->add(record);
    if (stopping) return metrics_->plot();
    callbacks_.log("step " + std::to_string(step.step) + " skipped: " + finding.describe() + " is NaN or Inf (" +
                   record.at("skipped_steps").dump() + " skipped so far)");
  }

  // A changed schedule is allowed, with a notice (a run extended by --max-steps, say).
  void resumed(const nlohmann::json& state) {
    if (state.at("schedule") != schedule_json(schedule_)) {
      callbacks_.log("notice: the learning-rate schedule differs from the checkpoint's (" + state.at("schedule").dump() +
                     " there, " + schedule_json(schedule_).dump() + " here); continuing with this run's");
    }
    resumed_metrics_ = state.at("metrics").get<std::vector<nlohmann::json>>();
  }

  double record_eval(int step) {
    const double loss = evaluate_all(trainer_->training(), data_.eval, settings_);
    if (std::isnan(loss)) return loss;
    metrics_->add({{"step", step}, {"eval_loss", loss}});
    FinetuneProgress report;
    report.step = step;
    report.total_steps = run_.steps;
    report.eval_loss = loss;
    callbacks_.progress(report);
    return loss;
  }

  const FinetuneSettings& settings_;
  const FinetuneCallbacks& callbacks_;
  const ModelSource source_;
  const PreparedData data_;
  InstructionBatches batches_;
  const TrainerSettings run_;
  const LrSchedule schedule_;
  const ExportPlan exports_;
  std::optional<RunLock> out_lock_;  // held until the run returns
  std::unique_ptr<Trainer> trainer_;
  std::vector<nlohmann::json> resumed_metrics_;
  std::unique_ptr<MetricsLog> metrics_;
};

}  // namespace

FinetuneResult run_finetune(const FinetuneSettings& settings, const FinetuneCallbacks& callbacks) {
  check_settings(settings);
  return Finetune(settings, callbacks).run();
}

}  // namespace qft
