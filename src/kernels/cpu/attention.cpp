// Causal attention, one (sequence, query head) task per thread, in query
// tiles so only the lower triangle of the score matrix is computed. Only the
// log-sum-exp of each row is kept; backward rebuilds the probabilities.
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

// scores (rows, keys) = scale · q_tile · k[0:keys]ᵀ
void tile_scores(float* scores, const float* q_tile, const float* k, int rows, int keys,
                 const HeadSlices& s, int D, float scale) {
  gemm(false, true, rows, keys, D, scale, q_tile, s.q_stride, k,
              s.kv_stride, 0.0f, scores, keys);
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
    const size_t rows = std::min(kTile, shape.max_length - r0), keys = r0 + rows;
    operands = largest(operands, {rows * std::max(D, keys), keys * D});
  }
  return operands;
}

void attention_forward(float* out, float* lse, float* workspace, const float* q, const float* k,
                       const float* v, const std::vector<SequenceSpan>& sequences,
                       const AttentionShape& shape) {
  const int tasks = static_cast<int>(sequences.size()) * shape.H;
  const float scale = 1.0f / std::sqrt(static_cast<float>(shape.D));
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
        const int keys = r0 + rows;
        const float* q_tile = q + s.q_offset + r0 * s.q_stride;
        tile_scores(probs, q_tile, k + s.kv_offset, rows, keys, s, shape.D, scale);
        for (int i = 0; i < rows; ++i) {
          float* row = probs + static_cast<size_t>(i) * keys;
          const int visible = r0 + i + 1;
          const float max = *std::max_element(row, row + visible);
          float sum = 0.0f;
          for (int j = 0; j < visible; ++j) {
            row[j] = std::exp(row[j] - max);
            sum += row[j];
          }
          const float inverse = 1.0f / sum;
          for (int j = 0; j < visible; ++j) row[j] *= inverse;
          std::fill(row + visible, row + keys, 0.0f);
          head_lse[r0 + i] = max + std::log(sum);
        }
        // out tile (rows, D) = probs (rows, keys) · v[0:keys]
        gemm(false, false, rows, shape.D, keys, 1.0f, probs,
                    keys, v + s.kv_offset, s.kv_stride, 0.0f, out + s.q_offset + r0 * s.q_stride,
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
  const float scale = 1.0f / std::sqrt(static_cast<float>(shape.D));
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
        const int keys = r0 + rows;
        const size_t tile_offset = s.q_offset + r0 * s.q_stride;
        tile_scores(probs, q + tile_offset, k + s.kv_offset, rows, keys, s, shape.D, scale);
        // dprobs (rows, keys) = dout tile · v[0:keys]ᵀ
        gemm(false, true, rows, keys, shape.D, 1.0f,
                    dout + tile_offset, s.q_stride, v + s.kv_offset, s.kv_stride, 0.0f, dscores,
                    keys);
        for (int i = 0; i < rows; ++i) {
          float* p = probs + static_cast<size_t>(i) * keys;
          float* ds = dscores + static_cast<size_t>(i) * keys;
          const float* dout_row = dout + tile_offset + i * s.q_stride;
          const float* out_row = out + tile_offset + i * s.q_stride;
          float delta = 0.0f;  // Σⱼ pⱼ·dpⱼ = dout·out
          for (int d = 0; d < shape.D; ++d) delta += dout_row[d] * out_row[d];
          const int visible = r0 + i + 1;
          const float row_lse = head_lse[r0 + i];
          for (int j = 0; j < visible; ++j) {
            p[j] = std::exp(p[j] - row_lse);
            ds[j] = p[j] * (ds[j] - delta);
          }
          std::fill(p + visible, p + keys, 0.0f);
          std::fill(ds + visible, ds + keys, 0.0f);
        }
        // dq tile (rows, D) = scale · dscores · k[0:keys]
        gemm(false, false, rows, shape.D, keys, scale, dscores,
                    keys, k + s.kv_offset, s.kv_stride, 0.0f, dq + tile_offset, s.q_stride);
        // dk[0:keys] += scale · dscoresᵀ · q tile;  dv[0:keys] += probsᵀ · dout tile
        gemm(true, false, keys, shape.D, rows, scale, dscores,
                    keys, q + tile_offset, s.q_stride, 1.0f, dk_heads + s.q_offset, s.q_stride);
        gemm(true, false, keys, shape.D, rows, 1.0f, probs, keys,
                    dout + tile_offset, s.q_stride, 1.0f, dv_heads + s.q_offset, s.q_stride);
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
