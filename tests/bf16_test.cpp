// BF16 compute: every matrix product rounds its operands to BF16 and
// accumulates in FP32. Checked against float64 products, with bounds derived
// from the shape: against the BF16-rounded operands the error is FP32
// accumulation only; against the original operands it is at most BF16's
// rounding of each product term. ctest runs this binary twice: as it is, and
// with ONEDNN_MAX_CPU_ISA=AVX2, where oneDNN has no BF16 matmul and the
// rounded operands go through sgemm.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>
#include <random>
#include <vector>

#include "core/float16.h"
#include "kernels/cpu/gemm.h"
#include "kernels/kernels.h"

namespace qft::kernels {
namespace {

class Bf16Compute {
 public:
  Bf16Compute() { set_compute(Compute::BF16); }
  ~Bf16Compute() { set_compute(Compute::FP32); }
};

float bf16_round(float x) { return bf16_to_float(float_to_bf16(x)); }

struct GemmCase {
  bool ta, tb;
  int M, N, K;
  float alpha, beta;
};

void PrintTo(const GemmCase& c, std::ostream* out) {
  *out << (c.ta ? "T" : "N") << (c.tb ? "T" : "N") << " " << c.M << "x" << c.N << "x" << c.K << " alpha " << c.alpha
       << " beta " << c.beta;
}

class Bf16Gemm : public testing::TestWithParam<GemmCase> {};

TEST_P(Bf16Gemm, IsTheProductOfRoundedOperandsAccumulatedInFp32) {
  const GemmCase g = GetParam();
  std::mt19937 rng(g.M * 131 + g.N * 7 + g.K);
  std::normal_distribution<float> normal;
  // Stored with padding (leading dimension > columns), as attention's tiles are.
  const int a_rows = g.ta ? g.K : g.M, a_cols = g.ta ? g.M : g.K, lda = a_cols + 3;
  const int b_rows = g.tb ? g.N : g.K, b_cols = g.tb ? g.K : g.N, ldb = b_cols + 5;
  const int ldc = g.N + 2;
  std::vector<float> a(static_cast<size_t>(a_rows) * lda), b(static_cast<size_t>(b_rows) * ldb),
      c(static_cast<size_t>(g.M) * ldc);
  for (float& x : a) x = normal(rng);
  for (float& x : b) x = normal(rng);
  for (float& x : c) x = normal(rng);
  const std::vector<float> c_before = c;
  const auto at = [](const std::vector<float>& m, int ld, bool transposed, int i, int j) {
    return transposed ? m[static_cast<size_t>(j) * ld + i] : m[static_cast<size_t>(i) * ld + j];
  };
  {
    const Bf16Compute bf16;
    gemm(g.ta, g.tb, g.M, g.N, g.K, g.alpha, a.data(), lda, b.data(), ldb, g.beta, c.data(), ldc);
  }
  double worst_rounded = 0, worst_original = 0, largest_difference = 0;
  for (int i = 0; i < g.M; ++i) {
    for (int j = 0; j < g.N; ++j) {
      double rounded = 0, original = 0, magnitude = 0;
      for (int k = 0; k < g.K; ++k) {
        const double x = at(a, lda, g.ta, i, k), y = at(b, ldb, g.tb, k, j);
        rounded += static_cast<double>(bf16_round(static_cast<float>(x))) * bf16_round(static_cast<float>(y));
        original += x * y;
        magnitude += std::abs(x * y);
      }
      const double before = c_before[static_cast<size_t>(i) * ldc + j];
      const double got = c[static_cast<size_t>(i) * ldc + j];
      const double scale = std::abs(g.alpha) * magnitude + std::abs(g.beta * before);
      // FP32 accumulation of K terms and the final scaling: γ(K + 2) with u = 2⁻²⁴.
      const double fp32_bound = (g.K + 2) * std::ldexp(1.0, -24) * scale * 1.01 + 1e-30;
      // Each term x·y of BF16-rounded operands: |x̂ŷ − xy| ≤ (2u + u²)|xy| with u = 2⁻⁹.
      const double bf16_bound = (2 * std::ldexp(1.0, -9) + std::ldexp(1.0, -18)) * std::abs(g.alpha) * magnitude;
      worst_rounded = std::max(worst_rounded, std::abs(got - (g.alpha * rounded + g.beta * before)) / fp32_bound);
      worst_original = std::max(worst_original, std::abs(got - (g.alpha * original + g.beta * before)) /
                                                    (bf16_bound + fp32_bound));
      largest_difference = std::max(largest_difference, std::abs(rounded - original));
    }
  }
  EXPECT_LE(worst_rounded, 1.0) << "beyond FP32 accumulation of the rounded operands";
  EXPECT_LE(worst_original, 1.0) << "beyond BF16 rounding of the operands";
  EXPECT_GT(largest_difference, 0.0) << "the operands were not rounded to BF16";
  // Padding between rows of c is left alone.
  for (int i = 0; i < g.M; ++i) {
    for (int j = g.N; j < ldc; ++j) EXPECT_EQ(c[static_cast<size_t>(i) * ldc + j], c_before[static_cast<size_t>(i) * ldc + j]);
  }
}

// The transposes and scalings the kernels use: linear forward (N, T), its
// input gradient (N, N) and weight gradient (T, N), attention's scaled
// products, accumulation (beta 1).
const GemmCase kCases[] = {
    {false, true, 64, 96, 80, 1.0f, 0.0f},   {false, true, 64, 96, 80, 1.0f, 1.0f},
    {false, false, 33, 70, 129, 1.0f, 1.0f}, {true, false, 96, 80, 64, 1.0f, 1.0f},
    {false, true, 17, 40, 64, 0.125f, 0.0f}, {true, false, 40, 64, 17, 0.125f, 1.0f},
    {false, false, 128, 64, 200, 1.0f, 0.0f}, {true, true, 20, 30, 40, 2.0f, 0.5f},
};
INSTANTIATE_TEST_SUITE_P(Shapes, Bf16Gemm, testing::ValuesIn(kCases));

TEST(Bf16Gemm, FallsBackOnlyWhereOneDnnHasNoBf16Matmul) {
  std::printf("oneDNN BF16 matmul on this CPU: %s\n", native_bf16_matmul() ? "native" : "no (sgemm on rounded operands)");
  EXPECT_EQ(compute(), Compute::FP32);  // the default
}

// The layer kernels inherit the precision: linear forward in BF16 is the
// FP32 kernel on BF16-rounded input and weight.
TEST(Bf16Kernels, LinearForwardIsTheFp32KernelOnRoundedOperands) {
  const int N = 24, IC = 48, OC = 40;
  std::mt19937 rng(5);
  std::normal_distribution<float> normal;
  std::vector<float> inp(N * IC), weight(OC * IC), bias(OC), rounded_inp(N * IC), rounded_weight(OC * IC);
  for (float& x : inp) x = normal(rng);
  for (float& x : weight) x = normal(rng);
  for (float& x : bias) x = normal(rng);
  for (int i = 0; i < N * IC; ++i) rounded_inp[i] = bf16_round(inp[i]);
  for (int i = 0; i < OC * IC; ++i) rounded_weight[i] = bf16_round(weight[i]);
  std::vector<float> got(N * OC), want(N * OC);
  linear_forward(want.data(), rounded_inp.data(), rounded_weight.data(), bias.data(), N, IC, OC);
  {
    const Bf16Compute bf16;
    linear_forward(got.data(), inp.data(), weight.data(), bias.data(), N, IC, OC);
  }
  for (int i = 0; i < N * OC; ++i) EXPECT_NEAR(got[i], want[i], 1e-4f * (1.0f + std::abs(want[i]))) << i;
}

// A weight its store already rounded to BF16 is multiplied as it is: the
// same product, bit for bit, as the FP32 weight rounded by the product —
// forward (b transposed) and input gradient (b as it is), a fused block's
// rows, both compute modes (FP32 compute widens it exactly).
TEST(Bf16Kernels, ABf16WeightGivesTheProductOfItsFp32Original) {
  const int N = 24, IC = 48, OC = 40, first = 8, rows = 16;
  std::mt19937 rng(7);
  std::normal_distribution<float> normal;
  std::vector<float> inp(N * IC), dout(N * OC), weight(OC * IC), widened(OC * IC);
  std::vector<uint16_t> weight16(OC * IC);
  for (float& x : inp) x = normal(rng);
  for (float& x : dout) x = normal(rng);
  for (float& x : weight) x = normal(rng);
  for (int i = 0; i < OC * IC; ++i) {
    weight16[i] = float_to_bf16(weight[i]);
    widened[i] = bf16_to_float(weight16[i]);
  }
  for (const Compute mode : {Compute::BF16, Compute::FP32}) {
    set_compute(mode);
    const Operand fp32 = mode == Compute::BF16 ? weight.data() : widened.data();
    std::vector<float> got(N * OC), want(N * OC), got_dinp(N * IC, 0.5f), want_dinp(N * IC, 0.5f);
    linear_forward(want.data(), inp.data(), fp32.from_row(first, IC), nullptr, N, IC, rows);
    linear_forward(got.data(), inp.data(), Operand(weight16.data()).from_row(first, IC), nullptr, N, IC, rows);
    linear_backward(want_dinp.data(), nullptr, nullptr, dout.data(), inp.data(), fp32, N, IC, OC);
    linear_backward(got_dinp.data(), nullptr, nullptr, dout.data(), inp.data(), weight16.data(), N, IC, OC);
    set_compute(Compute::FP32);
    EXPECT_EQ(got, want) << (mode == Compute::BF16 ? "bf16" : "fp32");
    EXPECT_EQ(got_dinp, want_dinp) << (mode == Compute::BF16 ? "bf16" : "fp32");
  }
}

}  // namespace
}  // namespace qft::kernels
