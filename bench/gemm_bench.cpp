// GEMM throughput of the shapes a SmolLM2-135M training step runs (512
// rows): oneDNN's FP32 sgemm (what qft uses) and OpenBLAS side by side, and
// oneDNN's matmul primitive with BF16 inputs and FP32 accumulation/output
// (the BF16 compute path's candidate; dnnl_gemm_bf16bf16f32 is not part of
// oneDNN 2.6's public API).
#include <benchmark/benchmark.h>
#include <oneapi/dnnl/dnnl.hpp>
#ifdef QFT_HAVE_OPENBLAS
#include <cblas.h>
#endif

#include "kernels/cpu/gemm.h"

#include <algorithm>
#include <cstdint>
#include <vector>

namespace {

// out (M, N) = a (M, K) · b (N, K)ᵀ: the linear layers' forward layout.
struct Shape {
  int M, N, K;
};

void set_counters(benchmark::State& state, const Shape& s) {
  state.counters["GFLOP/s"] = benchmark::Counter(2.0 * s.M * s.N * s.K, benchmark::Counter::kIsIterationInvariantRate,
                                                 benchmark::Counter::kIs1000);
}

Shape shape_of(const benchmark::State& state) {
  return {static_cast<int>(state.range(0)), static_cast<int>(state.range(1)), static_cast<int>(state.range(2))};
}

#ifdef QFT_HAVE_OPENBLAS
void BM_openblas(benchmark::State& state) {
  const Shape s = shape_of(state);
  std::vector<float> a(size_t(s.M) * s.K, 0.5f), b(size_t(s.N) * s.K, 0.25f), c(size_t(s.M) * s.N);
  for (auto _ : state) {
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, s.M, s.N, s.K, 1.0f, a.data(), s.K, b.data(), s.K, 0.0f,
                c.data(), s.N);
    benchmark::DoNotOptimize(c.data());
  }
  set_counters(state, s);
}

#endif

void BM_onednn(benchmark::State& state) {
  const Shape s = shape_of(state);
  std::vector<float> a(size_t(s.M) * s.K, 0.5f), b(size_t(s.N) * s.K, 0.25f), c(size_t(s.M) * s.N);
  for (auto _ : state) {
    qft::kernels::gemm(false, true, s.M, s.N, s.K, 1.0f, a.data(), s.K, b.data(), s.K, 0.0f, c.data(), s.N);
    benchmark::DoNotOptimize(c.data());
  }
  set_counters(state, s);
}

// The primitive as a BF16 path would run it: created once per shape, the
// weights reordered once into the layout it prefers; the BF16 activations
// and the FP32 output in plain row-major layout.
void BM_onednn_bf16_matmul(benchmark::State& state) {
  const Shape s = shape_of(state);
  using dnnl::memory;
  const dnnl::engine engine(dnnl::engine::kind::cpu, 0);
  dnnl::stream stream(engine);
  const memory::desc a_desc({s.M, s.K}, memory::data_type::bf16, memory::format_tag::ab);
  const memory::desc b_plain({s.K, s.N}, memory::data_type::bf16, memory::format_tag::ba);  // (N, K) rows
  const memory::desc b_any({s.K, s.N}, memory::data_type::bf16, memory::format_tag::any);
  const memory::desc c_desc({s.M, s.N}, memory::data_type::f32, memory::format_tag::ab);
  const dnnl::matmul::primitive_desc pd(dnnl::matmul::desc(a_desc, b_any, c_desc), engine);
  const dnnl::matmul matmul(pd);
  memory a(a_desc, engine), b_rows(b_plain, engine), b(pd.weights_desc(), engine), c(c_desc, engine);
  std::fill_n(static_cast<uint16_t*>(a.get_data_handle()), size_t(s.M) * s.K, uint16_t{0x3f00});       // 0.5
  std::fill_n(static_cast<uint16_t*>(b_rows.get_data_handle()), size_t(s.N) * s.K, uint16_t{0x3e80});  // 0.25
  dnnl::reorder(b_rows, b).execute(stream, b_rows, b);
  stream.wait();
  for (auto _ : state) {
    matmul.execute(stream, {{DNNL_ARG_SRC, a}, {DNNL_ARG_WEIGHTS, b}, {DNNL_ARG_DST, c}});
    stream.wait();
  }
  set_counters(state, s);
  state.SetLabel(pd.impl_info_str());
}

void shapes(benchmark::internal::Benchmark* bench) {
  bench->Args({512, 576, 576})    // q, o projections
      ->Args({512, 192, 576})     // k, v projections (3 kv heads)
      ->Args({512, 1536, 576})    // gate, up
      ->Args({512, 576, 1536})    // down
      ->Args({341, 49152, 576})   // LM head chunk
      ->Args({576, 1536, 512})    // a weight gradient (contraction over tokens)
      ->UseRealTime();
}

}  // namespace

BENCHMARK(BM_onednn)->Apply(shapes);
BENCHMARK(BM_onednn_bf16_matmul)->Apply(shapes);
#ifdef QFT_HAVE_OPENBLAS
BENCHMARK(BM_openblas)->Apply(shapes);
#endif
BENCHMARK_MAIN();
