// Layer kernels against float64 references written here from the textbook
// definitions. Each forward is compared with its reference; each backward is
// compared with central finite differences of the reference, for the scalar
// loss L = Σ out·R with a fixed random R (so dout = R). Shapes are tiny so the
// finite differences, which rerun the whole reference per input element, stay
// cheap.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>
#include <cstring>
#include <functional>
#include <random>
#include <string>
#include <vector>

#include "kernels/cpu/vector_math.h"
#include "kernels/kernels.h"

namespace qft::kernels {
namespace {

using Doubles = std::vector<double>;
using Floats = std::vector<float>;

constexpr double kForwardTolerance = 1e-5;   // float32 forward vs float64 reference
constexpr double kGradientTolerance = 1e-4;  // float32 backward vs finite differences

// Uniform in [-scale, scale), reproducible per seed.
Floats random_floats(size_t n, unsigned seed, float scale = 1.0f) {
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> uniform(-scale, scale);
  Floats values(n);
  for (float& value : values) value = uniform(rng);
  return values;
}

// Float → double is exact, so the reference sees exactly the kernel's inputs.
Doubles to_double(const Floats& values) { return Doubles(values.begin(), values.end()); }

// What a backward added on top of `before`, per the kernels' += contract.
Doubles added(const Floats& after, const Floats& before) {
  Doubles increment(after.size());
  for (size_t i = 0; i < after.size(); ++i) increment[i] = double(after[i]) - double(before[i]);
  return increment;
}

double dot(const Doubles& a, const Doubles& b) {
  double sum = 0.0;
  for (size_t i = 0; i < a.size(); ++i) sum += a[i] * b[i];
  return sum;
}

// Expects ‖got − want‖ / ‖want‖ ≤ tolerance and prints the error, so a run
// shows how much headroom each check has.
void expect_close(const Doubles& got, const Doubles& want, double tolerance, const std::string& what) {
  ASSERT_EQ(got.size(), want.size()) << what;
  double difference = 0.0, norm = 0.0;
  for (size_t i = 0; i < got.size(); ++i) {
    difference += (got[i] - want[i]) * (got[i] - want[i]);
    norm += want[i] * want[i];
  }
  const double error = std::sqrt(difference) / std::max(std::sqrt(norm), 1e-300);
  std::printf("    %-34s relative error %.3e\n", what.c_str(), error);
  EXPECT_LE(error, tolerance) << what;
}

void expect_close(const Floats& got, const Doubles& want, double tolerance, const std::string& what) {
  expect_close(to_double(got), want, tolerance, what);
}

// Central differences of loss() with respect to every element of x, which
// loss() reads by reference; x is restored afterwards.
Doubles finite_difference(Doubles& x, const std::function<double()>& loss, double eps = 1e-6) {
  Doubles gradient(x.size());
  for (size_t i = 0; i < x.size(); ++i) {
    const double saved = x[i];
    x[i] = saved + eps;
    const double plus = loss();
    x[i] = saved - eps;
    const double minus = loss();
    x[i] = saved;
    gradient[i] = (plus - minus) / (2 * eps);
  }
  return gradient;
}

// ---------------------------------------------------------------- references

// out (N, OC) = inp (N, IC) · weight (OC, IC)ᵀ + bias (OC); bias may be empty.
Doubles linear_reference(const Doubles& inp, const Doubles& weight, const Doubles& bias, int N, int IC,
                         int OC) {
  Doubles out(size_t(N) * OC);
  for (int n = 0; n < N; ++n)
    for (int o = 0; o < OC; ++o) {
      double sum = bias.empty() ? 0.0 : bias[o];
      for (int i = 0; i < IC; ++i) sum += inp[size_t(n) * IC + i] * weight[size_t(o) * IC + i];
      out[size_t(n) * OC + o] = sum;
    }
  return out;
}

Doubles embedding_reference(const std::vector<int>& tokens, const Doubles& table, int C) {
  Doubles out;
  for (int token : tokens)
    out.insert(out.end(), table.begin() + size_t(token) * C, table.begin() + size_t(token + 1) * C);
  return out;
}

// y = (offset + w) · x / √(mean(x²) + eps), per row.
Doubles rmsnorm_reference(const Doubles& inp, const Doubles& weight, int N, int C, double eps, double offset = 0) {
  Doubles out(inp.size());
  for (int n = 0; n < N; ++n) {
    const double* x = &inp[size_t(n) * C];
    double mean_square = 0.0;
    for (int c = 0; c < C; ++c) mean_square += x[c] * x[c] / C;
    for (int c = 0; c < C; ++c) out[size_t(n) * C + c] = (offset + weight[c]) * x[c] / std::sqrt(mean_square + eps);
  }
  return out;
}

// HF rotate-half: the pair (x[i], x[i + D/2]) is rotated by pos · theta^(−2i/D).
Doubles rope_reference(const Doubles& x, const std::vector<int>& positions, int H, int D, double theta) {
  const int half = D / 2;
  Doubles out(x.size());
  for (size_t n = 0; n < positions.size(); ++n)
    for (int h = 0; h < H; ++h) {
      const size_t base = (n * H + h) * D;
      for (int i = 0; i < half; ++i) {
        const double angle = positions[n] * std::pow(theta, -2.0 * i / D);
        const double a = x[base + i], b = x[base + i + half];
        out[base + i] = a * std::cos(angle) - b * std::sin(angle);
        out[base + i + half] = b * std::cos(angle) + a * std::sin(angle);
      }
    }
  return out;
}

Doubles swiglu_reference(const Doubles& gate, const Doubles& up) {
  Doubles out(gate.size());
  for (size_t i = 0; i < gate.size(); ++i) out[i] = gate[i] / (1.0 + std::exp(-gate[i])) * up[i];
  return out;
}

// PyTorch's gelu(approximate="tanh") of the gate, times up.
Doubles geglu_reference(const Doubles& gate, const Doubles& up) {
  Doubles out(gate.size());
  for (size_t i = 0; i < gate.size(); ++i) {
    const double g = gate[i];
    out[i] = 0.5 * g * (1.0 + std::tanh(std::sqrt(2.0 / M_PI) * (g + 0.044715 * g * g * g))) * up[i];
  }
  return out;
}

struct AttentionResult {
  Doubles out;  // (N, H·D)
  Doubles lse;  // (H, N)
};

// Causal softmax attention within each packed sequence: scores scale · q·k
// (scale 0: 1/√D), soft-capped to cap · tanh(score / cap) when s.softcap > 0,
// query i seeing keys i − window < j ≤ i when s.window > 0; query head h
// reads key/value head h / (H / KV).
AttentionResult attention_reference(const Doubles& q, const Doubles& k, const Doubles& v,
                                    const std::vector<SequenceSpan>& sequences, const AttentionShape& s) {
  AttentionResult result{Doubles(size_t(s.N) * s.H * s.D, 0.0), Doubles(size_t(s.H) * s.N, 0.0)};
  const double scale = s.scale > 0 ? double(s.scale) : 1.0 / std::sqrt(double(s.D));
  auto q_at = [&](int row, int h) { return &q[(size_t(row) * s.H + h) * s.D]; };
  auto k_at = [&](int row, int g) { return &k[(size_t(row) * s.KV + g) * s.D]; };
  auto v_at = [&](int row, int g) { return &v[(size_t(row) * s.KV + g) * s.D]; };
  Doubles scores;
  for (const SequenceSpan& sequence : sequences)
    for (int h = 0; h < s.H; ++h) {
      const int g = h / (s.H / s.KV);
      for (int i = sequence.start; i < sequence.start + sequence.length; ++i) {
        scores.clear();
        double max = -INFINITY;
        const int first = s.window > 0 ? std::max(sequence.start, i - s.window + 1) : sequence.start;
        for (int j = first; j <= i; ++j) {
          double score = 0.0;
          for (int d = 0; d < s.D; ++d) score += q_at(i, h)[d] * k_at(j, g)[d];
          score *= scale;
          if (s.softcap > 0) score = s.softcap * std::tanh(score / s.softcap);
          scores.push_back(score);
          max = std::max(max, scores.back());
        }
        double sum = 0.0;
        for (double score : scores) sum += std::exp(score - max);
        const double lse = max + std::log(sum);
        result.lse[size_t(h) * s.N + i] = lse;
        double* out = &result.out[(size_t(i) * s.H + h) * s.D];
        for (int j = first; j <= i; ++j) {
          const double p = std::exp(scores[j - first] - lse);
          for (int d = 0; d < s.D; ++d) out[d] += p * v_at(j, g)[d];
        }
      }
    }
  return result;
}

// Σ over rows with target ≥ 0 of logsumexp(row) − row[target], of the
// capped logits cap · tanh(logit / cap) when cap > 0.
double cross_entropy_reference(const Doubles& logits, const std::vector<int>& targets, int V, double cap = 0) {
  double loss = 0.0;
  for (size_t r = 0; r < targets.size(); ++r) {
    if (targets[r] < 0) continue;
    Doubles capped(logits.begin() + r * V, logits.begin() + (r + 1) * V);
    if (cap > 0) for (double& x : capped) x = cap * std::tanh(x / cap);
    const double* row = capped.data();
    double max = row[0];
    for (int j = 1; j < V; ++j) max = std::max(max, row[j]);
    double sum = 0.0;
    for (int j = 0; j < V; ++j) sum += std::exp(row[j] - max);
    loss += max + std::log(sum) - row[targets[r]];
  }
  return loss;
}

// --------------------------------------------------------------------- tests

TEST(KernelsTest, Linear) {
  const int N = 3, IC = 5, OC = 4;
  for (const bool with_bias : {true, false}) {
    SCOPED_TRACE(with_bias ? "with bias" : "without bias");
    std::printf("  %s\n", with_bias ? "with bias" : "without bias");
    const Floats inp = random_floats(N * IC, 1), weight = random_floats(OC * IC, 2);
    const Floats bias = with_bias ? random_floats(OC, 3) : Floats{};
    const Floats R = random_floats(N * OC, 4);

    Floats out(N * OC);
    linear_forward(out.data(), inp.data(), weight.data(), with_bias ? bias.data() : nullptr, N, IC, OC);
    Doubles x = to_double(inp), w = to_double(weight), b = to_double(bias);
    expect_close(out, linear_reference(x, w, b, N, IC, OC), kForwardTolerance, "out");

    // Gradients start non-zero: backward must add to them.
    const Floats dinp_before = random_floats(N * IC, 5), dweight_before = random_floats(OC * IC, 6);
    const Floats dbias_before = with_bias ? random_floats(OC, 7) : Floats{};
    Floats dinp = dinp_before, dweight = dweight_before, dbias = dbias_before;
    linear_backward(dinp.data(), dweight.data(), with_bias ? dbias.data() : nullptr, R.data(),
                    inp.data(), weight.data(), N, IC, OC);

    const auto loss = [&] { return dot(linear_reference(x, w, b, N, IC, OC), to_double(R)); };
    expect_close(added(dinp, dinp_before), finite_difference(x, loss), kGradientTolerance, "dinp");
    expect_close(added(dweight, dweight_before), finite_difference(w, loss), kGradientTolerance,
                 "dweight");
    if (with_bias)
      expect_close(added(dbias, dbias_before), finite_difference(b, loss), kGradientTolerance, "dbias");

    // dinp == nullptr skips the input gradient and leaves the others as they were.
    Floats dweight_only(OC * IC, 0.0f), dbias_only(with_bias ? OC : 0, 0.0f);
    linear_backward(nullptr, dweight_only.data(), with_bias ? dbias_only.data() : nullptr, R.data(),
                    inp.data(), weight.data(), N, IC, OC);
    expect_close(dweight_only, added(dweight, dweight_before), 1e-6, "dweight (dinp = nullptr)");
  }
}

// A shape that is no multiple of any block size, against plain double matmuls.
TEST(KernelsTest, LinearLargeMatchesNaiveMatmul) {
  const int N = 33, IC = 70, OC = 45;
  const Floats inp = random_floats(N * IC, 11), weight = random_floats(OC * IC, 12),
               bias = random_floats(OC, 13), dout = random_floats(N * OC, 14);
  const Doubles x = to_double(inp), w = to_double(weight), dy = to_double(dout);

  Floats out(N * OC);
  linear_forward(out.data(), inp.data(), weight.data(), bias.data(), N, IC, OC);
  expect_close(out, linear_reference(x, w, to_double(bias), N, IC, OC), kForwardTolerance, "out");

  Floats dinp(N * IC, 0.0f), dweight(OC * IC, 0.0f), dbias(OC, 0.0f);
  linear_backward(dinp.data(), dweight.data(), dbias.data(), dout.data(), inp.data(), weight.data(), N,
                  IC, OC);
  Doubles want_dinp(N * IC, 0.0), want_dweight(OC * IC, 0.0), want_dbias(OC, 0.0);
  for (int n = 0; n < N; ++n)
    for (int o = 0; o < OC; ++o) {
      const double g = dy[size_t(n) * OC + o];
      want_dbias[o] += g;
      for (int i = 0; i < IC; ++i) {
        want_dinp[size_t(n) * IC + i] += g * w[size_t(o) * IC + i];
        want_dweight[size_t(o) * IC + i] += g * x[size_t(n) * IC + i];
      }
    }
  expect_close(dinp, want_dinp, kForwardTolerance, "dinp");
  expect_close(dweight, want_dweight, kForwardTolerance, "dweight");
  expect_close(dbias, want_dbias, kForwardTolerance, "dbias");
}

TEST(KernelsTest, Embedding) {
  const int V = 6, C = 5;
  const std::vector<int> tokens = {3, 1, 3, 0, 5, 3};  // token 3 three times: its gradients add up
  const int N = static_cast<int>(tokens.size());
  const Floats table = random_floats(V * C, 21), R = random_floats(N * C, 22);

  Floats out(N * C);
  embedding_forward(out.data(), tokens.data(), table.data(), N, C);
  Doubles t = to_double(table);
  expect_close(out, embedding_reference(tokens, t, C), 0.0, "out");

  const Floats dtable_before = random_floats(V * C, 23);
  Floats dtable = dtable_before;
  embedding_backward(dtable.data(), R.data(), tokens.data(), N, C, 0, V);
  const auto loss = [&] { return dot(embedding_reference(tokens, t, C), to_double(R)); };
  expect_close(added(dtable, dtable_before), finite_difference(t, loss), kGradientTolerance, "dtable");

  // A block of the table's rows gets exactly those rows' share.
  const int first = 1, rows = V - 2;
  Floats block(static_cast<size_t>(rows) * C, 0.0f);
  embedding_backward(block.data(), R.data(), tokens.data(), N, C, first, rows);
  const Doubles whole = added(dtable, dtable_before);
  for (size_t i = 0; i < block.size(); ++i) ASSERT_NEAR(block[i], whole[first * C + i], 1e-6) << i;
}

// Offset 0 (LLaMA) and 1 (Gemma: the stored weight is the deviation from one).
TEST(KernelsTest, RMSNorm) {
  const int N = 3, C = 8;
  const float eps = 1e-5f;
  for (const float offset : {0.0f, 1.0f}) {
    SCOPED_TRACE(offset);
    // Scales around 1 as in a trained model, but not all equal.
    Floats weight = random_floats(C, 31, 0.5f);
    for (float& w : weight) w += 1.0f - offset;
    const Floats inp = random_floats(N * C, 32), R = random_floats(N * C, 33);
    Doubles x = to_double(inp), w = to_double(weight);

    Floats out(N * C), rstd(N);
    rmsnorm_forward(out.data(), rstd.data(), inp.data(), weight.data(), N, C, eps, offset);
    expect_close(out, rmsnorm_reference(x, w, N, C, eps, offset), kForwardTolerance, "out");
    Doubles want_rstd(N);
    for (int n = 0; n < N; ++n) {
      double mean_square = 0.0;
      for (int c = 0; c < C; ++c) mean_square += x[size_t(n) * C + c] * x[size_t(n) * C + c] / C;
      want_rstd[n] = 1.0 / std::sqrt(mean_square + eps);
    }
    expect_close(rstd, want_rstd, kForwardTolerance, "rstd");

    const Floats dinp_before = random_floats(N * C, 34), dweight_before = random_floats(C, 35);
    Floats dinp = dinp_before, dweight = dweight_before;
    rmsnorm_backward(dinp.data(), dweight.data(), R.data(), inp.data(), weight.data(), rstd.data(), N, C, offset);
    const auto loss = [&] { return dot(rmsnorm_reference(x, w, N, C, eps, offset), to_double(R)); };
    expect_close(added(dinp, dinp_before), finite_difference(x, loss), kGradientTolerance, "dinp");
    expect_close(added(dweight, dweight_before), finite_difference(w, loss), kGradientTolerance, "dweight");
  }
}

// dweight is a reduction over rows; it must not depend on thread timing.
TEST(KernelsTest, RMSNormBackwardIsDeterministic) {
  const int N = 257, C = 64;
  const Floats inp = random_floats(N * C, 41), weight = random_floats(C, 42), dout = random_floats(N * C, 43);
  Floats out(N * C), rstd(N);
  rmsnorm_forward(out.data(), rstd.data(), inp.data(), weight.data(), N, C, 1e-5f);
  auto backward = [&] {
    Floats dinp(N * C, 0.0f), dweight(C, 0.0f);
    rmsnorm_backward(dinp.data(), dweight.data(), dout.data(), inp.data(), weight.data(), rstd.data(), N,
                     C);
    return std::make_pair(dinp, dweight);
  };
  const auto first = backward(), second = backward();
  EXPECT_EQ(std::memcmp(first.second.data(), second.second.data(), C * sizeof(float)), 0) << "dweight";
  EXPECT_EQ(std::memcmp(first.first.data(), second.first.data(), N * C * sizeof(float)), 0) << "dinp";
}

TEST(KernelsTest, RoPE) {
  const int H = 2, D = 8, max_positions = 16;
  const float theta = 10000.0f;
  // Out of order and repeated, so each row must use its own position.
  const std::vector<int> positions = {0, 3, 7, 1, 12, 5, 7, 15};
  const int N = static_cast<int>(positions.size());
  Floats cos(max_positions * D / 2), sin(max_positions * D / 2), inverse(D / 2);
  for (int i = 0; i < D / 2; ++i) inverse[i] = 1.0f / std::pow(theta, static_cast<float>(2 * i) / D);
  rope_tables(cos.data(), sin.data(), max_positions, D, inverse.data(), 1.0f);

  const Floats inp = random_floats(N * H * D, 51), R = random_floats(N * H * D, 52);
  Doubles x = to_double(inp);
  Floats out = inp;  // in place
  rope_forward(out.data(), positions.data(), cos.data(), sin.data(), N, H, D);
  expect_close(out, rope_reference(x, positions, H, D, theta), kForwardTolerance, "out");

  // Backward turns dout into dinp in place (it is the only consumer).
  Floats dx = R;
  rope_backward(dx.data(), positions.data(), cos.data(), sin.data(), N, H, D);
  const auto loss = [&] { return dot(rope_reference(x, positions, H, D, theta), to_double(R)); };
  expect_close(dx, finite_difference(x, loss), kGradientTolerance, "dinp");
}

TEST(KernelsTest, SwiGLU) {
  const size_t n = 16;
  // Gates over [−4, 4) to cover both tails of silu.
  const Floats gate = random_floats(n, 61, 4.0f), up = random_floats(n, 62), R = random_floats(n, 63);
  Doubles g = to_double(gate), u = to_double(up);

  Floats out(n);
  swiglu_forward(out.data(), gate.data(), up.data(), n);
  expect_close(out, swiglu_reference(g, u), kForwardTolerance, "out");

  // Written, not accumulated: garbage beforehand must not show through.
  Floats dgate(n, 1e3f), dup(n, 1e3f);
  swiglu_backward(dgate.data(), dup.data(), R.data(), gate.data(), up.data(), n);
  const auto loss = [&] { return dot(swiglu_reference(g, u), to_double(R)); };
  expect_close(dgate, finite_difference(g, loss), kGradientTolerance, "dgate");
  expect_close(dup, finite_difference(u, loss), kGradientTolerance, "dup");

  // In place over gate and up, as the transformer calls it: the same result.
  Floats gate_in_place = gate, up_in_place = up;
  swiglu_backward(gate_in_place.data(), up_in_place.data(), R.data(), gate_in_place.data(), up_in_place.data(), n);
  EXPECT_EQ(gate_in_place, dgate);
  EXPECT_EQ(up_in_place, dup);
}

TEST(KernelsTest, GeGLU) {
  const size_t n = 16;
  const Floats gate = random_floats(n, 64, 4.0f), up = random_floats(n, 65), R = random_floats(n, 66);
  Doubles g = to_double(gate), u = to_double(up);
  Floats out(n);
  geglu_forward(out.data(), gate.data(), up.data(), n);
  expect_close(out, geglu_reference(g, u), kForwardTolerance, "out");
  Floats dgate(n, 1e3f), dup(n, 1e3f);
  geglu_backward(dgate.data(), dup.data(), R.data(), gate.data(), up.data(), n);
  const auto loss = [&] { return dot(geglu_reference(g, u), to_double(R)); };
  expect_close(dgate, finite_difference(g, loss), kGradientTolerance, "dgate");
  expect_close(dup, finite_difference(u, loss), kGradientTolerance, "dup");
  Floats gate_in_place = gate, up_in_place = up;
  geglu_backward(gate_in_place.data(), up_in_place.data(), R.data(), gate_in_place.data(), up_in_place.data(), n);
  EXPECT_EQ(gate_in_place, dgate);
  EXPECT_EQ(up_in_place, dup);
}

TEST(KernelsTest, Attention) {
  struct Case {
    const char* name;
    std::vector<SequenceSpan> sequences;
    AttentionShape shape;
  };
  const Case cases[] = {
      // Two packed sequences of different lengths, grouped-query (2 query heads per kv head).
      {"packed 5+3, H=4 KV=2 D=4", {{0, 5}, {5, 3}}, {8, 4, 2, 4, 5}},
      // Longer than the kernel's 128-row query tile, so several tiles are used.
      {"single 150, H=2 KV=1 D=8", {{0, 150}}, {150, 2, 1, 8, 150}},
      // Gemma-2's rules: a window crossing the tile boundary (the second
      // tile's keys start at 89), a soft cap that bends these scores, and
      // a scale that is not 1/√D; and a window of 2 over packed sequences.
      {"single 150, window 40, softcap 0.8, scale 0.6", {{0, 150}}, {150, 2, 1, 8, 150, 0.6f, 0.8f, 40}},
      {"packed 5+3, window 2, softcap 1.5", {{0, 5}, {5, 3}}, {8, 4, 2, 4, 5, 0.0f, 1.5f, 2}},
  };
  unsigned seed = 70;
  for (const Case& c : cases) {
    SCOPED_TRACE(c.name);
    std::printf("  %s\n", c.name);
    const AttentionShape& s = c.shape;
    const size_t q_size = size_t(s.N) * s.H * s.D, kv_size = size_t(s.N) * s.KV * s.D;
    const Floats q = random_floats(q_size, ++seed), k = random_floats(kv_size, ++seed),
                 v = random_floats(kv_size, ++seed), R = random_floats(q_size, ++seed);
    Doubles qd = to_double(q), kd = to_double(k), vd = to_double(v);

    Floats workspace(attention_workspace_floats(s)), out(q_size), lse(size_t(s.H) * s.N);
    const BatchLayout layout{c.sequences.data(), static_cast<int>(c.sequences.size())};
    attention_forward(out.data(), lse.data(), workspace.data(), q.data(), k.data(), v.data(), layout, s);
    const AttentionResult want = attention_reference(qd, kd, vd, c.sequences, s);
    expect_close(out, want.out, kForwardTolerance, "out");
    expect_close(lse, want.lse, kForwardTolerance, "lse");

    // Written, not accumulated: garbage beforehand must not show through.
    Floats dq(q_size, 1e3f), dk(kv_size, 1e3f), dv(kv_size, 1e3f);
    attention_backward(dq.data(), dk.data(), dv.data(), workspace.data(), R.data(), out.data(), q.data(),
                       k.data(), v.data(), lse.data(), layout, s);
    const auto loss = [&] { return dot(attention_reference(qd, kd, vd, c.sequences, s).out, to_double(R)); };
    expect_close(dq, finite_difference(qd, loss), kGradientTolerance, "dq");
    expect_close(dk, finite_difference(kd, loss), kGradientTolerance, "dk");
    expect_close(dv, finite_difference(vd, loss), kGradientTolerance, "dv");
  }
}

// cross_entropy_forward_backward's row losses, summed as the LM head sums them.
double loss_of_forward_backward(Floats& logits, const std::vector<int>& targets, int V, float grad_scale,
                                float cap = 0.0f) {
  const int R = static_cast<int>(targets.size());
  std::vector<double> row_losses(R, -1.0);
  cross_entropy_forward_backward(row_losses.data(), logits.data(), targets.data(), R, V, grad_scale, cap);
  double total = 0.0;
  sum_in_order(&total, row_losses.data(), row_losses.size());
  return total;
}

TEST(KernelsTest, CrossEntropy) {
  const int V = 7;
  const std::vector<int> targets = {2, -1, 0, 6};  // row 1 predicts nothing
  const int R = static_cast<int>(targets.size());
  const float grad_scale = 0.25f;
  const Floats logits = random_floats(R * V, 81, 3.0f);
  Doubles x = to_double(logits);
  const double want_loss = cross_entropy_reference(x, targets, V);

  Floats untouched = logits;
  std::vector<double> row_losses(R, -1.0);
  cross_entropy_rows(row_losses.data(), untouched.data(), targets.data(), R, V);
  expect_close(Doubles{row_losses[0] + row_losses[1] + row_losses[2] + row_losses[3]}, Doubles{want_loss},
               kForwardTolerance, "loss (rows)");
  EXPECT_EQ(row_losses[1], 0.0) << "a row with target -1 has no loss";
  EXPECT_EQ(untouched, logits) << "cross_entropy_rows must leave the logits alone";

  Floats dlogits = logits;
  const double loss = loss_of_forward_backward(dlogits, targets, V, grad_scale);
  expect_close(Doubles{loss}, Doubles{want_loss}, kForwardTolerance, "loss (forward_backward)");

  // The gradient is of grad_scale · loss; the loss is unscaled.
  Doubles want = finite_difference(x, [&] { return cross_entropy_reference(x, targets, V); });
  for (double& g : want) g *= grad_scale;
  expect_close(dlogits, want, kGradientTolerance, "dlogits");
  for (int j = 0; j < V; ++j) EXPECT_EQ(dlogits[V + j], 0.0f) << "ignored row, column " << j;
}

// A real vocabulary's 200k terms summed in float drift by ~1e-6 relative;
// the loss must hold to float64's to 1e-8 (a Phi-3-shaped model's loss moved
// by 1e-4 against PyTorch before the sum went to double).
TEST(KernelsTest, CrossEntropyOverALargeVocabulary) {
  const int V = 200000;
  const std::vector<int> targets = {12345};
  const Floats logits = random_floats(V, 83, 1.0f);
  const double want = cross_entropy_reference(to_double(logits), targets, V);
  std::vector<double> row_loss(1);
  cross_entropy_rows(row_loss.data(), logits.data(), targets.data(), 1, V);
  EXPECT_NEAR(row_loss[0], want, 1e-8 * want);
  Floats dlogits = logits;
  EXPECT_NEAR(loss_of_forward_backward(dlogits, targets, V, 1.0f), want, 1e-8 * want);
}

// Gemma-2's final-logit soft cap, small enough (2) to bend logits of ±3.
TEST(KernelsTest, CrossEntropySoftCapped) {
  const int V = 7;
  const float cap = 2.0f, grad_scale = 0.5f;
  const std::vector<int> targets = {3, -1, 5};
  const int R = static_cast<int>(targets.size());
  const Floats logits = random_floats(R * V, 82, 3.0f);
  Doubles x = to_double(logits);
  const double want_loss = cross_entropy_reference(x, targets, V, cap);
  ASSERT_GT(std::abs(want_loss - cross_entropy_reference(x, targets, V)), 0.1) << "the cap must matter here";

  std::vector<double> row_losses(R, -1.0);
  cross_entropy_rows(row_losses.data(), logits.data(), targets.data(), R, V, cap);
  expect_close(Doubles{row_losses[0] + row_losses[1] + row_losses[2]}, Doubles{want_loss}, kForwardTolerance, "rows");
  Floats dlogits = logits;
  const double loss = loss_of_forward_backward(dlogits, targets, V, grad_scale, cap);
  expect_close(Doubles{loss}, Doubles{want_loss}, kForwardTolerance, "loss");
  Doubles want = finite_difference(x, [&] { return cross_entropy_reference(x, targets, V, cap); });
  for (double& g : want) g *= grad_scale;
  expect_close(dlogits, want, kGradientTolerance, "dlogits");

  Floats capped = logits;
  softcap_forward(capped.data(), capped.size(), cap);
  for (size_t i = 0; i < capped.size(); ++i) EXPECT_NEAR(capped[i], cap * std::tanh(x[i] / cap), 1e-6) << i;
}

// The loss over vocabulary blocks (an LM head made a block of rows at a
// time): blocks of 5 over 23 entries, the last one short, a target in the
// first and the last block, an ignored row; plain and soft-capped.
void expect_blocks_match_float64(float cap) {
  const int V = 23, block = 5;
  const std::vector<int> targets = {2, -1, 22, 9};
  const int R = static_cast<int>(targets.size());
  const float grad_scale = 0.5f;
  const Floats logits = random_floats(R * V, 84, 3.0f);
  Doubles x = to_double(logits);
  const auto block_of = [&](int first, int rows) {  // (R, rows) of logits' columns
    Floats values(static_cast<size_t>(R) * rows);
    for (int r = 0; r < R; ++r) std::copy_n(&logits[r * V + first], rows, &values[r * rows]);
    return values;
  };
  std::vector<double> stats(R * kCrossEntropyStats, -7.0), row_losses(R, -1.0);
  cross_entropy_block_start(stats.data(), R);
  for (int first = 0; first < V; first += block) {
    const int rows = std::min(block, V - first);
    Floats values = block_of(first, rows);
    cross_entropy_block_fold(stats.data(), values.data(), targets.data(), R, rows, first, cap);
  }
  cross_entropy_block_finish(row_losses.data(), stats.data(), targets.data(), R);
  EXPECT_EQ(row_losses[1], 0.0) << "a row with target -1 has no loss";
  expect_close(Doubles{row_losses[0] + row_losses[2] + row_losses[3]},
               Doubles{cross_entropy_reference(x, targets, V, cap)}, kForwardTolerance, "loss");

  Floats dlogits(R * V, -9.0f);
  for (int first = 0; first < V; first += block) {
    const int rows = std::min(block, V - first);
    Floats values = block_of(first, rows);
    cross_entropy_block_backward(values.data(), stats.data(), targets.data(), R, rows, first, grad_scale, cap);
    for (int r = 0; r < R; ++r) std::copy_n(&values[r * rows], rows, &dlogits[r * V + first]);
  }
  Doubles want = finite_difference(x, [&] { return cross_entropy_reference(x, targets, V, cap); });
  for (double& g : want) g *= grad_scale;
  expect_close(dlogits, want, kGradientTolerance, "dlogits");
  for (int j = 0; j < V; ++j) EXPECT_EQ(dlogits[V + j], 0.0f) << "ignored row, column " << j;
}

TEST(KernelsTest, CrossEntropyOverVocabularyBlocks) { expect_blocks_match_float64(0.0f); }
TEST(KernelsTest, CrossEntropyOverSoftCappedVocabularyBlocks) { expect_blocks_match_float64(2.0f); }

}  // namespace
}  // namespace qft::kernels

// ---- the vector exponentials (kernels/cpu/vector_math.h) against float64 ----

namespace qft::kernels {
namespace {

// SLEEF's u10 functions promise 1.0 ULP; float's ULP at x is ≤ 2⁻²³·|x|.
constexpr double kOneUlp = 0x1.0p-23;

TEST(VectorMath, ExponentialsAreWithinOneUlpOfFloat64) {
  const Floats x = random_floats(1000, 91, 20.0f);  // 1000: full vectors and a tail
  Floats e = x;
  const float shift = 3.0f;
  const float sum = vmath::exp_sum(e.data(), static_cast<int>(e.size()), shift);
  double want_sum = 0.0;
  for (size_t i = 0; i < x.size(); ++i) {
    const double want = std::exp(double(x[i] - shift));  // of the float argument the kernel sees
    want_sum += want;
    ASSERT_LE(std::abs(e[i] - want), kOneUlp * want * 1.01) << "exp at " << x[i];
  }
  EXPECT_NEAR(sum, want_sum, 1e-6 * want_sum);
  EXPECT_NEAR(vmath::exp_sum_double(x.data(), static_cast<int>(x.size()), shift), want_sum, 1e-6 * want_sum);
  Floats scaled = x;
  vmath::exp_scale(scaled.data(), static_cast<int>(scaled.size()), shift, 0.25f);
  for (size_t i = 0; i < x.size(); ++i) ASSERT_EQ(scaled[i], e[i] * 0.25f) << i;
}

TEST(VectorMath, GatesAndCapsFollowFloat64) {
  const Floats g = random_floats(517, 92, 8.0f), u = random_floats(517, 93);
  Floats silu(g.size()), gelu(g.size()), capped = g;
  vmath::silu_mul(silu.data(), g.data(), u.data(), g.size());
  vmath::gelu_mul(gelu.data(), g.data(), u.data(), g.size());
  vmath::softcap(capped.data(), capped.size(), 5.0f);
  for (size_t i = 0; i < g.size(); ++i) {
    const double x = g[i];
    const double want_silu = x / (1.0 + std::exp(-x)) * u[i];
    const double want_gelu = 0.5 * x * (1.0 + std::tanh(0.7978845608028654 * (x + 0.044715 * x * x * x))) * u[i];
    ASSERT_NEAR(silu[i], want_silu, 4 * kOneUlp * std::abs(x * u[i]) + 1e-30) << x;
    ASSERT_NEAR(gelu[i], want_gelu, 8 * kOneUlp * std::abs(x * u[i]) + 1e-30) << x;
    ASSERT_NEAR(capped[i], 5.0 * std::tanh(x / 5.0), 4 * kOneUlp * 5.0) << x;
  }
}

TEST(VectorMath, SinesAndCosinesOfRopeAnglesAreWithinOneDoubleUlp) {
  std::vector<double> angle(301), c(301), s(301);
  for (size_t i = 0; i < angle.size(); ++i) angle[i] = 1.7 * i;  // positions × a frequency, up to 510 rad
  vmath::sincos(c.data(), s.data(), angle.data(), angle.size());
  for (size_t i = 0; i < angle.size(); ++i) {
    ASSERT_NEAR(c[i], std::cos(angle[i]), 0x1.0p-52) << angle[i];
    ASSERT_NEAR(s[i], std::sin(angle[i]), 0x1.0p-52) << angle[i];
  }
}

}  // namespace
}  // namespace qft::kernels
