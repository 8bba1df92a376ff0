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
void round_to_bf16(uint16_t* out, const float* in, int rows, int cols, int ld) {
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

using Key = std::tuple<bool, bool, int, int, int, int, int, float, float>;  // ta, tb, M, N, K, ldb, ldc, alpha, beta

// A product's two staged operands, a (M·K values) then b: in the task's
// scratch when it gave one, else in the thread's own buffers.
template <class T>
std::pair<T*, T*> staged_operands(GemmStaging staging, Buffer<T>& a_buffer, Buffer<T>& b_buffer, size_t a_count,
                                  size_t b_count) {
  if (!staging.data) return {staging_buffer(a_buffer, a_count), staging_buffer(b_buffer, b_count)};
  T* a = static_cast<T*>(staging.data);
  return {a, a + (a_count + 31) / 32 * 32};  // b 64-byte aligned
}

// One thread's BF16 matmuls: primitives by shape, the operands' staging.
class Bf16Matmul {
 public:
  Bf16Matmul() : engine_(dnnl::engine::kind::cpu, 0), stream_(engine_) {}

  void run(bool ta, bool tb, int M, int N, int K, float alpha, const float* a, int lda, const float* b, int ldb,
           float beta, float* c, int ldc, GemmStaging staging) {
    // Stored as it is ((K, N) or (N, K)), densely.
    const int b_rows = tb ? N : K, b_cols = tb ? K : N;
    const auto [a16, b16] = staged_operands(staging, a_, b_, static_cast<size_t>(M) * K, static_cast<size_t>(K) * N);
    round_to_bf16(b16, b, b_rows, b_cols, ldb);
    multiply(ta, tb, M, N, K, alpha, a, lda, a16, b16, b_cols, beta, c, ldc);
  }

  void run(bool ta, bool tb, int M, int N, int K, float alpha, const float* a, int lda, const uint16_t* b16,
           int ldb, float beta, float* c, int ldc) {
    multiply(ta, tb, M, N, K, alpha, a, lda, staging_buffer(a_, static_cast<size_t>(M) * K), b16, ldb, beta, c, ldc);
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
  // c = alpha · op(a rounded into a16) · op(b16) + beta · c.
  void multiply(bool ta, bool tb, int M, int N, int K, float alpha, const float* a, int lda, uint16_t* a16,
                const uint16_t* b16, int ldb, float beta, float* c, int ldc) {
    round_to_bf16(a16, a, ta ? K : M, ta ? M : K, lda);  // (M, K) or (K, M), densely
    const memory::desc a_desc({M, K}, memory::data_type::bf16, ta ? memory::dims{1, M} : memory::dims{K, 1});
    const memory::desc b_desc({K, N}, memory::data_type::bf16, tb ? memory::dims{1, ldb} : memory::dims{ldb, 1});
    const memory::desc c_desc({M, N}, memory::data_type::f32, memory::dims{ldc, 1});
    dnnl::matmul& matmul = primitive({ta, tb, M, N, K, ldb, ldc, alpha, beta}, a_desc, b_desc, c_desc);
    memory a_mem(a_desc, engine_, a16), b_mem(b_desc, engine_, const_cast<uint16_t*>(b16)), c_mem(c_desc, engine_, c);
    matmul.execute(stream_, {{DNNL_ARG_SRC, a_mem}, {DNNL_ARG_WEIGHTS, b_mem}, {DNNL_ARG_DST, c_mem}});
    stream_.wait();
  }

  dnnl::matmul& primitive(const Key& key, const memory::desc& a, const memory::desc& b, const memory::desc& c) {
    const auto found = cache_.find(key);
    if (found != cache_.end()) return found->second;
    if (cache_.size() >= 1024) cache_.clear();  // shapes of attention tiles vary with packing
    dnnl::primitive_attr attr;
    if (std::get<7>(key) != 1.0f) attr.set_output_scales(0, {std::get<7>(key)});
    if (std::get<8>(key) != 0.0f) {
      dnnl::post_ops sum;
      sum.append_sum(std::get<8>(key));
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

// The operand (rows, cols) with leading dimension ld, so, into out (rows, cols).
template <class T>
const float* fp32_operand(float* out, const T* in, int rows, int cols, int ld) {
#pragma omp parallel for schedule(static)
  for (int r = 0; r < rows; ++r) {
    for (int j = 0; j < cols; ++j) out[static_cast<size_t>(r) * cols + j] = bf16_value(in[static_cast<size_t>(r) * ld + j]);
  }
  return out;
}

// BF16 compute where oneDNN has no BF16 matmul: the BF16 operands' values through sgemm.
template <class B>
void emulated_bf16_gemm(bool ta, bool tb, int M, int N, int K, float alpha, const float* a, int lda, const B* b,
                        int ldb, float beta, float* c, int ldc, GemmStaging staging = {}) {
  thread_local Buffer<float> a32, b32;
  const int a_cols = ta ? M : K, b_cols = tb ? K : N;
  const auto [a_out, b_out] = staged_operands(staging, a32, b32, static_cast<size_t>(M) * K, static_cast<size_t>(K) * N);
  const float* a_rounded = fp32_operand(a_out, a, ta ? K : M, a_cols, lda);
  const float* b_rounded = fp32_operand(b_out, b, tb ? N : K, b_cols, ldb);
  dnnl_sgemm(ta ? 'T' : 'N', tb ? 'T' : 'N', M, N, K, alpha, a_rounded, a_cols, b_rounded, b_cols, beta, c, ldc);
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

void gemm(bool transpose_a, bool transpose_b, int M, int N, int K, float alpha, const float* a, int lda,
          const float* b, int ldb, float beta, float* c, int ldc, GemmStaging staging) {
  if (g_compute == Compute::FP32 || M == 0 || N == 0 || K == 0) {
    dnnl_sgemm(transpose_a ? 'T' : 'N', transpose_b ? 'T' : 'N', M, N, K, alpha, a, lda, b, ldb, beta, c, ldc);
  } else if (native_bf16_matmul()) {
    thread_matmul().run(transpose_a, transpose_b, M, N, K, alpha, a, lda, b, ldb, beta, c, ldc, staging);
  } else {
    emulated_bf16_gemm(transpose_a, transpose_b, M, N, K, alpha, a, lda, b, ldb, beta, c, ldc, staging);
  }
}

void gemm(bool transpose_a, bool transpose_b, int M, int N, int K, float alpha, const float* a, int lda,
          const uint16_t* b, int ldb, float beta, float* c, int ldc) {
  if (g_compute == Compute::FP32) {
    thread_local Buffer<float> b32;
    const float* widened = fp32_operand(staging_buffer(b32, static_cast<size_t>(K) * N), b, transpose_b ? N : K,
                                        transpose_b ? K : N, ldb);
    gemm(transpose_a, transpose_b, M, N, K, alpha, a, lda, widened, transpose_b ? K : N, beta, c, ldc);
  } else if (native_bf16_matmul() && M > 0 && N > 0 && K > 0) {
    thread_matmul().run(transpose_a, transpose_b, M, N, K, alpha, a, lda, b, ldb, beta, c, ldc);
  } else {
    emulated_bf16_gemm(transpose_a, transpose_b, M, N, K, alpha, a, lda, b, ldb, beta, c, ldc);
  }
}

}  // namespace qft::kernels
