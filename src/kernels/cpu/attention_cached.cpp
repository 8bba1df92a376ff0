// Attention for incremental decoding: a few queries against the cache, one
// (query, head) pair per task, each with its own row of scores in the
// workspace; the work is small next to the projections.
#include <algorithm>
#include <cmath>

#include "kernels/cpu/vector_math.h"
#include "kernels/kernels.h"

namespace qft::kernels {

size_t attention_cached_workspace_floats(int N, int start, int H) {
  return static_cast<size_t>(N) * H * (start + N);
}

void attention_cached(float* out, float* workspace, const float* q, const float* k_cache, const float* v_cache,
                      int N, int start, int H, int KV, int D, float scale, float softcap, int window) {
  if (scale <= 0) scale = 1.0f / std::sqrt(static_cast<float>(D));
  const int group_size = H / KV;
  const size_t q_stride = static_cast<size_t>(H) * D, kv_stride = static_cast<size_t>(KV) * D;
#pragma omp parallel for schedule(static)
  for (int task = 0; task < N * H; ++task) {
    const int i = task / H, head = task % H, group = head / group_size;
    const int keys = start + i + 1, first = window > 0 ? std::max(0, keys - window) : 0;
    float* s = workspace + static_cast<size_t>(task) * (start + N);  // (keys)
    const float* query = q + i * q_stride + static_cast<size_t>(head) * D;
    float max = -INFINITY;
    for (int j = first; j < keys; ++j) {
      const float* key = k_cache + j * kv_stride + static_cast<size_t>(group) * D;
      float dot = 0.0f;
      for (int d = 0; d < D; ++d) dot += query[d] * key[d];
      s[j] = dot * scale;
      if (softcap > 0) s[j] = softcap * std::tanh(s[j] / softcap);
      max = std::max(max, s[j]);
    }
    const float sum = vmath::exp_sum(s + first, keys - first, max);
    float* o = out + i * q_stride + static_cast<size_t>(head) * D;
    std::fill(o, o + D, 0.0f);
    for (int j = first; j < keys; ++j) {
      const float p = s[j] / sum;
      const float* value = v_cache + j * kv_stride + static_cast<size_t>(group) * D;
      for (int d = 0; d < D; ++d) o[d] += p * value[d];
    }
  }
}

}  // namespace qft::kernels
