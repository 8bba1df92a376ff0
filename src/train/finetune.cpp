#include "train/finetune.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <iomanip>
#include <optional>
#include <sstream>

#include <nlohmann/json.hpp>

#include "core/error.h"
#include "core/json_integer.h"
#include "core/memory.h"
#include "data/examples.h"
#include "dist/world.h"
#include "io/gguf.h"
#include "io/atomic_file.h"
#include "io/run_lock.h"
#include "io/state_file.h"
#include "model/gguf_export.h"
#include "model/hf_export.h"
#include "text/model_tokenizer.h"
#include "train/checkpoint.h"
#include "train/memory_plan.h"
#include "train/schedule.h"

namespace qft {
namespace {

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

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
  shuffle_indices(order, settings.seed * 1000003 + static_cast<uint64_t>(epoch));
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
          {"batch", settings.batch}, {"pack", settings.pack}, {"seed", settings.seed}};
}

nlohmann::json schedule_json(const LrSchedule& schedule) {
  return {{"lr", schedule.peak}, {"total_steps", schedule.total_steps}, {"warmup_steps", schedule.warmup_steps},
          {"min_lr_ratio", schedule.min_ratio}};
}

// OUT/metrics.jsonl and OUT/loss.svg, rebuilt from a checkpoint's records
// when resuming so they read as one run.
class MetricsLog {
 public:
  // Data-parallel, only rank 0 writes the files; every rank keeps the records.
  MetricsLog(const fs::path& out, std::string title, std::vector<nlohmann::json> records)
      : out_(out), title_(std::move(title)), records_(std::move(records)) {
    std::string text;
    for (const nlohmann::json& record : records_) {
      text += record.dump() + "\n";
      curve(record);
    }
    if (!dist::world().is_root()) return;
    write_file_atomically((out_ / "metrics.jsonl").string(), text);
    file_ = std::make_unique<AppendFile>((out_ / "metrics.jsonl").string());
  }
  void add(const nlohmann::json& record) {
    records_.push_back(record);
    curve(record);
    if (file_) file_->append(record.dump() + "\n");
    if (record.contains("eval_loss")) plot();
  }
  void plot() const {
    if (file_) write_file_atomically((out_ / "loss.svg").string(), loss_curve_svg(train_, eval_, title_));
  }
  const std::vector<nlohmann::json>& records() const { return records_; }
  std::optional<double> eval_loss_at(int step) const {
    for (const auto& [at, loss] : eval_) {
      if (at == step) return loss;
    }
    return std::nullopt;
  }

 private:
  void curve(const nlohmann::json& record) {
    const int step = json_integer<int>(record.at("step"), "a metrics record's 'step'");
    // A value that was not finite is stored as null.
    if (record.contains("loss") && record.at("loss").is_number()) train_.emplace_back(step, record.at("loss").get<double>());
    if (record.contains("eval_loss") && record.at("eval_loss").is_number()) {
      eval_.emplace_back(step, record.at("eval_loss").get<double>());
    }
  }

  fs::path out_;
  std::string title_;
  std::vector<nlohmann::json> records_;
  std::vector<std::pair<int, double>> train_, eval_;
  std::unique_ptr<AppendFile> file_;
};

// Between steps: the last step taken and the next micro-batch of its epoch.
struct DataPosition {
  int step = 0;
  int epoch = 0;
  size_t next_micro_batch = 0;
};

struct Resumed {
  DataPosition position;
  std::vector<nlohmann::json> metrics;
  int skipped = 0, consecutive_skips = 0;
};

Resumed resume_training(Training& training, const FinetuneSettings& settings, const nlohmann::json& fingerprint,
                        const LrSchedule& schedule, const std::function<void(const std::string&)>& log) {
  const ResumePoint point = training.load_checkpoint(settings.resume);
  const std::string manifest = point.directory + "/manifest.json";
  if (point.directory != settings.resume) {
    log(settings.resume + " is missing (a checkpoint write was interrupted); resuming from " + point.directory);
  }
  try {
    const nlohmann::json& state = point.trainer_state.at("finetune");
    expect_same_settings(state.at("data"), fingerprint, "data setting", manifest);
    if (state.at("schedule") != schedule_json(schedule)) {
      log("notice: the learning-rate schedule differs from the checkpoint's (" + state.at("schedule").dump() +
          " there, " + schedule_json(schedule).dump() + " here); continuing with this run's");
    }
    Resumed resumed;
    resumed.position = {point.step, json_integer<int>(state.at("epoch"), manifest + ": 'epoch'", 0),
                        json_integer<size_t>(state.at("next_micro_batch"), manifest + ": 'next_micro_batch'")};
    resumed.metrics = state.at("metrics").get<std::vector<nlohmann::json>>();
    const nlohmann::json skips = state.value("nonfinite", nlohmann::json::object());
    resumed.skipped = json_integer<int>(skips.value("skipped", nlohmann::json(0)), manifest + ": 'nonfinite.skipped'", 0);
    resumed.consecutive_skips =
        json_integer<int>(skips.value("consecutive", nlohmann::json(0)), manifest + ": 'nonfinite.consecutive'", 0);
    log("resumed from " + point.directory + " after step " + std::to_string(point.step));
    return resumed;
  } catch (const nlohmann::json::exception& error) {
    fail(manifest, ": not a qft finetune checkpoint (", error.what(), ")");
  }
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
    shuffle_indices(order, settings.seed);
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

// Prints the plan and refuses one that does not fit.
void check_memory_plan(const ModelConfig& config, const FinetuneSettings& settings, const std::vector<Example>& train,
                       const std::function<void(const std::string&)>& log) {
  size_t longest = 2;
  for (const Example& example : train) longest = std::max(longest, example.tokens.size());
  PlanSettings plan_settings;
  plan_settings.optimizer = settings.training.optimizer;
  plan_settings.lora = settings.training.lora;
  plan_settings.grad_accum = settings.training.grad_accum;
  plan_settings.seq_len = static_cast<int>(settings.pack ? static_cast<size_t>(settings.seq_len) : longest);
  plan_settings.batch = settings.batch;
  plan_settings.checkpointing = settings.training.checkpointing;
  plan_settings.outlier_fraction = settings.training.qft.outlier_fraction;
  plan_settings.ranks = dist::world().size();
  plan_settings.rank = dist::world().rank();
  const MemoryPlan plan = plan_memory(config, plan_settings);
  log(plan_table(plan, config, plan_settings));
  const size_t limit = settings.max_memory ? settings.max_memory : physical_memory_bytes();
  if (plan.peak > limit) {
    fail("the plan's peak of ", plan.peak / 1073741824.0, " GiB exceeds the allowed ", limit / 1073741824.0,
         " GiB (--max-memory); try --checkpointing, a smaller --batch or --seq-len, or --optimizer qlion");
  }
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
  if (!settings.training.lora && lora != "merged") fail("--export-lora ", lora, " needs --method lora");
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
  const std::string method = settings.training.lora ? "LoRA + " + settings.training.optimizer : settings.training.optimizer;
  return name.string() + " fine-tuned with " + method + " on " +
         fs::path(settings.data).filename().string();
}

std::string escape_xml(const std::string& text) {
  std::string escaped;
  for (const char c : text) {
    switch (c) {
      case '&': escaped += "&amp;"; break;
      case '<': escaped += "&lt;"; break;
      case '>': escaped += "&gt;"; break;
      case '"': escaped += "&quot;"; break;
      default: escaped += c;
    }
  }
  return escaped;
}

}  // namespace

std::vector<std::pair<int, double>> moving_average(const std::vector<std::pair<int, double>>& series, int window) {
  std::vector<std::pair<int, double>> averaged;
  double sum = 0;
  std::vector<double> finite;  // the finite losses so far, for a trailing window
  for (const auto& [step, loss] : series) {
    if (!std::isfinite(loss)) continue;
    finite.push_back(loss);
    sum += loss;
    if (finite.size() > static_cast<size_t>(window)) sum -= finite[finite.size() - 1 - window];
    averaged.emplace_back(step, sum / std::min<double>(finite.size(), window));
  }
  return averaged;
}

std::string loss_curve_svg(const std::vector<std::pair<int, double>>& train,
                           const std::vector<std::pair<int, double>>& eval, const std::string& title) {
  const double width = 760, height = 460, left = 70, right = 20, top = 60, bottom = 50;
  double max_step = 1, low = INFINITY, high = -INFINITY;
  for (const auto* series : {&train, &eval}) {
    for (const auto& [step, loss] : *series) {
      max_step = std::max(max_step, static_cast<double>(step));
      if (std::isfinite(loss)) low = std::min(low, loss), high = std::max(high, loss);
    }
  }
  if (!(low < high)) low -= 1, high += 1;
  const auto x = [&](double step) { return left + (width - left - right) * step / max_step; };
  const auto y = [&](double loss) { return top + (height - top - bottom) * (high - loss) / (high - low); };
  std::ostringstream svg;
  svg << std::fixed << std::setprecision(1);
  svg << "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"" << width << "\" height=\"" << height
      << "\" font-family=\"sans-serif\" font-size=\"12\">\n<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n";
  svg << "<text x=\"" << width / 2 << "\" y=\"22\" text-anchor=\"middle\" font-size=\"14\">" << escape_xml(title)
      << "</text>\n";
  svg << "<line x1=\"" << left << "\" y1=\"" << height - bottom << "\" x2=\"" << width - right << "\" y2=\""
      << height - bottom << "\" stroke=\"black\"/>\n<line x1=\"" << left << "\" y1=\"" << top << "\" x2=\"" << left
      << "\" y2=\"" << height - bottom << "\" stroke=\"black\"/>\n";
  for (int tick = 0; tick <= 4; ++tick) {
    const double loss = low + (high - low) * tick / 4, step = max_step * tick / 4;
    svg << "<text x=\"" << std::setprecision(1) << left - 6 << "\" y=\"" << y(loss) + 4 << "\" text-anchor=\"end\">"
        << std::setprecision(2) << loss << "</text>\n";
    svg << "<text x=\"" << std::setprecision(1) << x(step) << "\" y=\"" << height - bottom + 16
        << "\" text-anchor=\"middle\">" << std::setprecision(0) << step << "</text>\n";
  }
  svg << std::setprecision(1) << "<text x=\"" << (width + left) / 2 << "\" y=\"" << height - 12
      << "\" text-anchor=\"middle\">step</text>\n<text transform=\"translate(16," << (top + height - bottom) / 2
      << ") rotate(-90)\" text-anchor=\"middle\">loss (nats per token)</text>\n";
  double legend_x = left;  // one row of legend entries under the title: a line sample, then the name
  const auto legend = [&](const char* color, const char* style, const std::string& name) {
    svg << "<line x1=\"" << legend_x << "\" y1=\"38\" x2=\"" << legend_x + 24 << "\" y2=\"38\" stroke=\"" << color
        << "\" " << style << "/>\n<text x=\"" << legend_x + 30 << "\" y=\"42\">" << name << "</text>\n";
    legend_x += 30 + 7.0 * name.size() + 24;
  };
  const auto polyline = [&](const std::vector<std::pair<int, double>>& series, const char* color, const char* style) {
    svg << "<polyline fill=\"none\" stroke=\"" << color << "\" " << style << " points=\"";
    for (const auto& [step, loss] : series) {
      if (std::isfinite(loss)) svg << x(step) << "," << y(loss) << " ";
    }
    svg << "\"/>\n";
  };
  // About a tenth of the run, at least 5 steps (all of a shorter run), at most 50.
  const int steps = static_cast<int>(train.size());
  const int window = std::max(1, std::clamp(steps / 10, std::min(steps, 5), 50));
  const char* raw_style = "stroke-width=\"1\" stroke-opacity=\"0.3\"";
  const char* average_style = "stroke-width=\"2\"";
  const char* eval_style = "stroke-width=\"1\" stroke-dasharray=\"4 3\"";
  polyline(train, "#1f77b4", raw_style);
  polyline(moving_average(train, window), "#1f77b4", average_style);
  legend("#1f77b4", raw_style, "training loss per step");
  legend("#1f77b4", average_style, "training loss, mean of the last " + std::to_string(window) + " steps");
  if (!eval.empty()) {
    polyline(eval, "#d62728", eval_style);
    for (const auto& [step, loss] : eval) {
      if (std::isfinite(loss)) svg << "<circle cx=\"" << x(step) << "\" cy=\"" << y(loss) << "\" r=\"4\" fill=\"#d62728\"/>\n";
    }
    legend("#d62728", eval_style, "evaluation loss");
  }
  svg << "</svg>\n";
  return svg.str();
}

FinetuneResult run_finetune(const FinetuneSettings& settings, const FinetuneCallbacks& callbacks) {
  const auto& log = callbacks.log;
  if (settings.batch < 1 || settings.epochs < 1 || settings.seq_len < 2 || !(settings.lr > 0)) {
    fail("--batch, --epochs must be at least 1, --seq-len at least 2, --lr positive");
  }
  if (settings.eval_split < 0 || settings.eval_split >= 1) fail("--eval-split must be in [0, 1)");
  if (settings.save_every < 0) fail("--save-every must not be negative");
  if (settings.max_skips < 1) fail("--max-skips must be at least 1");
  const fs::path out(settings.out);
  if (fs::exists(out / "model")) fail((out / "model").string(), ": already exists; choose a new --out");
  if (fs::exists(out) && !fs::is_directory(out)) fail(settings.out, ": exists and is not a directory");
  const std::string checkpoint = settings.checkpoint.empty() ? (out / "checkpoint").string() : settings.checkpoint;

  const ModelSource source = ModelSource::open(settings.model);
  const PreparedData data = prepare_data(settings, log);
  // Data-parallel: a step takes the next ranks × grad_accum micro-batches of
  // the epoch, rank r those at r, r + ranks, r + 2·ranks, …
  const dist::World& world = dist::world();
  const int grad_accum = settings.training.grad_accum, per_step = grad_accum * world.size();
  // A last group of fewer than per_step micro-batches is left out of its epoch.
  const int steps_per_epoch = static_cast<int>(micro_batches(data.train, settings, 0).size() / per_step);
  if (steps_per_epoch == 0) {
    fail(settings.data, ": fewer micro-batches than --grad-accum ", grad_accum, world.distributed() ? " x " + std::to_string(world.size()) + " ranks" : "");
  }
  const int total_steps = settings.max_steps > 0 ? settings.max_steps : steps_per_epoch * settings.epochs;
  check_memory_plan(source.config(), settings, data.train, log);
  log(std::to_string(data.train.size()) + " training and " + std::to_string(data.eval.size()) +
      " evaluation sequences; " + std::to_string(total_steps) + " steps (" + std::to_string(steps_per_epoch) +
      " per epoch)");

  const LrSchedule schedule{settings.lr, total_steps, static_cast<int>(std::round(settings.warmup_ratio * total_steps)),
                            settings.min_lr_ratio};
  const nlohmann::json fingerprint = data_fingerprint(data.train, settings);
  const ExportPlan exports = export_plan(source, *data.tokenizer, settings);
  // Data-parallel, rank 0 alone creates, locks and writes OUT.
  const bool out_is_new = !fs::exists(out);
  if (world.is_root()) fs::create_directories(out);
  std::unique_ptr<Training> training;
  std::optional<RunLock> out_lock, checkpoint_lock;  // held until the run returns
  Resumed resumed;
  try {  // a refused lock or resume leaves no new --out behind either
    if (world.is_root()) {
      out_lock.emplace((out / ".qft.lock").string(), settings.out);
      checkpoint_lock.emplace(sibling_lock_file(checkpoint), checkpoint);
      if (!settings.settings_file.empty()) write_file_atomically((out / "settings.yaml").string(), settings.settings_file);
    }
    training = make_training(source, settings.training);
    if (!settings.resume.empty()) resumed = resume_training(*training, settings, fingerprint, schedule, log);
    // Hours of training must not end at a full disk: room for a checkpoint and the export, now.
    const uint64_t checkpoint_bytes = training->checkpoint_bytes();  // all ranks' shares
    if (world.is_root()) {
      require_free_space({{fs::path(checkpoint).parent_path().string(), checkpoint_bytes, "a checkpoint"},
                          {settings.out, export_bytes(exports, *training), "the export"}});
    }
  } catch (...) {
    if (out_is_new && world.is_root()) fs::remove_all(out);
    throw;
  }
  MetricsLog metrics(out, plot_title(settings), std::move(resumed.metrics));
  DataPosition position = resumed.position;
  NonFiniteGuard guard(settings.on_nonfinite, settings.max_skips, resumed.skipped, resumed.consecutive_skips);
  int checkpoint_step = settings.resume.empty() ? -1 : position.step;  // of the last checkpoint written or read

  const auto record_eval = [&](int step) {
    const double loss = evaluate_all(*training, data.eval, settings);
    if (std::isnan(loss)) return loss;
    metrics.add({{"step", step}, {"eval_loss", loss}});
    FinetuneProgress report;
    report.step = step;
    report.total_steps = total_steps;
    report.eval_loss = loss;
    callbacks.progress(report);
    return loss;
  };
  FinetuneResult result;
  const auto save_checkpoint = [&] {
    training->save_checkpoint(checkpoint, {{"finetune",
                                            {{"data", fingerprint},
                                             {"schedule", schedule_json(schedule)},
                                             {"epoch", position.epoch},
                                             {"next_micro_batch", position.next_micro_batch},
                                             {"metrics", metrics.records()},
                                             {"nonfinite", {{"skipped", guard.skipped()}, {"consecutive", guard.consecutive()}}}}}});
    result.checkpoint = checkpoint;
    checkpoint_step = position.step;
  };
  const auto stop_for_nonfinite = [&] {
    metrics.plot();
    fail(guard.stop_reason(), checkpoint_step >= 0 ? "; the last checkpoint is " + checkpoint + " (step " +
                                                         std::to_string(checkpoint_step) + ", continue with --resume)"
                                                   : "; no checkpoint was written (--save-every N keeps one)");
  };

  result.eval_loss_before = position.step == 0 ? record_eval(0) : metrics.eval_loss_at(0).value_or(NAN);
  const auto start = Clock::now();
  const int first_step = position.step + 1;
  for (int epoch = position.epoch; position.step < total_steps; ++epoch) {
    // A resumed run starts inside the epoch of its checkpoint, which has begun.
    const bool begun = epoch == position.epoch && position.step > 0;
    if (epoch > 0 && !begun) training->new_epoch();
    size_t first = begun ? position.next_micro_batch : 0;
    const auto batches = micro_batches(data.train, settings, epoch);
    for (; first + per_step <= batches.size() && position.step < total_steps; first += per_step) {
      const int step = position.step + 1;
      std::vector<Batch> step_batches;
      int64_t tokens = 0;
      for (int i = 0; i < grad_accum; ++i) {
        step_batches.push_back(make_training_batch(batches[first + world.rank() + static_cast<size_t>(i) * world.size()]));
        tokens += step_batches.back().size();
      }
      tokens = world.sum(tokens);
      const auto step_start = Clock::now();
      const float lr = schedule.at(step);
      const double loss = training->step(step, lr, step_batches);
      if (settings.check_replicas) training->check_replicas();
      const double seconds = std::chrono::duration<double>(Clock::now() - step_start).count();
      const double elapsed = std::chrono::duration<double>(Clock::now() - start).count();
      position = {step, epoch, first + per_step};
      if (const auto outcome = guard.judge(step, training->nonfinite()); outcome != NonFiniteGuard::Outcome::Applied) {
        nlohmann::json record = guard.record(step, *training->nonfinite(), outcome);
        record["epoch"] = epoch + 1;
        metrics.add(record);
        if (outcome == NonFiniteGuard::Outcome::Stop) stop_for_nonfinite();
        log("step " + std::to_string(step) + " skipped: " + training->nonfinite()->describe() + " is NaN or Inf (" +
            std::to_string(guard.skipped()) + " skipped so far)");
      } else {
        metrics.add({{"step", step}, {"epoch", epoch + 1}, {"loss", loss}, {"lr", lr}, {"tokens", tokens},
                     {"seconds", seconds}});
        callbacks.progress({step, total_steps, epoch + 1, loss, lr, tokens / seconds,
                            elapsed / (step - first_step + 1) * (total_steps - step), memory_stats().total_current,
                            std::nullopt});
      }
      if (settings.eval_every > 0 && step % settings.eval_every == 0 && step < total_steps) record_eval(step);
      const bool stop = world.any(callbacks.stop_requested());  // every rank stops at the same step
      if (stop || (settings.save_every > 0 && step % settings.save_every == 0)) save_checkpoint();
      if (stop) {
        metrics.plot();
        result.steps = step;
        result.stopped = true;
        result.skipped_steps = guard.skipped();
        return result;
      }
    }
  }
  result.steps = position.step;
  result.skipped_steps = guard.skipped();
  if (guard.skipped() > 0) log(std::to_string(guard.skipped()) + " steps were skipped for a NaN or Inf loss or gradient");
  result.eval_loss_after = record_eval(position.step);
  metrics.plot();
  if (world.is_root()) export_model(*training, source, exports, settings, result);
  return result;
}

}  // namespace qft
