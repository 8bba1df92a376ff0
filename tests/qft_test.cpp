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
  EXPECT_EQ(store.lm_head_rows(0, 1).bf16 != nullptr, bf16);
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
  const QuantizedView view = momentum.view();
  const auto m_step = [&](int r, int c) {
    return layout.bits == 8 ? view.ranges[r].scale : view.row_blocks(r)[c / layout.block].values().scale;
  };
  for (int r = 0; r < rows; ++r) {
    for (int c = 0; c < cols; ++c) {
      const size_t i = static_cast<size_t>(r) * cols + c;
      const float w_step = weights.view().dense.ranges[r].scale;
      ASSERT_LE(std::abs(got_m[i] - want_m[i]), 0.5f * m_step(r, c) * 1.001f + 1e-9f) << "momentum [" << r << ", " << c << "]";
      ASSERT_LE(std::abs(got_w[i] - want_w[i]), 0.5f * w_step * 1.001f + 1e-9f) << "weight [" << r << ", " << c << "]";
    }
  }
  if (layout.bits == 4) {  // the quiet block keeps a step of its own
    EXPECT_LT(m_step(1, 0), 1e-2f * m_step(1, 64));
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

// An FP32 store that hands the LM head and the embedding over in blocks of
// `block` vocabulary rows, as a store without a whole copy of them does.
class BlockedFp32Store final : public ParameterStore {
 public:
  BlockedFp32Store(const ModelConfig& config, ParamSet& weights, ParamSet& grads, int block)
      : inner_(config, weights, &grads), block_(block) {}
  const LayerParams& layer_weights(int layer) override { return inner_.layer_weights(layer); }
  kernels::Operand linear_weight(int layer, Linear which) override { return inner_.linear_weight(layer, which); }
  void embed(float* out, const int* tokens, int N) override { inner_.embed(out, tokens, N); }
  const HeadParams& head_weights() override { return inner_.head_weights(); }
  int head_block_rows() override { return block_; }
  kernels::Operand lm_head_rows(int first, int rows) override { return inner_.lm_head_rows(first, checked(rows)); }
  const LayerParams& layer_grads(int layer) override { return inner_.layer_grads(layer); }
  float* linear_grad(int layer, Linear which) override { return inner_.linear_grad(layer, which); }
  void linear_grad_done(int layer, Linear which) override { inner_.linear_grad_done(layer, which); }
  void layer_grads_done(int layer) override { inner_.layer_grads_done(layer); }
  const HeadParams& head_grads() override { return inner_.head_grads(); }
  void head_grads_done() override { inner_.head_grads_done(); }
  float* lm_head_grad(int first, int rows) override { return inner_.lm_head_grad(first, checked(rows)); }
  void lm_head_grad_done(int first, int rows) override { inner_.lm_head_grad_done(first, rows); }
  float* embedding_grad(int first, int rows) override { return inner_.embedding_grad(first, checked(rows)); }
  void embedding_grad_done(int first, int rows) override { inner_.embedding_grad_done(first, rows); }

 private:
  int checked(int rows) const {
    EXPECT_LE(rows, block_);
    return rows;
  }
  Fp32ParameterStore inner_;
  int block_;
};

// The LM head over vocabulary blocks (two passes: log-sum-exp, then each
// block's gradient) gives the whole head's loss, every gradient and the
// generator's logits, to float rounding.
TEST(Transformer, VocabularyBlocksGiveTheWholeHeadsLossGradientsAndLogits) {
  const Task task;
  const ModelSource source = ModelSource::random(task.config, 7);
  ParamSet weights(MemCategory::Weights, source.specs());
  for (size_t i = 0; i < source.specs().size(); ++i) source.fill(i, weights.data(i));
  ParamSet whole_grads(MemCategory::Gradients, source.specs()), block_grads(MemCategory::Gradients, source.specs());
  const Batch batch = task.micro_batches(0, 1, 4)[0];
  Transformer whole(source.config(), weights, &whole_grads);
  BlockedFp32Store store(source.config(), weights, block_grads, 7);  // 48 = 6 · 7 + 6
  Transformer blocks(source.config(), store);
  const double want = whole.forward_backward(batch);
  EXPECT_NEAR(blocks.forward_backward(batch), want, 1e-6 * want);
  for (size_t i = 0; i < source.specs().size(); ++i) {
    double difference = 0.0, norm = 0.0;
    for (size_t j = 0; j < whole_grads.numel(i); ++j) {
      difference = std::max(difference, std::abs(double(block_grads.data(i)[j]) - whole_grads.data(i)[j]));
      norm = std::max(norm, std::abs(double(whole_grads.data(i)[j])));
    }
    EXPECT_LE(difference, 1e-5 * norm) << source.specs()[i].name;
  }
  EXPECT_NEAR(blocks.loss(batch), whole.loss(batch), 1e-6 * want);

  KvCache whole_cache(source.config(), 8), block_cache(source.config(), 8);
  const std::vector<int> prompt = {3, 14, 15, 9};
  const float* want_logits = whole.forward_cached(prompt.data(), 4, whole_cache, false);
  const std::vector<float> expected(want_logits, want_logits + source.config().vocab_size);
  const float* got = blocks.forward_cached(prompt.data(), 4, block_cache, false);
  for (size_t v = 0; v < expected.size(); ++v) EXPECT_EQ(got[v], expected[v]) << v;
}

// A one-layer untied LLaMA's config.json in `dir`.
std::string one_layer_config(const TempDir& dir, int vocab, int hidden, int intermediate, int heads, int kv_heads) {
  const std::string config = dir.file("config.json");
  test::write_text(config, nlohmann::json{{"architectures", {"LlamaForCausalLM"}}, {"vocab_size", vocab},
                                         {"hidden_size", hidden}, {"intermediate_size", intermediate},
                                         {"num_hidden_layers", 1}, {"num_attention_heads", heads},
                                         {"num_key_value_heads", kv_heads}, {"tie_word_embeddings", false}}
                               .dump());
  return config;
}

// The random init's rows, read alone, are the whole tensor's rows, also
// where a row starts inside a block of four Philox values (30 columns).
TEST(ModelSource, RandomRowsAreTheWholeTensorsRows) {
  const TempDir dir;
  const ModelSource source = ModelSource::random(one_layer_config(dir, 37, 30, 44, 3, 1), 3);
  for (size_t i = 0; i < source.specs().size(); ++i) {
    if (source.specs()[i].shape.size() != 2) continue;
    const int rows = static_cast<int>(source.specs()[i].shape[0]), cols = static_cast<int>(source.specs()[i].shape[1]);
    std::vector<float> whole(static_cast<size_t>(rows) * cols), middle(static_cast<size_t>(rows - 4) * cols);
    source.fill(i, whole.data());
    source.fill_rows(i, middle.data(), 3, rows - 4);
    EXPECT_TRUE(std::equal(middle.begin(), middle.end(), whole.begin() + 3 * cols)) << source.specs()[i].name;
  }
}


// A gradient INT8 holds exactly (each row spans 255 steps of 2⁻¹⁰, ends
// included), so the gradient stack's copy equals it.
std::vector<float> exact_int8_gradient(int rows, int cols) {
  std::vector<float> grad(static_cast<size_t>(rows) * cols);
  for (int r = 0; r < rows; ++r) {
    for (int c = 0; c < cols; ++c) {
      const int code = c == 0 ? 0 : c == 1 ? 255 : (r * 37 + c * 11) % 256;
      grad[static_cast<size_t>(r) * cols + c] = std::ldexp(static_cast<float>(code - 128), -10);
    }
  }
  return grad;
}

// QLion's update of the LM head and the embedding block by block (fused)
// equals one update of the whole matrices (the stack's, after backward), bit
// for bit: the same gradient, and every rounding keyed by its row.
TEST(QLion, BlockByBlockUpdatesEqualOneWholeUpdate) {
  const TempDir dir;
  // The LM head (300 × 64) is larger than the largest linear (128 × 64): fused
  // QLion takes the head and the embedding in blocks of 128 rows.
  const ModelSource source = ModelSource::random(one_layer_config(dir, 300, 64, 128, 4, 2), 8);
  const int V = source.config().vocab_size, C = source.config().hidden_size;
  TrainingSettings fused_settings = qft_settings(Rounding::Stochastic), stacked_settings = fused_settings;
  stacked_settings.qft.stack_gradients = true;
  QftStore fused(source, fused_settings), stacked(source, stacked_settings);
  ASSERT_EQ(fused.head_block_rows(), 128);
  ASSERT_EQ(stacked.head_block_rows(), V);
  const std::vector<float> grad = exact_int8_gradient(V, C);
  for (QftStore* store : {&fused, &stacked}) {
    store->begin_step(1, 1e-2f);
    const int block = store->head_block_rows();
    for (int first = 0; first < V; first += block) {
      const int rows = std::min(block, V - first);
      std::copy_n(grad.begin() + static_cast<size_t>(first) * C, static_cast<size_t>(rows) * C,
                  store->lm_head_grad(first, rows));
      store->lm_head_grad_done(first, rows);
    }
    for (int first = 0; first < V; first += block) {
      const int rows = std::min(block, V - first);
      std::copy_n(grad.rbegin() + static_cast<size_t>(first) * C, static_cast<size_t>(rows) * C,
                  store->embedding_grad(first, rows));
      store->embedding_grad_done(first, rows);
    }
    store->end_step(true);
  }
  const auto a = dequantized(fused), b = dequantized(stacked), before = dequantized(QftStore(source, fused_settings));
  for (size_t i = 0; i < a.size(); ++i) {
    const std::string& name = source.specs()[i].name;
    EXPECT_EQ(a[i], b[i]) << name;
    const bool updated = name == "lm_head.weight" || name == "model.embed_tokens.weight";
    EXPECT_EQ(a[i] != before[i], updated) << name;
  }
}

}  // namespace
}  // namespace qft
