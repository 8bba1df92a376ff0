#include <algorithm>
#include <cmath>

#include "kernels/kernels.h"

namespace qft::kernels {
namespace {

// log Σ exp(row) with the maximum subtracted first, summed and returned in
// double: a float sum over a real vocabulary (50k–250k terms) drifts by up to
// V·2⁻²⁴, which moved a Phi-3-shaped model's loss by 1e-4 against PyTorch.
// `value(j)` is the logit as the loss sees it (capped or not).
template <class Value>
double log_sum_exp(int V, Value value) {
  float max = value(0);
  for (int j = 1; j < V; ++j) max = value(j) > max ? value(j) : max;
  double sum = 0.0;
  for (int j = 0; j < V; ++j) sum += std::exp(value(j) - max);
  return max + std::log(sum);
}

double log_sum_exp(const float* row, int V) {
  return log_sum_exp(V, [row](int j) { return row[j]; });
}

float capped(float x, float cap) { return cap * std::tanh(x / cap); }

void cap_row(float* row, int V, float cap) {
  for (int j = 0; j < V; ++j) row[j] = capped(row[j], cap);
}

}  // namespace

void softcap_forward(float* x, size_t n, float cap) {
#pragma omp parallel for simd schedule(static)
  for (size_t i = 0; i < n; ++i) x[i] = capped(x[i], cap);
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
    if (softcap > 0) cap_row(row, V, softcap);
    const double row_lse = log_sum_exp(row, V);
    const double loss = row_lse - row[targets[r]];
    const float lse = static_cast<float>(row_lse);
    for (int j = 0; j < V; ++j) {
      const float tanh = softcap > 0 ? row[j] / softcap : 0.0f;  // d(cap·tanh(x/cap))/dx = 1 − tanh²
      const float onehot = j == targets[r] ? 1.0f : 0.0f;
      row[j] = softcap > 0 ? (std::exp(row[j] - lse) - onehot) * grad_scale * (1.0f - tanh * tanh)
                           : std::exp(row[j] - lse) * grad_scale;
    }
    if (softcap <= 0) row[targets[r]] -= grad_scale;
    losses[r] = loss;
  }
}

void sum_in_order(double* total, const double* values, size_t n) {
  double sum = 0.0;
  for (size_t i = 0; i < n; ++i) sum += values[i];
  *total += sum;
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
    // The capped logits are computed again where they are needed, not stored.
    losses[r] = log_sum_exp(V, [&](int j) { return capped(row[j], softcap); }) - capped(row[targets[r]], softcap);
  }
}

}  // namespace qft::kernels
