// QFT's training state against FP32 Lion: one step, fused vs stacked, the
// gradient stack, and short training runs with stochastic and nearest rounding.
#include <gtest/gtest.h>

#include <cmath>
#include <random>
#include <nlohmann/json.hpp>

#include "core/error.h"
#include "model/transformer.h"
#include "optim/gradient_stack.h"
#include "optim/qlion.h"
#include "optim/updates.h"
#include "test_util.h"
#include "train/optimizers.h"
#include "train/qft_store.h"
#include "train/training.h"

namespace qft {
namespace {

using test::TempDir;

TEST(GradientStack, PopsInReverseOrderAndAccumulates) {
  GradientStack stack;
  const std::vector<float> g2 = {1, 2, 3, 4}, g0 = {-1, 0, 1, 2, 3, 4}, g1 = {0.5f, -0.5f};
  const RoundingContext nearest{Rounding::Nearest, 0, 0, 0};
  for (int step = 0; step < 2; ++step) {
    stack.push(2, 1, 4, g2.data(), nearest, "p2");
    if (step == 1) EXPECT_THROW(stack.push(1, 1, 2, g1.data(), nearest, "p1"), Error);  // out of the first step's order
    stack.push(0, 2, 3, g0.data(), nearest, "p0");
    EXPECT_THROW(stack.accumulate(1, g1.data(), nearest, "p1"), Error);  // not pushed yet
    stack.push(1, 1, 2, g1.data(), nearest, "p1");
    if (step == 0) {
      while (!stack.empty()) stack.pop();
    }
  }
  stack.accumulate(0, g0.data(), nearest, "p0");  // a second micro-batch
  EXPECT_EQ(stack.size(), 3u);

  const std::vector<size_t> expected_order = {1, 0, 2};
  for (size_t expected : expected_order) {
    const GradientStack::Entry entry = stack.pop();
    ASSERT_EQ(entry.param, expected);
    std::vector<float> values(static_cast<size_t>(entry.grad->rows()) * entry.grad->cols());
    dequantize_rows(values.data(), entry.grad->view());
    const std::vector<float>& pushed = expected == 0 ? g0 : expected == 1 ? g1 : g2;
    for (size_t i = 0; i < values.size(); ++i) {
      EXPECT_NEAR(values[i], pushed[i] * (expected == 0 ? 2 : 1), 0.05f) << expected << "[" << i << "]";
    }
  }
  EXPECT_TRUE(stack.empty());
  EXPECT_THROW(stack.pop(), Error);
}

// A small model, random init, and token lines with structure to learn:
// each line counts upward modulo the vocabulary from a random start.
struct Task {
  TempDir dir;
  std::string config;
  std::vector<TokenSequence> lines;

  Task() {
    config = dir.file("config.json");
    test::write_text(config, nlohmann::json{{"architectures", {"LlamaForCausalLM"}}, {"vocab_size", 48},
                                           {"hidden_size", 64}, {"intermediate_size", 128},
                                           {"num_hidden_layers", 2}, {"num_attention_heads", 4},
                                           {"num_key_value_heads", 2}, {"tie_word_embeddings", false}}
                                 .dump());
    for (int line = 0; line < 64; ++line) {
      TokenSequence tokens;
      for (int i = 0; i < 24; ++i) tokens.push_back((line * 7 + i * (1 + line % 3)) % 48);
      lines.push_back(tokens);
    }
  }
  std::vector<Batch> micro_batches(int step, int count, int lines_each) const {
    std::vector<Batch> batches;
    for (int b = 0; b < count; ++b) {
      std::vector<TokenSequence> taken;
      for (int j = 0; j < lines_each; ++j) taken.push_back(lines[((step * count + b) * lines_each + j) % lines.size()]);
      batches.push_back(make_batch(taken));
    }
    return batches;
  }
};

OptimizerSettings lion_settings() {
  OptimizerSettings lion = optimizer_entry(OptimizerKind::Lion).defaults;
  lion.weight_decay = 0.1f;
  return lion;
}

TrainingSettings qft_settings(Rounding rounding) {
  TrainingSettings settings = default_settings(OptimizerKind::QLion);
  settings.qft.rounding = rounding;
  settings.seed = 11;
  settings.hyper = lion_settings();
  return settings;
}

std::vector<std::vector<float>> dequantized(const QftStore& store) {
  std::vector<std::vector<float>> values;
  for (size_t i = 0; i < store.specs().size(); ++i) {
    values.emplace_back(shape_numel(store.specs()[i].shape));
    store.dequantize(i, values.back().data());
  }
  return values;
}

// Algorithm 2 on the de-quantized weights equals FP32 Lion on those same
// values, up to the re-quantization of each row. In BF16 compute the store
// de-quantizes straight to BF16 and the FP32 model rounds the same values in
// each product: the same operands, so still the same loss, bit for bit.
void expect_one_step_equals_fp32_lion(kernels::Compute compute) {
  kernels::set_compute(compute);
  const Task task;
  const ModelSource source = ModelSource::random(task.config, 5);
  QftStore store(source, qft_settings(Rounding::Stochastic));
  const bool bf16 = compute == kernels::Compute::BF16;
  EXPECT_EQ(store.linear_weight(1, Linear::Down).bf16 != nullptr, bf16);
  EXPECT_EQ(store.lm_head_weight().bf16 != nullptr, bf16);
  const auto before = dequantized(store);
  const float lr = 1e-2f;  // many quantization steps, so a wrong sign shows

  ParamSet fp32(MemCategory::Weights, source.specs()), grads(MemCategory::Gradients, source.specs());
  for (size_t i = 0; i < before.size(); ++i) std::copy(before[i].begin(), before[i].end(), fp32.data(i));
  Transformer reference(source.config(), fp32, &grads);
  const auto batch = task.micro_batches(0, 1, 4);
  const double reference_loss = reference.forward_backward(batch[0]);
  auto lion = make_fp32_optimizer(OptimizerKind::Lion, lion_settings(), source.specs());
  lion->step(fp32, grads, lr);

  Transformer transformer(source.config(), store);
  store.begin_step(1, lr);
  EXPECT_EQ(transformer.forward_backward(batch[0]), reference_loss);  // same FP32 values, same arithmetic
  store.end_step(true);
  const auto after = dequantized(store);

  for (size_t i = 0; i < after.size(); ++i) {
    const ParamSpec& spec = source.specs()[i];
    const int64_t cols = spec.shape.size() == 2 ? spec.shape[1] : spec.shape[0];
    for (int64_t row = 0; row < static_cast<int64_t>(after[i].size()) / cols; ++row) {
      const float* want = fp32.data(i) + row * cols;
      const auto [low, high] = std::minmax_element(want, want + cols);
      const float step = (*high - *low) / 255.0f;  // bounds the row's step after the update
      for (int64_t col = 0; col < cols; ++col) {
        ASSERT_LE(std::abs(after[i][row * cols + col] - want[col]), step * 1.01f + 1e-7f)
            << spec.name << " [" << row << ", " << col << "]";
      }
    }
  }
  kernels::set_compute(kernels::Compute::FP32);
}

TEST(QLion, OneStepEqualsFp32LionOnDequantizedValues) { expect_one_step_equals_fp32_lion(kernels::Compute::FP32); }

TEST(QLion, OneStepInBf16ComputeEqualsFp32LionOnDequantizedValues) {
  expect_one_step_equals_fp32_lion(kernels::Compute::BF16);
}

// qlion_update_rows with the momentum in either layout: weights and
// momentum written back are FP32 Lion's update of the de-quantized state,
// each within half a step of its row (8 bits) or block (4 bits).
void expect_update_rows_follow_lion(CodeLayout layout) {
  constexpr int rows = 3, cols = 150;
  std::mt19937 generator(21);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::vector<float> w(rows * cols), m(rows * cols), g(rows * cols);
  for (std::vector<float>* values : {&w, &m, &g}) {
    for (float& value : *values) value = normal(generator);
  }
  for (int c = 0; c < 64; ++c) {  // a quiet block in row 1
    m[cols + c] *= 1e-3f;
    g[cols + c] *= 1e-3f;
  }
  const RoundingContext nearest{Rounding::Nearest, 0, 0, 0};
  HybridMatrix weights("w", rows, cols);
  weights.assign(w.data(), 0.0f, nearest);
  QuantizedRows momentum(MemCategory::OptimizerState, rows, cols, layout);
  quantize_rows(momentum.view(), m.data(), nearest, "m");
  std::vector<float> want_w(rows * cols), want_m(rows * cols), got_w(rows * cols), got_m(rows * cols);
  dequantize_hybrid_rows(want_w.data(), weights.view(), 0, rows);
  dequantize_rows(want_m.data(), momentum.view());
  const float lr = 0.05f;
  lion_update(want_w.data(), want_m.data(), g.data(), want_w.size(), lr, lion_settings());

  QLionParameter param;
  param.weights = weights.view();
  param.momentum = momentum.view();
  param.grad = g.data();
  param.cols = cols;
  qlion_update_rows(param, 0, rows, lr, lion_settings(), {nearest, nearest}, "w");
  dequantize_hybrid_rows(got_w.data(), weights.view(), 0, rows);
  dequantize_rows(got_m.data(), momentum.view());
  const int block = layout.bits == 8 ? cols : layout.block;
  for (int r = 0; r < rows; ++r) {
    for (int c = 0; c < cols; ++c) {
      const size_t i = static_cast<size_t>(r) * cols + c;
      const float m_step = momentum.view().row_ranges(r)[c / block].scale, w_step = weights.view().dense.ranges[r].scale;
      ASSERT_LE(std::abs(got_m[i] - want_m[i]), 0.5f * m_step * 1.001f + 1e-9f) << "momentum [" << r << ", " << c << "]";
      ASSERT_LE(std::abs(got_w[i] - want_w[i]), 0.5f * w_step * 1.001f + 1e-9f) << "weight [" << r << ", " << c << "]";
    }
  }
  if (layout.bits == 4) {  // the quiet block keeps a step of its own
    EXPECT_LT(momentum.view().row_ranges(1)[0].scale, 1e-2f * momentum.view().row_ranges(1)[1].scale);
  }
}

TEST(QLion, UpdateRowsFollowLionWithInt8Momentum) { expect_update_rows_follow_lion({}); }
TEST(QLion, UpdateRowsFollowLionWith4BitMomentumBlocks) { expect_update_rows_follow_lion(CodeLayout::int4(64)); }

// With one micro-batch, pushing gradients on the INT8 stack and updating
// after backward changes only updates whose gradient INT8 flips in sign.
TEST(QLion, FusedAndStackedModesGiveTheSameUpdate) {
  const Task task;
  const ModelSource source = ModelSource::random(task.config, 6);
  TrainingSettings fused_settings = qft_settings(Rounding::Nearest), stacked_settings = fused_settings;
  stacked_settings.qft.stack_gradients = true;
  QftStore fused(source, fused_settings), stacked(source, stacked_settings);
  ASSERT_TRUE(fused.fused());
  ASSERT_FALSE(stacked.fused());
  const auto batch = task.micro_batches(0, 1, 4);
  const float lr = 1e-2f;
  for (QftStore* store : {&fused, &stacked}) {
    Transformer transformer(source.config(), *store);
    store->begin_step(1, lr);
    transformer.forward_backward(batch[0]);
    store->end_step(true);
  }
  const auto a = dequantized(fused), b = dequantized(stacked);
  size_t total = 0, different = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    for (size_t j = 0; j < a[i].size(); ++j) {
      ++total;
      different += std::abs(a[i][j] - b[i][j]) > lr;  // an opposite sign moves 2·lr apart
    }
  }
  EXPECT_LT(static_cast<double>(different) / total, 0.01) << different << " of " << total;
}

std::vector<double> train_losses(const Task& task, const std::string& optimizer, Rounding rounding, float lr, int steps,
                                 int momentum_bits = 8) {
  TrainingSettings settings = qft_settings(rounding);
  settings.optimizer = parse_optimizer(optimizer);
  settings.qft.momentum_bits = momentum_bits;
  auto training = make_training(ModelSource::random(task.config, 9), settings);
  std::vector<double> losses;
  for (int step = 1; step <= steps; ++step) losses.push_back(training->step(step, lr, task.micro_batches(step, 1, 8)));
  return losses;
}

double tail_mean(const std::vector<double>& losses) {
  double sum = 0.0;
  for (size_t i = losses.size() - 10; i < losses.size(); ++i) sum += losses[i];
  return sum / 10;
}

// At lr 1e-4 a Lion update is about a quarter of a dense row's quantization
// step: stochastic rounding follows FP32 Lion, round-to-nearest writes the
// old weights back and barely learns.
TEST(QLion, StochasticRoundingTrainsLikeFp32LionAtASmallLearningRate) {
  const Task task;
  const float lr = 1e-4f;
  const int steps = 80;
  const auto fp32 = train_losses(task, "lion", Rounding::Stochastic, lr, steps);
  const auto stochastic = train_losses(task, "qlion", Rounding::Stochastic, lr, steps);
  const auto nearest = train_losses(task, "qlion", Rounding::Nearest, lr, steps);
  const double start = fp32.front();
  EXPECT_EQ(stochastic.front(), nearest.front());
  EXPECT_LT(tail_mean(fp32), start - 0.3) << "FP32 Lion should learn this task";
  EXPECT_NEAR(tail_mean(stochastic), tail_mean(fp32), 0.05 * tail_mean(fp32));
  std::printf("losses: start %.4f, FP32 Lion %.4f, QLion stochastic %.4f, QLion nearest %.4f\n", start,
              tail_mean(fp32), tail_mean(stochastic), tail_mean(nearest));
  EXPECT_GT(tail_mean(nearest) - tail_mean(fp32), 3 * std::abs(tail_mean(stochastic) - tail_mean(fp32)))
      << "nearest " << tail_mean(nearest) << ", stochastic " << tail_mean(stochastic) << ", fp32 " << tail_mean(fp32);
}

// 4-bit momentum (64-value blocks) on the same task: within 5 % of FP32
// Lion, as the INT8 momentum is.
TEST(QLion, FourBitMomentumTrainsLikeFp32Lion) {
  const Task task;
  const float lr = 1e-4f;
  const int steps = 80;
  const auto fp32 = train_losses(task, "lion", Rounding::Stochastic, lr, steps);
  const auto four_bit = train_losses(task, "qlion", Rounding::Stochastic, lr, steps, 4);
  std::printf("losses: start %.4f, FP32 Lion %.4f, QLion with 4-bit momentum %.4f\n", fp32.front(), tail_mean(fp32),
              tail_mean(four_bit));
  EXPECT_LT(tail_mean(fp32), fp32.front() - 0.3) << "FP32 Lion should learn this task";
  EXPECT_NEAR(tail_mean(four_bit), tail_mean(fp32), 0.05 * tail_mean(fp32));
}

TEST(QLion, GradientAccumulationMatchesOneLargeBatch) {
  const Task task;
  TrainingSettings settings = qft_settings(Rounding::Stochastic);
  auto one = make_training(ModelSource::random(task.config, 9), settings);
  settings.grad_accum = 4;
  auto accumulated = make_training(ModelSource::random(task.config, 9), settings);
  double one_loss = 0, accumulated_loss = 0;
  for (int step = 1; step <= 20; ++step) {
    one_loss = one->step(step, 1e-3f, task.micro_batches(step, 1, 8));
    accumulated_loss = accumulated->step(step, 1e-3f, task.micro_batches(step * 4, 4, 2));
  }
  // Different rounding noise, same data and schedule: the losses stay close.
  EXPECT_NEAR(accumulated_loss, one_loss, 0.05 * one_loss);
}

TEST(QftStore, KeepsAboutOnePercentOutliersAndNoFp32ModelCopy) {
  const Task task;
  const ModelSource source = ModelSource::random(task.config, 1);
  const MemoryStats before = memory_stats();
  QftStore store(source, qft_settings(Rounding::Stochastic));
  int64_t matrix_elements = 0, all_elements = 0;
  for (const ParamSpec& spec : source.specs()) {
    all_elements += shape_numel(spec.shape);
    if (spec.role != ParamRole::Norm && spec.role != ParamRole::Bias) matrix_elements += shape_numel(spec.shape);
  }
  EXPECT_NEAR(static_cast<double>(store.outlier_count()) / matrix_elements, 0.01, 0.001);
  const MemoryStats after = memory_stats();
  const auto weights = static_cast<int>(MemCategory::Weights);
  // INT8 codes, an 8-byte range and a CSR offset per row of 64, 1 % outliers
  // at 8 bytes, FP32 norms: about 1.26 bytes per parameter, against FP32's 4.
  EXPECT_LT(static_cast<double>(after.current[weights] - before.current[weights]) / all_elements, 1.3);
}

}  // namespace
}  // namespace qft
