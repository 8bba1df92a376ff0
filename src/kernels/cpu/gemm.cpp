#include "kernels/cpu/gemm.h"

#include <oneapi/dnnl/dnnl.h>
#include <omp.h>

#include <algorithm>
#include <map>
#include <oneapi/dnnl/dnnl.hpp>
#include <tuple>

#include "core/float16.h"
#include "core/memory.h"
#include "kernels/kernels.h"

namespace qft::kernels {
namespace {

Compute g_compute = Compute::FP32;

using dnnl::memory;

// The operand (rows, cols) with leading dimension ld, rounded to BF16 into a
// dense (rows, cols) buffer.
void round_rows_to_bf16(uint16_t* out, const float* in, int rows, int cols, int ld) {
#pragma omp parallel for schedule(static)
  for (int r = 0; r < rows; ++r) {
    float_to_bf16_row(out + static_cast<size_t>(r) * cols, in + static_cast<size_t>(r) * ld, cols);
  }
}

// A growing per-thread staging buffer (accounted as workspace).
template <class T>
T* staging_buffer(Buffer<T>& buffer, size_t count) {
  if (buffer.size() < count) {
    buffer = Buffer<T>();  // freed first: the old and the new never coexist
    buffer = Buffer<T>(MemCategory::Workspace, count);
  }
  return buffer.data();
}

// ta, tb, M, N, K, lda (0: a staged densely), ldb, ldc, alpha, beta
using Key = std::tuple<bool, bool, int, int, int, int, int, int, float, float>;

// A product's two staged operands, a (a_count values) then b: in the task's
// scratch when it gave one, else in the thread's own buffers.
template <class T>
std::pair<T*, T*> staged_operands(GemmStaging staging, Buffer<T>& a_buffer, Buffer<T>& b_buffer, size_t a_count,
                                  size_t b_count) {
  if (!staging.data) return {staging_buffer(a_buffer, a_count), staging_buffer(b_buffer, b_count)};
  T* a = static_cast<T*>(staging.data);
  return {a, a + (a_count + 31) / 32 * 32};  // b 64-byte aligned
}

// An operand of BF16 compute's matmul: a BF16 one as it is, an FP32 one
// rounded into `staged`, densely.
const uint16_t* bf16_operand(Operand x, uint16_t* staged, int rows, int cols, int ld) {
  if (x.bf16) return x.bf16;
  round_rows_to_bf16(staged, x.fp32, rows, cols, ld);
  return staged;
}

// One thread's BF16 matmuls: primitives by shape, the operands' staging.
class Bf16Matmul {
 public:
  Bf16Matmul() : engine_(dnnl::engine::kind::cpu, 0), stream_(engine_) {}

  // a (M, K) or its transpose, b (K, N) or its transpose, as stored; the
  // FP32 ones are rounded densely.
  void run(bool ta, bool tb, int M, int N, int K, float alpha, Operand a, int lda, Operand b, int ldb, float beta,
           float* c, int ldc, GemmStaging staging) {
    const size_t a_count = a.bf16 ? 0 : static_cast<size_t>(M) * K, b_count = b.bf16 ? 0 : static_cast<size_t>(K) * N;
    const auto [a_staged, b_staged] = staged_operands(staging, a_, b_, a_count, b_count);
    const uint16_t* b16 = bf16_operand(b, b_staged, tb ? N : K, tb ? K : N, ldb);
    const uint16_t* a16 = bf16_operand(a, a_staged, ta ? K : M, ta ? M : K, lda);
    if (!a.bf16) lda = ta ? M : K;  // staged densely
    if (!b.bf16) ldb = tb ? K : N;
    const memory::desc a_desc({M, K}, memory::data_type::bf16, ta ? memory::dims{1, lda} : memory::dims{lda, 1});
    const memory::desc b_desc({K, N}, memory::data_type::bf16, tb ? memory::dims{1, ldb} : memory::dims{ldb, 1});
    const memory::desc c_desc({M, N}, memory::data_type::f32, memory::dims{ldc, 1});
    dnnl::matmul& matmul = primitive({ta, tb, M, N, K, lda, ldb, ldc, alpha, beta}, a_desc, b_desc, c_desc);
    memory a_mem(a_desc, engine_, const_cast<uint16_t*>(a16)), b_mem(b_desc, engine_, const_cast<uint16_t*>(b16));
    memory c_mem(c_desc, engine_, c);
    matmul.execute(stream_, {{DNNL_ARG_SRC, a_mem}, {DNNL_ARG_WEIGHTS, b_mem}, {DNNL_ARG_DST, c_mem}});
    stream_.wait();
  }

  // x (rows, cols) rounded into the staging of `a` operands.
  const uint16_t* stage_a(const float* x, int rows, int cols) {
    uint16_t* staged = staging_buffer(a_, static_cast<size_t>(rows) * cols);
    round_rows_to_bf16(staged, x, rows, cols, cols);
    return staged;
  }

  // Whether oneDNN has a BF16 matmul on this CPU (asked once).
  bool available() {
    try {
      const memory::desc a({16, 16}, memory::data_type::bf16, memory::format_tag::ab);
      const memory::desc c({16, 16}, memory::data_type::f32, memory::format_tag::ab);
      dnnl::matmul::primitive_desc(dnnl::matmul::desc(a, a, c), engine_);
      return true;
    } catch (const dnnl::error&) {
      return false;
    }
  }

 private:
  dnnl::matmul& primitive(const Key& key, const memory::desc& a, const memory::desc& b, const memory::desc& c) {
    const auto found = cache_.find(key);
    if (found != cache_.end()) return found->second;
    if (cache_.size() >= 1024) cache_.clear();  // shapes of attention tiles vary with packing
    dnnl::primitive_attr attr;
    if (std::get<8>(key) != 1.0f) attr.set_output_scales(0, {std::get<8>(key)});
    if (std::get<9>(key) != 0.0f) {
      dnnl::post_ops sum;
      sum.append_sum(std::get<9>(key));
      attr.set_post_ops(sum);
    }
    const dnnl::matmul::primitive_desc desc(dnnl::matmul::desc(a, b, c), attr, engine_);
    return cache_.emplace(key, dnnl::matmul(desc)).first->second;
  }

  dnnl::engine engine_;
  dnnl::stream stream_;
  std::map<Key, dnnl::matmul> cache_;
  Buffer<uint16_t> a_, b_;
};

Bf16Matmul& thread_matmul() {
  thread_local Bf16Matmul matmul;
  return matmul;
}

// An operand's value as BF16 compute multiplies it, in FP32: rounded from
// FP32, widened (exactly) from BF16.
float bf16_value(float x) { return bf16_to_float(float_to_bf16(x)); }
float bf16_value(uint16_t x) { return bf16_to_float(x); }

// The operand (rows, cols) with leading dimension ld, each value through
// `value`, into out (rows, cols).
template <class T, class Value>
const float* fp32_operand(float* out, const T* in, int rows, int cols, int ld, Value value) {
#pragma omp parallel for schedule(static)
  for (int r = 0; r < rows; ++r) {
    for (int j = 0; j < cols; ++j) out[static_cast<size_t>(r) * cols + j] = value(in[static_cast<size_t>(r) * ld + j]);
  }
  return out;
}

// sgemm on the operands' values as `compute` multiplies them: BF16 compute
// where oneDNN has no BF16 matmul (every operand rounded, densely), or FP32
// compute with a BF16 operand (that one widened; FP32 ones as they are).
void sgemm_of_values(bool ta, bool tb, int M, int N, int K, float alpha, Operand a, int lda, Operand b, int ldb,
                     float beta, float* c, int ldc, GemmStaging staging, Compute compute) {
  thread_local Buffer<float> a32, b32;
  const bool stage_a = a.bf16 || compute == Compute::BF16, stage_b = b.bf16 || compute == Compute::BF16;
  const auto [a_out, b_out] = staged_operands(staging, a32, b32, stage_a ? static_cast<size_t>(M) * K : 0,
                                              stage_b ? static_cast<size_t>(K) * N : 0);
  // The operand's values and leading dimension.
  const auto values = [](float* out, Operand x, int rows, int cols, int ld) -> std::pair<const float*, int> {
    if (x.bf16) return {fp32_operand(out, x.bf16, rows, cols, ld, [](uint16_t v) { return bf16_value(v); }), cols};
    if (!out) return {x.fp32, ld};
    return {fp32_operand(out, x.fp32, rows, cols, ld, [](float v) { return bf16_value(v); }), cols};
  };
  const auto [a_values, a_ld] = values(stage_a ? a_out : nullptr, a, ta ? K : M, ta ? M : K, lda);
  const auto [b_values, b_ld] = values(stage_b ? b_out : nullptr, b, tb ? N : K, tb ? K : N, ldb);
  dnnl_sgemm(ta ? 'T' : 'N', tb ? 'T' : 'N', M, N, K, alpha, a_values, a_ld, b_values, b_ld, beta, c, ldc);
}

}  // namespace

GemmOperands largest(GemmOperands x, GemmOperands y) { return {std::max(x.a, y.a), std::max(x.b, y.b)}; }

size_t gemm_staging_value_bytes() {
  if (g_compute == Compute::FP32) return 0;
  // Staged as BF16 for the matmul primitive, as rounded FP32 for sgemm.
  return native_bf16_matmul() ? sizeof(uint16_t) : sizeof(float);
}

size_t compute_staging_bytes(GemmOperands products) { return gemm_staging_value_bytes() * (products.a + products.b); }

void set_compute(Compute compute) { g_compute = compute; }
Compute compute() { return g_compute; }

bool native_bf16_matmul() {
  static const bool available = thread_matmul().available();
  return available;
}

Operand round_once(const float* x, int rows, int cols) {
  if (g_compute == Compute::FP32 || !native_bf16_matmul()) return x;
  return thread_matmul().stage_a(x, rows, cols);
}

void gemm(bool transpose_a, bool transpose_b, int M, int N, int K, float alpha, Operand a, int lda, Operand b,
          int ldb, float beta, float* c, int ldc, GemmStaging staging) {
  if (a.fp32 && b.fp32 && (g_compute == Compute::FP32 || M == 0 || N == 0 || K == 0)) {
    dnnl_sgemm(transpose_a ? 'T' : 'N', transpose_b ? 'T' : 'N', M, N, K, alpha, a.fp32, lda, b.fp32, ldb, beta, c, ldc);
  } else if (g_compute == Compute::BF16 && native_bf16_matmul() && M > 0 && N > 0 && K > 0) {
    thread_matmul().run(transpose_a, transpose_b, M, N, K, alpha, a, lda, b, ldb, beta, c, ldc, staging);
  } else {
    sgemm_of_values(transpose_a, transpose_b, M, N, K, alpha, a, lda, b, ldb, beta, c, ldc, staging, g_compute);
  }
}

}  // namespace qft::kernels
