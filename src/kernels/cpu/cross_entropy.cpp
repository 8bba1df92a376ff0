#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "kernels/cpu/vector_math.h"
#include "kernels/kernels.h"

namespace qft::kernels {
namespace {

// log Σ exp(row) with the maximum subtracted first, summed and returned in
// double: a float sum over a real vocabulary (50k–250k terms) drifts by up to
// V·2⁻²⁴, which moved a Phi-3-shaped model's loss by 1e-4 against PyTorch.
double log_sum_exp(const float* row, int V) {
  const float max = *std::max_element(row, row + V);
  return max + std::log(vmath::exp_sum_double(row, V, max));
}

// A row's gradient through the cap: (softmax − onehot) · grad_scale · (1 − tanh²),
// tanh = capped logit / cap.
void capped_gradient(float* row, int target, int V, float lse, float grad_scale, float cap) {
  for (int j = 0; j < V; ++j) {
    const float tanh = row[j] / cap;  // d(cap·tanh(x/cap))/dx = 1 − tanh²
    const float onehot = j == target ? 1.0f : 0.0f;
    row[j] = (std::exp(row[j] - lse) - onehot) * grad_scale * (1.0f - tanh * tanh);
  }
}

// A row's logits (already capped) become their gradient, (softmax − onehot)
// · grad_scale through the cap; `target` may lie outside the row (a block of
// the vocabulary without it).
void row_gradient(float* row, int target, int V, float lse, float grad_scale, float softcap) {
  if (softcap > 0) return capped_gradient(row, target, V, lse, grad_scale, softcap);
  vmath::exp_scale(row, V, lse, grad_scale);
  if (target >= 0 && target < V) row[target] -= grad_scale;
}

}  // namespace

void softcap_forward(float* x, size_t n, float cap) {
  constexpr size_t kChunk = 1 << 14;
#pragma omp parallel for schedule(static)
  for (size_t begin = 0; begin < n; begin += kChunk) vmath::softcap(x + begin, std::min(kChunk, n - begin), cap);
}

void cross_entropy_forward_backward(double* losses, float* logits, const int* targets, int R, int V,
                                    float grad_scale, float softcap) {
#pragma omp parallel for schedule(static)
  for (int r = 0; r < R; ++r) {
    float* row = logits + static_cast<size_t>(r) * V;
    if (targets[r] < 0) {
      std::fill(row, row + V, 0.0f);
      losses[r] = 0.0;
      continue;
    }
    if (softcap > 0) vmath::softcap(row, V, softcap);
    const double row_lse = log_sum_exp(row, V);
    losses[r] = row_lse - row[targets[r]];
    row_gradient(row, targets[r], V, static_cast<float>(row_lse), grad_scale, softcap);
  }
}

void sum_in_order(double* total, const double* values, size_t n) {
  double sum = 0.0;
  for (size_t i = 0; i < n; ++i) sum += values[i];
  *total += sum;
}

void cross_entropy_block_start(double* stats, int R) {
  for (int r = 0; r < R; ++r) {
    double* row = stats + static_cast<size_t>(r) * kCrossEntropyStats;
    row[0] = -std::numeric_limits<double>::infinity();
    row[1] = row[2] = 0.0;
  }
}

// Σ exp over the rows seen so far, rescaled to the new maximum as it grows.
void cross_entropy_block_fold(double* stats, float* logits, const int* targets, int R, int Vb, int first,
                              float softcap) {
#pragma omp parallel for schedule(static)
  for (int r = 0; r < R; ++r) {
    if (targets[r] < 0) continue;
    float* row = logits + static_cast<size_t>(r) * Vb;
    double* stat = stats + static_cast<size_t>(r) * kCrossEntropyStats;
    if (softcap > 0) vmath::softcap(row, Vb, softcap);
    const double max = std::max<double>(stat[0], *std::max_element(row, row + Vb));
    stat[1] = stat[1] * std::exp(stat[0] - max) + vmath::exp_sum_double(row, Vb, static_cast<float>(max));
    stat[0] = max;
    const int target = targets[r] - first;
    if (target >= 0 && target < Vb) stat[2] = row[target];
  }
}

void cross_entropy_block_finish(double* losses, double* stats, const int* targets, int R) {
  for (int r = 0; r < R; ++r) {
    double* stat = stats + static_cast<size_t>(r) * kCrossEntropyStats;
    if (targets[r] < 0) {
      losses[r] = 0.0;
      continue;
    }
    stat[0] += std::log(stat[1]);
    losses[r] = stat[0] - stat[2];
  }
}

void cross_entropy_block_backward(float* logits, const double* stats, const int* targets, int R, int Vb, int first,
                                  float grad_scale, float softcap) {
#pragma omp parallel for schedule(static)
  for (int r = 0; r < R; ++r) {
    float* row = logits + static_cast<size_t>(r) * Vb;
    if (targets[r] < 0) {
      std::fill(row, row + Vb, 0.0f);
      continue;
    }
    if (softcap > 0) vmath::softcap(row, Vb, softcap);
    const float lse = static_cast<float>(stats[static_cast<size_t>(r) * kCrossEntropyStats]);
    row_gradient(row, targets[r] - first, Vb, lse, grad_scale, softcap);
  }
}

void cross_entropy_rows(double* losses, const float* logits, const int* targets, int R, int V, float softcap) {
#pragma omp parallel for schedule(static)
  for (int r = 0; r < R; ++r) {
    const float* row = logits + static_cast<size_t>(r) * V;
    if (targets[r] < 0) {
      losses[r] = 0.0;
      continue;
    }
    if (softcap <= 0) {
      losses[r] = log_sum_exp(row, V) - row[targets[r]];
      continue;
    }
    thread_local std::vector<float> capped;  // (V): the logits stay as they are
    capped.assign(row, row + V);
    vmath::softcap(capped.data(), V, softcap);
    losses[r] = log_sum_exp(capped.data(), V) - capped[targets[r]];
  }
}

}  // namespace qft::kernels
