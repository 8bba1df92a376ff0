#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <random>

#include "core/error.h"
#include "core/float16.h"
#include "quant/dynamic_map.h"
#include "quant/hybrid.h"
#include "quant/philox.h"
#include "quant/quantizer.h"
#include "test_util.h"

namespace qft {
namespace {

RoundingContext nearest() { return {Rounding::Nearest, 0, 0, 0}; }
RoundingContext stochastic(uint32_t step) { return {Rounding::Stochastic, 1234, 7, step}; }

std::vector<float> normal_values(size_t n, float stddev, uint32_t seed) {
  std::mt19937 generator(seed);
  std::normal_distribution<float> normal(0.0f, stddev);
  std::vector<float> values(n);
  for (float& value : values) value = normal(generator);
  return values;
}

// Random123's published known-answer vectors for Philox4x32-10.
TEST(Philox, KnownAnswers) {
  EXPECT_EQ(philox4x32_10({0, 0, 0, 0}, {0, 0}), (PhiloxCounter{0x6627e8d5, 0xe169c58d, 0xbc57ac4c, 0x9b00dbd8}));
  EXPECT_EQ(philox4x32_10({0xffffffff, 0xffffffff, 0xffffffff, 0xffffffff}, {0xffffffff, 0xffffffff}),
            (PhiloxCounter{0x408f276d, 0x41c83b0e, 0xa20bc7c6, 0x6d5451fd}));
  EXPECT_EQ(philox4x32_10({0x243f6a88, 0x85a308d3, 0x13198a2e, 0x03707344}, {0xa4093822, 0x299f31d0}),
            (PhiloxCounter{0xd16cfe09, 0x94fdcceb, 0x5001e420, 0x24126ea1}));
}

// The uniforms are the blocks' 16-bit halves in order, at every length and
// offset of the vectorised and the scalar paths.
TEST(Philox, UniformsAreTheBlocksHalvesInOrder) {
  const PhiloxKey key = philox_key(0x0123456789abcdefull);
  for (const int64_t n : {1, 7, 8, 9, 127, 128, 129, 255, 1000, 4099}) {
    std::vector<float> uniforms(static_cast<size_t>(n));
    philox_uniforms16(uniforms.data(), n, key, 11, 0xfffffffeu, 5);
    for (int64_t i = 0; i < n; ++i) {
      const PhiloxCounter bits = philox4x32_10({static_cast<uint32_t>(i / 8), 11, 0xfffffffeu, 5}, key);
      const uint32_t word = bits[(i / 2) % 4];
      const uint32_t half = i % 2 ? word >> 16 : word & 0xffffu;
      ASSERT_EQ(uniforms[i], (static_cast<float>(half) + 0.5f) / 65536.0f) << "n " << n << ", element " << i;
    }
  }
}

// Round trip of one row; returns the largest error in units of the row's step.
double round_trip_error_in_steps(const std::vector<float>& values, const RoundingContext& rounding, RowRange* out = nullptr) {
  const int n = static_cast<int>(values.size());
  std::vector<uint8_t> codes(n);
  std::vector<float> back(n);
  const RowRange range = quantize_row(codes.data(), values.data(), n, rounding, 0, nullptr, 0, "t");
  dequantize_row(back.data(), codes.data(), range, n);
  if (out) *out = range;
  double worst = 0.0;
  for (int i = 0; i < n; ++i) {
    const double error = std::abs(static_cast<double>(back[i]) - values[i]);
    worst = std::max(worst, range.scale > 0 ? error / range.scale : error);
  }
  return worst;
}

TEST(Quantizer, NearestIsWithinHalfAStepForEveryKindOfRow) {
  std::vector<std::vector<float>> rows = {normal_values(300, 0.02f, 1)};
  std::vector<float> positive, negative;
  for (int i = 0; i < 100; ++i) {
    positive.push_back(5.0f + 0.001f * i);    // one-signed, far from zero
    negative.push_back(-3.0f - 0.002f * i);
  }
  rows.push_back(positive);
  rows.push_back(negative);
  for (const auto& row : rows) EXPECT_LE(round_trip_error_in_steps(row, nearest()), 0.5 + 1e-3);

  RowRange range;
  EXPECT_EQ(round_trip_error_in_steps(std::vector<float>(17, 0.7f), nearest(), &range), 0.0);  // constant: exact
  EXPECT_EQ(range.scale, 0.0f);
  EXPECT_EQ(round_trip_error_in_steps(std::vector<float>(9, 0.0f), nearest()), 0.0);
  EXPECT_EQ(round_trip_error_in_steps(std::vector<float>(9, -2.5f), stochastic(3)), 0.0);
}

// 4-bit rows: each block's values within half (nearest) or one (stochastic)
// of its own step, whatever its neighbours' magnitude; the BF16 range spans
// its block; a constant block exact where BF16 holds its value, else within
// half a step of a tiny one; an odd tail as any block.
TEST(Quantizer4, EachBlockIsWithinItsOwnStep) {
  constexpr int kBlock = 64, n = 64 * 4 + 7;
  std::vector<float> row = normal_values(n, 1.0f, 4);
  for (int i = 64; i < 128; ++i) row[i] *= 1e-3f;   // a quiet block beside loud ones
  for (int i = 128; i < 192; ++i) row[i] = -0.25f;  // constant, a BF16 value
  for (int i = 192; i < 256; ++i) row[i] = 0.1f;    // constant, not one
  std::vector<uint8_t> codes((n + 1) / 2);
  std::vector<BlockRange> ranges(5);
  std::vector<float> back(n);
  for (const auto& [rounding, bound] : {std::pair{nearest(), 0.5 + 1e-3}, std::pair{stochastic(2), 1.0}}) {
    quantize_row4(codes.data(), ranges.data(), row.data(), n, kBlock, rounding, 5, "t");
    dequantize_row4(back.data(), codes.data(), ranges.data(), n, kBlock);
    for (int i = 0; i < n; ++i) {
      const RowRange range = ranges[i / kBlock].values();
      const double error = std::abs(static_cast<double>(back[i]) - row[i]);
      if (range.scale == 0.0f) {
        EXPECT_EQ(back[i], row[i]) << i;
      } else {
        EXPECT_LE(error / range.scale, bound) << "value " << i;
      }
      EXPECT_LE(range.offset, row[i]) << i;
      EXPECT_GE(range.offset + 15.0f * range.scale, row[i]) << i;
    }
    EXPECT_LT(ranges[1].values().scale, 1e-3f * ranges[0].values().scale * 10);  // the quiet block keeps its own step
    EXPECT_EQ(ranges[2].values().scale, 0.0f);
    EXPECT_LT(ranges[3].values().scale, 0.1f * 0x1p-8f);
  }
}

// Stochastic 4-bit rounding is unbiased: over many steps (independent
// numbers) the mean of the de-quantized values approaches the values, within
// four standard errors of a rounding whose spread is at most half a step.
TEST(Quantizer4, StochasticRoundingIsUnbiased) {
  constexpr int n = 100, kBlock = 64, kDraws = 4000;
  const std::vector<float> row = normal_values(n, 1.0f, 8);
  std::vector<double> sum(n, 0.0);
  std::vector<uint8_t> codes(n / 2);
  std::vector<BlockRange> ranges(2);
  std::vector<float> back(n);
  for (uint32_t step = 1; step <= kDraws; ++step) {
    quantize_row4(codes.data(), ranges.data(), row.data(), n, kBlock, stochastic(step), 0, "t");
    dequantize_row4(back.data(), codes.data(), ranges.data(), n, kBlock);
    for (int i = 0; i < n; ++i) sum[i] += back[i];
  }
  for (int i = 0; i < n; ++i) {
    const double standard_error = 0.5 * ranges[i / kBlock].values().scale / std::sqrt(static_cast<double>(kDraws));
    EXPECT_NEAR(sum[i] / kDraws, row[i], 4 * standard_error) << "value " << i;
  }
}

// The 4-bit layout through the matrix passes: codes two a byte, even column
// low, ranges per block; NaN refused by name.
TEST(Quantizer4, MatrixPassesUseTheLayout) {
  QuantizedRows rows(MemCategory::OptimizerState, 3, 130, CodeLayout::int4(64));
  EXPECT_EQ(rows.row_bytes(), 65u);
  EXPECT_EQ(rows.ranges_per_row(), 3);
  EXPECT_EQ(QuantizedRows::bytes(3, 130, CodeLayout::int4(64)), 3u * (65 + 3 * 4));
  std::vector<float> values = normal_values(3 * 130, 1.0f, 9), back(3 * 130);
  quantize_rows(rows.view(), values.data(), nearest(), "m");
  dequantize_rows(back.data(), rows.view());
  for (int r = 0; r < 3; ++r) {
    for (int c = 0; c < 130; ++c) {
      const int code = (rows.row_codes(r)[c / 2] >> (4 * (c % 2))) & 0xf;
      const RowRange range = rows.view().row_blocks(r)[c / 64].values();
      EXPECT_EQ(back[r * 130 + c], range.offset + range.scale * static_cast<float>(code));
      EXPECT_LE(std::abs(back[r * 130 + c] - values[r * 130 + c]), 0.5f * range.scale * (1 + 1e-4f));
    }
  }
  values[200] = NAN;
  EXPECT_NE(test::error_of([&] { quantize_rows(rows.view(), values.data(), nearest(), "m"); }).find("m: row 1 holds NaN"),
            std::string::npos);
}

TEST(Quantizer, StochasticIsWithinOneStepAndReproducible) {
  const auto row = normal_values(257, 1.0f, 2);
  EXPECT_LT(round_trip_error_in_steps(row, stochastic(5)), 1.0);
  std::vector<uint8_t> first(257), again(257), other(257);
  quantize_row(first.data(), row.data(), 257, stochastic(5), 3, nullptr, 0, "t");
  quantize_row(again.data(), row.data(), 257, stochastic(5), 3, nullptr, 0, "t");
  quantize_row(other.data(), row.data(), 257, stochastic(6), 3, nullptr, 0, "t");
  EXPECT_EQ(first, again);
  EXPECT_NE(first, other);
}

// Values 0.3 of a step above a grid point: round-to-nearest always lands on
// the grid point (bias −0.3 step), stochastic rounding is right on average.
TEST(Quantizer, StochasticRoundingIsUnbiased) {
  std::vector<float> row = {0.0f, 1.0f};
  for (int i = 1; i < 200; ++i) row.push_back((i % 250 + 0.3f) / 255.0f);
  const int n = static_cast<int>(row.size());
  const int draws = 4000;
  std::vector<double> mean(n, 0.0);
  std::vector<uint8_t> codes(n);
  std::vector<float> back(n);
  for (int step = 0; step < draws; ++step) {
    const RowRange range = quantize_row(codes.data(), row.data(), n, stochastic(step), 0, nullptr, 0, "t");
    dequantize_row(back.data(), codes.data(), range, n);
    for (int i = 0; i < n; ++i) mean[i] += back[i] / draws;
  }
  const double step = 1.0 / 255.0;
  double bias = 0.0;
  for (int i = 2; i < n; ++i) bias += (mean[i] - row[i]) / step / (n - 2);
  // One draw's error has standard deviation √(0.3·0.7) ≈ 0.46 step.
  EXPECT_LT(std::abs(bias), 0.46 / std::sqrt(static_cast<double>(draws) * (n - 2)) * 5);
  const RowRange range = quantize_row(codes.data(), row.data(), n, nearest(), 0, nullptr, 0, "t");
  dequantize_row(back.data(), codes.data(), range, n);
  EXPECT_NEAR((back[2] - row[2]) / step, -0.3, 1e-3);
}

TEST(Quantizer, NonFiniteValuesNameTheTensor) {
  std::vector<float> row = {1.0f, NAN, 2.0f};
  std::vector<uint8_t> codes(3);
  try {
    quantize_row(codes.data(), row.data(), 3, nearest(), 4, nullptr, 0, "model.layers.3.mlp.up_proj.weight");
    FAIL() << "no error";
  } catch (const Error& error) {
    EXPECT_NE(std::string(error.what()).find("model.layers.3.mlp.up_proj.weight: row 4"), std::string::npos);
  }
  row[1] = INFINITY;
  HybridMatrix matrix("w", 1, 3);
  EXPECT_THROW(matrix.assign(row.data(), 0.0f, nearest()), Error);
}

// A weight matrix with a few large outliers, as in the paper's Figure 3.
std::vector<float> matrix_with_outliers(int rows, int cols) {
  auto values = normal_values(static_cast<size_t>(rows) * cols, 0.02f, 3);
  for (size_t i = 0; i < values.size(); i += 97) values[i] *= 60.0f;
  return values;
}

double l2_distance(const std::vector<float>& a, const std::vector<float>& b) {
  double sum = 0.0;
  for (size_t i = 0; i < a.size(); ++i) sum += (static_cast<double>(a[i]) - b[i]) * (a[i] - b[i]);
  return std::sqrt(sum);
}

// Found by fuzz/checkpoint_fuzz (fuzz/regressions/checkpoint/crash-c9816bb0…):
// a row start that decreases only after a larger one let the first row read
// past the outlier arrays (ASan: heap-buffer-overflow) before it was refused.
TEST(HybridMatrix, RestoringOutliersChecksEveryRowStartBeforeReadingAny) {
  HybridMatrix matrix("w", 2, 4);
  const int32_t starts[] = {0, 100, 3};  // spans 3 outliers, but row 0 claims 100
  const std::vector<uint16_t> columns = {0, 1, 2};
  const std::vector<float> values = {1, 2, 3};
  try {
    matrix.restore_outliers(starts, columns.data(), values.data(), 3, -1.0f, 1.0f);
    FAIL() << "no error";
  } catch (const Error& error) {
    EXPECT_STREQ(error.what(), "w: outlier row starts decrease at row 1");
  }
}

TEST(HybridMatrix, SplitReconstructsTheMatrix) {
  const int rows = 64, cols = 200;
  const auto values = matrix_with_outliers(rows, cols);
  HybridMatrix hybrid("w", rows, cols), plain("w", rows, cols);
  hybrid.assign(values.data(), 0.01f, nearest());
  plain.assign(values.data(), 0.0f, nearest());
  EXPECT_EQ(hybrid.outlier_count(), HybridMatrix::outliers_for(rows * cols, 0.01f));
  EXPECT_EQ(hybrid.outlier_count(), 128);
  EXPECT_EQ(plain.outlier_count(), 0);

  std::vector<float> back(values.size()), plain_back(values.size());
  dequantize_hybrid_rows(back.data(), hybrid.view(), 0, rows);
  dequantize_hybrid_rows(plain_back.data(), plain.view(), 0, rows);
  int exact = 0;
  for (size_t i = 0; i < values.size(); ++i) {
    const bool outlier = values[i] < hybrid.threshold_min() || values[i] > hybrid.threshold_max();
    if (outlier) exact += back[i] == values[i];
    // Dense values: within half a step of a range bounded by the thresholds.
    else EXPECT_LE(std::abs(back[i] - values[i]), (hybrid.threshold_max() - hybrid.threshold_min()) / 255 / 2 * 1.001);
  }
  EXPECT_EQ(exact, hybrid.outlier_count());
  // Keeping the outliers out of the ranges makes the dense part far finer.
  EXPECT_LT(l2_distance(back, values) * 10, l2_distance(plain_back, values));
}

// Straight to BF16: each value (dense and outlier) is the FP32 value
// de-quantization gives, rounded to nearest even — bit for bit, over rows
// whose width is no multiple of the conversion's 16 or 64 values.
TEST(HybridMatrix, DequantizesStraightToTheBf16OfItsFp32Values) {
  const int rows = 12, cols = 203;
  const auto values = matrix_with_outliers(rows, cols);
  HybridMatrix matrix("w", rows, cols);
  matrix.assign(values.data(), 0.02f, nearest());
  ASSERT_GT(matrix.outlier_count(), 0);
  std::vector<float> fp32(values.size());
  std::vector<uint16_t> bf16((rows - 3) * cols);
  dequantize_hybrid_rows(fp32.data(), matrix.view(), 0, rows);
  dequantize_hybrid_rows_bf16(bf16.data(), matrix.view(), 3, rows);
  for (size_t i = 0; i < bf16.size(); ++i) ASSERT_EQ(bf16[i], float_to_bf16(fp32[3 * cols + i])) << i;
}

// The row conversion (AVX512-BF16's where built) rounds as float_to_bf16,
// ties included.
TEST(Bfloat16, RowConversionRoundsAsTheScalarOne) {
  std::vector<float> values = normal_values(1000, 3.0f, 11);
  values[5] = 1.0f + 0x1.0p-8f;
  values[6] = 1.0f + 3 * 0x1.0p-8f;
  values[7] = -INFINITY;
  std::vector<uint16_t> rounded(values.size());
  float_to_bf16_row(rounded.data(), values.data(), values.size());
  for (size_t i = 0; i < values.size(); ++i) ASSERT_EQ(rounded[i], float_to_bf16(values[i])) << values[i];
}

TEST(HybridMatrix, UpdatesKeepOutliersExactAndReRangeCrossingRows) {
  const int rows = 8, cols = 300;
  const auto values = matrix_with_outliers(rows, cols);
  HybridMatrix matrix("w", rows, cols);
  matrix.assign(values.data(), 0.02f, nearest());
  std::vector<float> before(values.size());
  dequantize_hybrid_rows(before.data(), matrix.view(), 0, rows);

  // A dense value of row 2 jumps far past the thresholds.
  const float jump = matrix.threshold_max() * 4;
  int dense_column = 0;
  while (before[2 * cols + dense_column] > matrix.threshold_max() || before[2 * cols + dense_column] < matrix.threshold_min()) ++dense_column;
  std::vector<float> row_values(cols);
  for (int row = 0; row < rows; ++row) {  // as QLion writes a row (optim/qlion.h)
    dequantize_hybrid_row(row_values.data(), matrix.view(), row);
    for (int col = 0; col < cols; ++col) row_values[col] *= 0.5f;
    if (row == 2) row_values[dense_column] = jump;
    requantize_hybrid_row(matrix.view(), row, row_values.data(), nearest(), "w");
  }
  std::vector<float> after(values.size());
  dequantize_hybrid_rows(after.data(), matrix.view(), 0, rows);
  const float row2_step = (jump - *std::min_element(after.begin() + 2 * cols, after.begin() + 3 * cols)) / 255;
  EXPECT_NEAR(after[2 * cols + dense_column], jump, row2_step / 2 * 1.001);
  for (size_t i = 0; i < values.size(); ++i) {
    const bool outlier = values[i] < matrix.threshold_min() || values[i] > matrix.threshold_max();
    if (outlier) EXPECT_EQ(after[i], before[i] * 0.5f);
  }
  const int64_t outliers_before = matrix.outlier_count();
  matrix.refresh(0.02f, nearest());  // the per-epoch refresh moves the crossed value into S
  EXPECT_EQ(matrix.outlier_count(), outliers_before);
  std::vector<float> refreshed(values.size());
  dequantize_hybrid_rows(refreshed.data(), matrix.view(), 0, rows);
  EXPECT_EQ(refreshed[2 * cols + dense_column], after[2 * cols + dense_column]);
}

}  // namespace
}  // namespace qft

namespace qft {
namespace {

// The dynamic code book as its definition gives it (bitsandbytes'
// create_dynamic_map with 7 exponent bits): sorted, 0 and 1 included, the
// smallest magnitude 10⁻⁶ × the first cell's midpoint.
TEST(DynamicCodeBook, FollowsTheDefinition) {
  const CodeBook signed_book = dynamic_code_book(true), unsigned_book = dynamic_code_book(false);
  for (const CodeBook* book : {&signed_book, &unsigned_book}) {
    EXPECT_TRUE(std::is_sorted(book->begin(), book->end()));
    EXPECT_EQ(std::adjacent_find(book->begin(), book->end()), book->end());  // distinct
    EXPECT_EQ(book->back(), 1.0f);
    EXPECT_NE(std::find(book->begin(), book->end(), 0.0f), book->end());
  }
  EXPECT_EQ(unsigned_book.front(), 0.0f);
  EXPECT_NEAR(signed_book.front(), -(0.1 + 0.9 * 63.5 / 64), 1e-6);  // exponent 0, 64 cells
  const float smallest_signed = *std::upper_bound(signed_book.begin(), signed_book.end(), 0.0f);
  const float smallest_unsigned = *std::upper_bound(unsigned_book.begin(), unsigned_book.end(), 0.0f);
  EXPECT_NEAR(smallest_signed, 0.55e-6, 1e-12);    // one cell: midpoint 0.55
  EXPECT_NEAR(smallest_unsigned, 0.325e-6, 1e-12);  // two cells: midpoints 0.325, 0.775
  EXPECT_EQ(signed_book[nearest_code(signed_book, 0.0f)], 0.0f);
  EXPECT_EQ(nearest_code(signed_book, 2.0f), 255);
  EXPECT_EQ(nearest_code(unsigned_book, -1.0f), 0);
  // Relative error near 1 is at most half a cell of the largest exponent.
  for (float x : {0.3f, 0.5f, 0.77f, -0.42f}) {
    EXPECT_NEAR(signed_book[nearest_code(signed_book, x)], x, 0.9 / 64 / 2 + 1e-6) << x;
  }
}

// The table-driven encoder agrees with the binary search everywhere,
// midpoints and codes themselves included.
TEST(DynamicCodeBook, EncoderEqualsNearestCode) {
  for (bool is_signed : {true, false}) {
    const CodeBook book = dynamic_code_book(is_signed);
    const CodeBookEncoder encoder(book);
    std::vector<float> probes = {0.0f, -0.0f, 1.0f, -1.0f, 1e-9f, -1e-9f};
    for (int i = 0; i < 255; ++i) {
      probes.push_back(book[i]);
      probes.push_back((book[i] + book[i + 1]) / 2);
      probes.push_back(std::nextafter((book[i] + book[i + 1]) / 2, 2.0f));
    }
    std::mt19937 generator(5);
    std::uniform_real_distribution<float> uniform(is_signed ? -1.0f : 0.0f, 1.0f);
    for (int i = 0; i < 100000; ++i) probes.push_back(uniform(generator) * std::pow(10.0f, -static_cast<float>(i % 7)));
    for (float x : probes) ASSERT_EQ(encoder.encode(x), nearest_code(book, x)) << x << (is_signed ? " signed" : " unsigned");
  }
}

}  // namespace
}  // namespace qft

namespace qft {
namespace {

// Expected bit patterns from the bfloat16 definition (float32's top half,
// round to nearest, ties to even).
TEST(Bfloat16, RoundsToNearestEven) {
  EXPECT_EQ(float_to_bf16(1.0f), 0x3F80);
  EXPECT_EQ(float_to_bf16(1.0f + 0x1.0p-8f), 0x3F80);      // halfway, to the even 0x3F80
  EXPECT_EQ(float_to_bf16(1.0f + 3 * 0x1.0p-8f), 0x3F82);  // halfway, to the even 0x3F82
  EXPECT_EQ(float_to_bf16(1.0f + 0x1.0p-8f + 0x1.0p-20f), 0x3F81);
  EXPECT_EQ(float_to_bf16(-2.0f), 0xC000);
  EXPECT_EQ(float_to_bf16(INFINITY), 0x7F80);
  EXPECT_TRUE(std::isnan(bf16_to_float(float_to_bf16(NAN))));
  EXPECT_EQ(bf16_to_float(0x4049), 3.140625f);
}

// binary16 bit patterns from the IEEE 754 definition.
TEST(Float16, RoundsToNearestEven) {
  EXPECT_EQ(float_to_half(1.0f), 0x3C00);
  EXPECT_EQ(float_to_half(-2.0f), 0xC000);
  EXPECT_EQ(float_to_half(65504.0f), 0x7BFF);
  EXPECT_EQ(float_to_half(65519.0f), 0x7BFF);
  EXPECT_EQ(float_to_half(65520.0f), 0x7C00);  // halfway to the next binade: infinity
  EXPECT_EQ(float_to_half(1.0f + 0x1.0p-11f), 0x3C00);      // halfway, to even
  EXPECT_EQ(float_to_half(1.0f + 3 * 0x1.0p-11f), 0x3C02);  // halfway, to even
  EXPECT_EQ(float_to_half(0x1.0p-24f), 0x0001);             // smallest subnormal
  EXPECT_EQ(float_to_half(0x1.0p-25f), 0x0000);             // halfway to zero: even
  EXPECT_EQ(float_to_half(3 * 0x1.0p-25f), 0x0002);
  EXPECT_EQ(float_to_half(0x1.0p-14f), 0x0400);             // smallest normal
  EXPECT_TRUE(std::isnan(half_to_float(float_to_half(NAN))));
  for (uint32_t bits = 0; bits < 0x7C00; ++bits) ASSERT_EQ(float_to_half(half_to_float(bits)), bits);
}

}  // namespace
}  // namespace qft
