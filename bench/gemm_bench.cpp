// FP32 GEMM throughput of the shapes a SmolLM2-135M training step runs
// (512 rows): oneDNN's sgemm (what qft uses) and OpenBLAS side by side.
#include <benchmark/benchmark.h>
#ifdef QFT_HAVE_OPENBLAS
#include <cblas.h>
#endif

#include "kernels/cpu/gemm.h"

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
#ifdef QFT_HAVE_OPENBLAS
BENCHMARK(BM_openblas)->Apply(shapes);
#endif
BENCHMARK_MAIN();
