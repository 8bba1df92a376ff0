#include "report/metrics_log.h"

#include "core/json_integer.h"
#include "dist/world.h"
#include "report/loss_plot.h"

namespace qft {

MetricsLog::MetricsLog(const std::filesystem::path& out, std::string title, std::vector<nlohmann::json> records)
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

void MetricsLog::add(const nlohmann::json& record) {
  records_.push_back(record);
  curve(record);
  if (file_) file_->append(record.dump() + "\n");
  if (record.contains("eval_loss")) plot();
}

void MetricsLog::plot() const {
  if (file_) write_file_atomically((out_ / "loss.svg").string(), loss_curve_svg(train_, eval_, title_));
}

std::optional<double> MetricsLog::eval_loss_at(int step) const {
  for (const auto& [at, loss] : eval_) {
    if (at == step) return loss;
  }
  return std::nullopt;
}

void MetricsLog::curve(const nlohmann::json& record) {
  const int step = json_integer<int>(record.at("step"), "a metrics record's 'step'");
  // A value that was not finite is stored as null.
  if (record.contains("loss") && record.at("loss").is_number()) train_.emplace_back(step, record.at("loss").get<double>());
  if (record.contains("eval_loss") && record.at("eval_loss").is_number()) {
    eval_.emplace_back(step, record.at("eval_loss").get<double>());
  }
}

}  // namespace qft
