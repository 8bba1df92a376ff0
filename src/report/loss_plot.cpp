#include "report/loss_plot.h"

#include <algorithm>
#include <cmath>
#include <iomanip>
#include <sstream>

namespace qft {
namespace {

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

namespace {

using Series = std::vector<std::pair<int, double>>;

// One plot: the frame, the scales the series set, and the SVG so far.
class LossPlot {
 public:
  LossPlot(const Series& train, const Series& eval) {
    for (const Series* series : {&train, &eval}) {
      for (const auto& [step, loss] : *series) {
        max_step_ = std::max(max_step_, static_cast<double>(step));
        if (std::isfinite(loss)) low_ = std::min(low_, loss), high_ = std::max(high_, loss);
      }
    }
    if (!(low_ < high_)) low_ -= 1, high_ += 1;
    svg_ << std::fixed << std::setprecision(1);
  }

  void frame(const std::string& title) {
    svg_ << "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"" << kWidth << "\" height=\"" << kHeight
         << "\" font-family=\"sans-serif\" font-size=\"12\">\n<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n";
    svg_ << "<text x=\"" << kWidth / 2 << "\" y=\"22\" text-anchor=\"middle\" font-size=\"14\">" << escape_xml(title)
         << "</text>\n";
    svg_ << "<line x1=\"" << kLeft << "\" y1=\"" << kHeight - kBottom << "\" x2=\"" << kWidth - kRight << "\" y2=\""
         << kHeight - kBottom << "\" stroke=\"black\"/>\n<line x1=\"" << kLeft << "\" y1=\"" << kTop << "\" x2=\""
         << kLeft << "\" y2=\"" << kHeight - kBottom << "\" stroke=\"black\"/>\n";
    for (int tick = 0; tick <= 4; ++tick) {
      const double loss = low_ + (high_ - low_) * tick / 4, step = max_step_ * tick / 4;
      svg_ << "<text x=\"" << std::setprecision(1) << kLeft - 6 << "\" y=\"" << y(loss) + 4 << "\" text-anchor=\"end\">"
           << std::setprecision(2) << loss << "</text>\n";
      svg_ << "<text x=\"" << std::setprecision(1) << x(step) << "\" y=\"" << kHeight - kBottom + 16
           << "\" text-anchor=\"middle\">" << std::setprecision(0) << step << "</text>\n";
    }
    svg_ << std::setprecision(1) << "<text x=\"" << (kWidth + kLeft) / 2 << "\" y=\"" << kHeight - 12
         << "\" text-anchor=\"middle\">step</text>\n<text transform=\"translate(16," << (kTop + kHeight - kBottom) / 2
         << ") rotate(-90)\" text-anchor=\"middle\">loss (nats per token)</text>\n";
  }

  void polyline(const Series& series, const char* color, const char* style) {
    svg_ << "<polyline fill=\"none\" stroke=\"" << color << "\" " << style << " points=\"";
    for (const auto& [step, loss] : series) {
      if (std::isfinite(loss)) svg_ << x(step) << "," << y(loss) << " ";
    }
    svg_ << "\"/>\n";
  }

  void points(const Series& series, const char* color) {
    for (const auto& [step, loss] : series) {
      if (std::isfinite(loss)) svg_ << "<circle cx=\"" << x(step) << "\" cy=\"" << y(loss) << "\" r=\"4\" fill=\"" << color << "\"/>\n";
    }
  }

  // One row of legend entries under the title: a line sample, then the name.
  void legend(const char* color, const char* style, const std::string& name) {
    svg_ << "<line x1=\"" << legend_x_ << "\" y1=\"38\" x2=\"" << legend_x_ + 24 << "\" y2=\"38\" stroke=\"" << color
         << "\" " << style << "/>\n<text x=\"" << legend_x_ + 30 << "\" y=\"42\">" << name << "</text>\n";
    legend_x_ += 30 + 7.0 * name.size() + 24;
  }

  std::string finish() {
    svg_ << "</svg>\n";
    return svg_.str();
  }

 private:
  static constexpr double kWidth = 760, kHeight = 460, kLeft = 70, kRight = 20, kTop = 60, kBottom = 50;
  double x(double step) const { return kLeft + (kWidth - kLeft - kRight) * step / max_step_; }
  double y(double loss) const { return kTop + (kHeight - kTop - kBottom) * (high_ - loss) / (high_ - low_); }

  double max_step_ = 1, low_ = INFINITY, high_ = -INFINITY;
  double legend_x_ = kLeft;
  std::ostringstream svg_;
};

}  // namespace

std::string loss_curve_svg(const Series& train, const Series& eval, const std::string& title) {
  LossPlot plot(train, eval);
  plot.frame(title);
  // About a tenth of the run, at least 5 steps (all of a shorter run), at most 50.
  const int steps = static_cast<int>(train.size());
  const int window = std::max(1, std::clamp(steps / 10, std::min(steps, 5), 50));
  const char* raw_style = "stroke-width=\"1\" stroke-opacity=\"0.3\"";
  const char* average_style = "stroke-width=\"2\"";
  const char* eval_style = "stroke-width=\"1\" stroke-dasharray=\"4 3\"";
  plot.polyline(train, "#1f77b4", raw_style);
  plot.polyline(moving_average(train, window), "#1f77b4", average_style);
  plot.legend("#1f77b4", raw_style, "training loss per step");
  plot.legend("#1f77b4", average_style, "training loss, mean of the last " + std::to_string(window) + " steps");
  if (!eval.empty()) {
    plot.polyline(eval, "#d62728", eval_style);
    plot.points(eval, "#d62728");
    plot.legend("#d62728", eval_style, "evaluation loss");
  }
  return plot.finish();
}

}  // namespace qft
