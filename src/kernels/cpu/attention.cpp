// Causal attention, one (sequence, query head) task at a time per thread, in
// query tiles so only the lower triangle (or, with a sliding window, the
// band) of the score matrix is computed. Only the log-sum-exp of each row is
// kept; backward rebuilds the probabilities. Each task has its own slot of
// the workspace, so its size follows from the shape, not from the threads.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>

#include "kernels/cpu/gemm.h"
#include "kernels/cpu/vector_math.h"
#include "kernels/kernels.h"

namespace qft::kernels {
namespace {

constexpr int kTile = 128;

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
void tile_scores(float* scores, Operand q_tile, Operand k, int rows, const TileKeys& keys,
                 const HeadSlices& s, const AttentionShape& shape, GemmStaging staging) {
  gemm(false, true, rows, keys.width(), shape.D, score_scale(shape), q_tile, s.q_stride,
       k.at(keys.begin * s.kv_stride), s.kv_stride, 0.0f, scores, keys.width(), staging);
  if (shape.softcap <= 0) return;
  const size_t count = static_cast<size_t>(rows) * keys.width();
  for (size_t i = 0; i < count; ++i) scores[i] = shape.softcap * std::tanh(scores[i] / shape.softcap);
}

// Floats of a task's slot per row of its sequence (length L): the tile's
// probabilities and their gradients (rows ≤ min(kTile, L) by keys ≤ L each)
// and the staged operands of one product at a time: at most rows·D + keys·D
// (scores and their gradient) or rows·keys + keys·D values (the rest), so
// L·(D + max(D, kTile)), and 32 more per row for b's 64-byte alignment. A
// multiple of 16 floats, so slots stay 64-byte aligned.
size_t slot_floats_per_row(int D) {
  const size_t values = static_cast<size_t>(D) + std::max(D, kTile) + 32;
  const size_t staging_floats = (gemm_staging_value_bytes() * values + sizeof(float) - 1) / sizeof(float);
  return (2 * kTile + staging_floats + 15) / 16 * 16;
}

// One task's scratch. It lies after the slots of every earlier sequence
// (whose rows come first) and of the earlier heads of its own, so no two
// tasks share one.
struct TaskSlot {
  float* probs;    // (≤ kTile, L)
  float* dscores;  // (≤ kTile, L)
  GemmStaging staging;
};

TaskSlot task_slot(float* slots, const SequenceSpan& sequence, int head, const AttentionShape& shape) {
  const size_t per_row = slot_floats_per_row(shape.D), length = static_cast<size_t>(sequence.length);
  float* slot = slots + (static_cast<size_t>(shape.H) * sequence.start + head * length) * per_row;
  float* staging = slot + 2 * kTile * length;
  return {slot, slot + kTile * length, {staging, (per_row - 2 * kTile) * length * sizeof(float)}};
}

// Row i of a tile's scores (width keys) becomes its probabilities over the
// visible keys first … last (zero elsewhere); returns the row's log-sum-exp.
float softmax_row(float* row, int first, int last, int width) {
  const float max = *std::max_element(row + first, row + last + 1);
  const float sum = vmath::exp_sum(row + first, last - first + 1, max);
  const float inverse = 1.0f / sum;
  for (int j = first; j <= last; ++j) row[j] *= inverse;
  std::fill(row, row + first, 0.0f);
  std::fill(row + last + 1, row + width, 0.0f);
  return max + std::log(sum);
}

// One task's forward, tile by tile.
void forward_task(float* out, float* head_lse, Operand q, Operand k, Operand v, const HeadSlices& s,
                  const TaskSlot& slot, const AttentionShape& shape) {
  for (int r0 = 0; r0 < s.length; r0 += kTile) {
    const int rows = std::min(kTile, s.length - r0);
    const TileKeys keys = tile_keys(r0, rows, shape.window);
    tile_scores(slot.probs, q.at(s.q_offset + r0 * s.q_stride), k.at(s.kv_offset), rows, keys, s, shape, slot.staging);
    for (int i = 0; i < rows; ++i) {
      const int first = keys.first(i, r0, shape.window) - keys.begin, last = r0 + i - keys.begin;  // visible
      head_lse[r0 + i] = softmax_row(slot.probs + static_cast<size_t>(i) * keys.width(), first, last, keys.width());
    }
    // out tile (rows, D) = probs (rows, keys) · v[keys]
    gemm(false, false, rows, shape.D, keys.width(), 1.0f, slot.probs, keys.width(),
         v.at(s.kv_offset + keys.begin * s.kv_stride), s.kv_stride, 0.0f, out + s.q_offset + r0 * s.q_stride,
         s.q_stride, slot.staging);
  }
}

// Row i of a tile: the scores p (width) become probabilities again, from the
// saved log-sum-exp, and ds, holding dprobs, the scores' gradients.
void score_gradient_row(float* p, float* ds, const float* dout_row, const float* out_row, float row_lse, int first,
                        int last, int width, const AttentionShape& shape) {
  float delta = 0.0f;  // Σⱼ pⱼ·dpⱼ = dout·out
  for (int d = 0; d < shape.D; ++d) delta += dout_row[d] * out_row[d];
  if (shape.softcap > 0) {
    for (int j = first; j <= last; ++j) {
      // Through the cap: d(c·tanh(z/c))/dz = 1 − (score/c)².
      const float tanh = p[j] / shape.softcap;
      ds[j] = (ds[j] - delta) * (1.0f - tanh * tanh);
    }
  } else {
    for (int j = first; j <= last; ++j) ds[j] -= delta;
  }
  vmath::exp_scale(p + first, last - first + 1, row_lse, 1.0f);
  for (int j = first; j <= last; ++j) ds[j] *= p[j];
  std::fill(p, p + first, 0.0f);
  std::fill(ds, ds + first, 0.0f);
  std::fill(p + last + 1, p + width, 0.0f);
  std::fill(ds + last + 1, ds + width, 0.0f);
}

// Per query head key/value gradients (N, H·D), which heads of one group
// write apart and backward sums per group at the end.
struct HeadGradients {
  float* dk;
  float* dv;
};

// One task's backward, tile by tile.
void backward_task(float* dq, HeadGradients heads, const float* dout, const float* out, Operand q, Operand k,
                   Operand v, const float* head_lse, const HeadSlices& s, const TaskSlot& slot,
                   const AttentionShape& shape) {
  const float scale = score_scale(shape);
  for (int r0 = 0; r0 < s.length; r0 += kTile) {
    const int rows = std::min(kTile, s.length - r0);
    const TileKeys keys = tile_keys(r0, rows, shape.window);
    const int width = keys.width();
    const size_t tile_offset = s.q_offset + r0 * s.q_stride;
    const size_t keys_offset = s.kv_offset + keys.begin * s.kv_stride;     // k, v rows of the tile's keys
    const size_t head_keys_offset = s.q_offset + keys.begin * s.q_stride;  // their rows in the head gradients
    tile_scores(slot.probs, q.at(tile_offset), k.at(s.kv_offset), rows, keys, s, shape, slot.staging);
    // dprobs (rows, keys) = dout tile · v[keys]ᵀ
    gemm(false, true, rows, width, shape.D, 1.0f, dout + tile_offset, s.q_stride, v.at(keys_offset), s.kv_stride, 0.0f,
         slot.dscores, width, slot.staging);
    for (int i = 0; i < rows; ++i) {
      const int first = keys.first(i, r0, shape.window) - keys.begin, last = r0 + i - keys.begin;  // visible
      score_gradient_row(slot.probs + static_cast<size_t>(i) * width, slot.dscores + static_cast<size_t>(i) * width,
                         dout + tile_offset + i * s.q_stride, out + tile_offset + i * s.q_stride, head_lse[r0 + i],
                         first, last, width, shape);
    }
    // dq tile (rows, D) = scale · dscores · k[keys]
    gemm(false, false, rows, shape.D, width, scale, slot.dscores, width, k.at(keys_offset), s.kv_stride, 0.0f,
         dq + tile_offset, s.q_stride, slot.staging);
    // dk[keys] += scale · dscoresᵀ · q tile;  dv[keys] += probsᵀ · dout tile
    gemm(true, false, width, shape.D, rows, scale, slot.dscores, width, q.at(tile_offset), s.q_stride, 1.0f,
         heads.dk + head_keys_offset, s.q_stride, slot.staging);
    gemm(true, false, width, shape.D, rows, 1.0f, slot.probs, width, dout + tile_offset, s.q_stride, 1.0f,
         heads.dv + head_keys_offset, s.q_stride, slot.staging);
  }
}

}  // namespace

size_t attention_workspace_floats(const AttentionShape& shape) {
  const size_t expanded = static_cast<size_t>(shape.N) * shape.H * shape.D;
  return 2 * expanded + static_cast<size_t>(shape.N) * shape.H * slot_floats_per_row(shape.D);
}

void attention_forward(float* out, float* lse, float* workspace, Operand q, Operand k, Operand v,
                       const BatchLayout& batch, const AttentionShape& shape) {
  float* slots = workspace + 2 * static_cast<size_t>(shape.N) * shape.H * shape.D;
#pragma omp parallel for schedule(dynamic, 1)
  for (int task = 0; task < batch.count * shape.H; ++task) {
    const SequenceSpan& sequence = batch.sequences[task / shape.H];
    const int head = task % shape.H;
    forward_task(out, lse + static_cast<size_t>(head) * shape.N + sequence.start, q, k, v,
                 head_slices(sequence, head, shape), task_slot(slots, sequence, head, shape), shape);
  }
}

void attention_backward(float* dq, float* dk, float* dv, float* workspace, const float* dout,
                        const float* out, Operand q, Operand k, Operand v,
                        const float* lse, const BatchLayout& batch, const AttentionShape& shape) {
  const size_t expanded = static_cast<size_t>(shape.N) * shape.H * shape.D;
  float* dk_heads = workspace;  // (N, H·D)
  float* dv_heads = workspace + expanded;
  float* slots = workspace + 2 * expanded;
  std::memset(dk_heads, 0, 2 * expanded * sizeof(float));
#pragma omp parallel for schedule(dynamic, 1)
  for (int task = 0; task < batch.count * shape.H; ++task) {
    const SequenceSpan& sequence = batch.sequences[task / shape.H];
    const int head = task % shape.H;
    backward_task(dq, {dk_heads, dv_heads}, dout, out, q, k, v, lse + static_cast<size_t>(head) * shape.N + sequence.start,
                  head_slices(sequence, head, shape), task_slot(slots, sequence, head, shape), shape);
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
