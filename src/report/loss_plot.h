#pragma once
// The loss curve of a run as an SVG plot: the training loss per step drawn
// faintly with a trailing moving average over it, evaluation losses as
// marked points, labelled axes (step; loss in nats per token), a title.
#include <string>
#include <utility>
#include <vector>

namespace qft {

// Points (step, loss); a loss that is not finite is left out.
std::string loss_curve_svg(const std::vector<std::pair<int, double>>& train,
                           const std::vector<std::pair<int, double>>& eval, const std::string& title);
// The mean of each point and the window - 1 finite points before it.
std::vector<std::pair<int, double>> moving_average(const std::vector<std::pair<int, double>>& series, int window);

}  // namespace qft
