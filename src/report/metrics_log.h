#pragma once
// A run's record as it goes: OUT/metrics.jsonl (one JSON object per step,
// skipped step and evaluation) and OUT/loss.svg (report/loss_plot.h). A
// resumed run starts from its checkpoint's records, so both read as one run.
#include <filesystem>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "io/atomic_file.h"

namespace qft {

class MetricsLog {
 public:
  // Data-parallel, only rank 0 writes the files; every rank keeps the records.
  MetricsLog(const std::filesystem::path& out, std::string title, std::vector<nlohmann::json> records);
  // Appends a record ({"step", "loss" | "eval_loss" | "nonfinite", …}); an
  // evaluation redraws the plot.
  void add(const nlohmann::json& record);
  void plot() const;
  const std::vector<nlohmann::json>& records() const { return records_; }
  std::optional<double> eval_loss_at(int step) const;

 private:
  void curve(const nlohmann::json& record);

  std::filesystem::path out_;
  std::string title_;
  std::vector<nlohmann::json> records_;
  std::vector<std::pair<int, double>> train_, eval_;
  std::unique_ptr<AppendFile> file_;
};

}  // namespace qft
