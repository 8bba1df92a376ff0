// Causal attention, one (sequence, query head) task per thread, in query
// tiles so only the lower triangle (or, with a sliding window, the band) of
// the score matrix is computed. Only the log-sum-exp of each row is kept;
// backward rebuilds the probabilities.
#include <omp.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>

#include "kernels/cpu/gemm.h"
#include "kernels/kernels.h"

namespace qft::kernels {
namespace {

constexpr int kTile = 128;

size_t tile_floats(const AttentionShape& shape) {
  return static_cast<size_t>(kTile) * shape.max_length;
}

// Pointers to one task's slices; rows of q/out have stride H·D, of k/v KV·D.
struct HeadSlices {
  int length;
  size_t q_stride, kv_stride;
  size_t q_offset, kv_offset;  // first row of the sequence, this head's columns
};

HeadSlices head_slices(const SequenceSpan& sequence, int head, const AttentionShape& shape) {
  const int group = head / (shape.H / shape.KV);
  HeadSlices slices;
  slices.length = sequence.length;
  slices.q_stride = static_cast<size_t>(shape.H) * shape.D;
  slices.kv_stride = static_cast<size_t>(shape.KV) * shape.D;
  slices.q_offset = sequence.start * slices.q_stride + static_cast<size_t>(head) * shape.D;
  slices.kv_offset = sequence.start * slices.kv_stride + static_cast<size_t>(group) * shape.D;
  return slices;
}

// The keys a query tile sees: row r0 + i sees keys first(i) … r0 + i; the
// tile's scores cover keys begin … end − 1.
struct TileKeys {
  int begin, end;
  int first(int i, int r0, int window) const { return window > 0 ? std::max(0, r0 + i - window + 1) : 0; }
  int width() const { return end - begin; }
};

TileKeys tile_keys(int r0, int rows, int window) {
  return {window > 0 ? std::max(0, r0 - window + 1) : 0, r0 + rows};
}

float score_scale(const AttentionShape& shape) {
  return shape.scale > 0 ? shape.scale : 1.0f / std::sqrt(static_cast<float>(shape.D));
}

// scores (rows, keys.width()) = scale · q_tile · k[keys]ᵀ, soft-capped when asked.
void tile_scores(float* scores, const float* q_tile, const float* k, int rows, const TileKeys& keys,
                 const HeadSlices& s, const AttentionShape& shape) {
  gemm(false, true, rows, keys.width(), shape.D, score_scale(shape), q_tile, s.q_stride,
       k + keys.begin * s.kv_stride, s.kv_stride, 0.0f, scores, keys.width());
  if (shape.softcap <= 0) return;
  const size_t count = static_cast<size_t>(rows) * keys.width();
  for (size_t i = 0; i < count; ++i) scores[i] = shape.softcap * std::tanh(scores[i] / shape.softcap);
}

}  // namespace

size_t attention_workspace_floats(const AttentionShape& shape) {
  const size_t expanded = static_cast<size_t>(shape.N) * shape.H * shape.D;
  return 2 * expanded + static_cast<size_t>(omp_get_max_threads()) * 2 * tile_floats(shape);
}

// Per query tile of the longest sequence (rows, keys): q, dout tiles (rows, D),
// probabilities and score gradients (rows, keys) as a; k, v (keys, D) and
// q, dout tiles as b.
GemmOperands attention_gemm_operands(const AttentionShape& shape) {
  GemmOperands operands;
  const size_t D = static_cast<size_t>(shape.D);
  for (int r0 = 0; r0 < shape.max_length; r0 += kTile) {
    const int rows = std::min(kTile, shape.max_length - r0);
    const size_t keys = tile_keys(r0, rows, shape.window).width();
    operands = largest(operands, {rows * std::max(D, keys), keys * D});
  }
  return operands;
}

void attention_forward(float* out, float* lse, float* workspace, const float* q, const float* k,
                       const float* v, const std::vector<SequenceSpan>& sequences,
                       const AttentionShape& shape) {
  const int tasks = static_cast<int>(sequences.size()) * shape.H;
  float* thread_tiles = workspace + 2 * static_cast<size_t>(shape.N) * shape.H * shape.D;
#pragma omp parallel
  {
    float* probs = thread_tiles + omp_get_thread_num() * 2 * tile_floats(shape);  // (kTile, T)
#pragma omp for schedule(dynamic, 1)
    for (int task = 0; task < tasks; ++task) {
      const SequenceSpan& sequence = sequences[task / shape.H];
      const int head = task % shape.H;
      const HeadSlices s = head_slices(sequence, head, shape);
      float* head_lse = lse + static_cast<size_t>(head) * shape.N + sequence.start;
      for (int r0 = 0; r0 < s.length; r0 += kTile) {
        const int rows = std::min(kTile, s.length - r0);
        const TileKeys keys = tile_keys(r0, rows, shape.window);
        const float* q_tile = q + s.q_offset + r0 * s.q_stride;
        tile_scores(probs, q_tile, k + s.kv_offset, rows, keys, s, shape);
        for (int i = 0; i < rows; ++i) {
          float* row = probs + static_cast<size_t>(i) * keys.width();
          const int first = keys.first(i, r0, shape.window) - keys.begin, last = r0 + i - keys.begin;  // visible
          const float max = *std::max_element(row + first, row + last + 1);
          float sum = 0.0f;
          for (int j = first; j <= last; ++j) {
            row[j] = std::exp(row[j] - max);
            sum += row[j];
          }
          const float inverse = 1.0f / sum;
          for (int j = first; j <= last; ++j) row[j] *= inverse;
          std::fill(row, row + first, 0.0f);
          std::fill(row + last + 1, row + keys.width(), 0.0f);
          head_lse[r0 + i] = max + std::log(sum);
        }
        // out tile (rows, D) = probs (rows, keys) · v[keys]
        gemm(false, false, rows, shape.D, keys.width(), 1.0f, probs, keys.width(),
             v + s.kv_offset + keys.begin * s.kv_stride, s.kv_stride, 0.0f, out + s.q_offset + r0 * s.q_stride,
             s.q_stride);
      }
    }
  }
}

void attention_backward(float* dq, float* dk, float* dv, float* workspace, const float* dout,
                        const float* out, const float* q, const float* k, const float* v,
                        const float* lse, const std::vector<SequenceSpan>& sequences,
                        const AttentionShape& shape) {
  const int tasks = static_cast<int>(sequences.size()) * shape.H;
  const float scale = score_scale(shape);
  const size_t expanded = static_cast<size_t>(shape.N) * shape.H * shape.D;
  // Per query head key/value gradients (N, H·D): heads of one group never
  // write the same memory, and are summed per group afterwards.
  float* dk_heads = workspace;
  float* dv_heads = workspace + expanded;
  float* thread_tiles = workspace + 2 * expanded;
  std::memset(dk_heads, 0, 2 * expanded * sizeof(float));
#pragma omp parallel
  {
    float* probs = thread_tiles + omp_get_thread_num() * 2 * tile_floats(shape);  // (kTile, T)
    float* dscores = probs + tile_floats(shape);                                  // (kTile, T)
#pragma omp for schedule(dynamic, 1)
    for (int task = 0; task < tasks; ++task) {
      const SequenceSpan& sequence = sequences[task / shape.H];
      const int head = task % shape.H;
      const HeadSlices s = head_slices(sequence, head, shape);
      const float* head_lse = lse + static_cast<size_t>(head) * shape.N + sequence.start;
      for (int r0 = 0; r0 < s.length; r0 += kTile) {
        const int rows = std::min(kTile, s.length - r0);
        const TileKeys keys = tile_keys(r0, rows, shape.window);
        const int width = keys.width();
        const size_t tile_offset = s.q_offset + r0 * s.q_stride;
        const size_t keys_offset = s.kv_offset + keys.begin * s.kv_stride;  // k, v rows of the tile's keys
        const size_t head_keys_offset = s.q_offset + keys.begin * s.q_stride;  // their rows in dk_heads, dv_heads
        tile_scores(probs, q + tile_offset, k + s.kv_offset, rows, keys, s, shape);
        // dprobs (rows, keys) = dout tile · v[keys]ᵀ
        gemm(false, true, rows, width, shape.D, 1.0f, dout + tile_offset, s.q_stride, v + keys_offset,
             s.kv_stride, 0.0f, dscores, width);
        for (int i = 0; i < rows; ++i) {
          float* p = probs + static_cast<size_t>(i) * width;
          float* ds = dscores + static_cast<size_t>(i) * width;
          const float* dout_row = dout + tile_offset + i * s.q_stride;
          const float* out_row = out + tile_offset + i * s.q_stride;
          float delta = 0.0f;  // Σⱼ pⱼ·dpⱼ = dout·out
          for (int d = 0; d < shape.D; ++d) delta += dout_row[d] * out_row[d];
          const int first = keys.first(i, r0, shape.window) - keys.begin, last = r0 + i - keys.begin;  // visible
          const float row_lse = head_lse[r0 + i];
          for (int j = first; j <= last; ++j) {
            // Through the cap: d(c·tanh(z/c))/dz = 1 − (score/c)².
            const float tanh = shape.softcap > 0 ? p[j] / shape.softcap : 0.0f;
            p[j] = std::exp(p[j] - row_lse);
            ds[j] = p[j] * (ds[j] - delta) * (1.0f - tanh * tanh);
          }
          std::fill(p, p + first, 0.0f);
          std::fill(ds, ds + first, 0.0f);
          std::fill(p + last + 1, p + width, 0.0f);
          std::fill(ds + last + 1, ds + width, 0.0f);
        }
        // dq tile (rows, D) = scale · dscores · k[keys]
        gemm(false, false, rows, shape.D, width, scale, dscores, width, k + keys_offset, s.kv_stride, 0.0f,
             dq + tile_offset, s.q_stride);
        // dk[keys] += scale · dscoresᵀ · q tile;  dv[keys] += probsᵀ · dout tile
        gemm(true, false, width, shape.D, rows, scale, dscores, width, q + tile_offset, s.q_stride, 1.0f,
             dk_heads + head_keys_offset, s.q_stride);
        gemm(true, false, width, shape.D, rows, 1.0f, probs, width, dout + tile_offset, s.q_stride, 1.0f,
             dv_heads + head_keys_offset, s.q_stride);
      }
    }
  }
  const int group_size = shape.H / shape.KV;
#pragma omp parallel for schedule(static)
  for (int n = 0; n < shape.N; ++n) {
    for (int group = 0; group < shape.KV; ++group) {
      float* dk_row = dk + (static_cast<size_t>(n) * shape.KV + group) * shape.D;
      float* dv_row = dv + (static_cast<size_t>(n) * shape.KV + group) * shape.D;
      std::fill(dk_row, dk_row + shape.D, 0.0f);
      std::fill(dv_row, dv_row + shape.D, 0.0f);
      for (int member = 0; member < group_size; ++member) {
        const size_t offset = (static_cast<size_t>(n) * shape.H + group * group_size + member) * shape.D;
        for (int d = 0; d < shape.D; ++d) {
          dk_row[d] += dk_heads[offset + d];
          dv_row[d] += dv_heads[offset + d];
        }
      }
    }
  }
}

}  // namespace qft::kernels
