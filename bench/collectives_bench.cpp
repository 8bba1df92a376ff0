// The collectives of one data-parallel QLion step, blocking and with nothing
// to overlap: for every parameter of a config, the reduce-scatter of its FP32
// gradient by rows and the all-gather of its updated rows (INT8 codes, row
// ranges, 1 % FP32 outliers), as QftStore issues them. Run under mpirun;
// rank 0 prints one JSON line: median seconds per step and bytes sent per rank.
//   mpirun -np 2 build/bench/collectives_bench bench/smollm2-135m-config.json [repeats]
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "core/error.h"
#include "dist/partition.h"
#include "dist/world.h"
#include "model/config.h"
#include "model/parameters.h"

int main(int argc, char** argv) {
  using namespace qft;
  if (argc < 2) {
    std::fprintf(stderr, "usage: mpirun -np N collectives_bench CONFIG.json [repeats]\n");
    return 2;
  }
  try {
    const dist::World& world = dist::world();
    const ModelConfig config = load_model_config(argv[1]);
    const int repeats = argc > 2 ? std::stoi(argv[2]) : 5;
    const int N = world.size();
    size_t largest = 0;
    for (const ParamSpec& spec : parameter_specs(config)) {
      largest = std::max(largest, static_cast<size_t>(shape_numel(spec.shape)));
    }
    std::vector<float> grad(largest, 1.0f), owned(largest), values(largest / 50 + 16);
    std::vector<uint8_t> codes(largest), ranges(largest / 8 * 8 + 64 * 8);
    std::vector<double> seconds;
    uint64_t bytes_before = 0;
    for (int repeat = 0; repeat < repeats; ++repeat) {
      bytes_before = world.traffic().bytes_sent;
      world.barrier();
      const auto start = std::chrono::steady_clock::now();
      for (const ParamSpec& spec : parameter_specs(config)) {
        const bool matrix = spec.shape.size() == 2;
        const int64_t rows = matrix ? spec.shape[0] : 1, cols = shape_numel(spec.shape) / rows;
        std::vector<int64_t> counts, code_counts, code_offsets, range_counts, range_offsets, value_counts, value_offsets;
        for (int r = 0; r < N; ++r) {
          const dist::Range share = dist::share(rows, N, r);
          counts.push_back(share.size() * cols);
          code_offsets.push_back(share.begin * cols);
          code_counts.push_back(share.size() * cols);
          range_offsets.push_back(share.begin * 8);
          range_counts.push_back(share.size() * 8);
          value_offsets.push_back(share.begin * cols / 100 * 4);
          value_counts.push_back(share.size() * cols / 100 * 4);
        }
        world.reduce_scatter(grad.data(), owned.data(), counts).wait();
        if (matrix) {
          dist::Request a = world.all_gather(codes.data(), code_counts, code_offsets);
          dist::Request b = world.all_gather(ranges.data(), range_counts, range_offsets);
          dist::Request c = world.all_gather(values.data(), value_counts, value_offsets);
          a.wait(), b.wait(), c.wait();
        } else {
          for (int64_t& count : counts) count *= 4;
          std::vector<int64_t> offsets(N, 0);
          world.all_gather(grad.data(), counts, offsets).wait();
        }
      }
      seconds.push_back(std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count());
    }
    std::sort(seconds.begin(), seconds.end());
    if (world.is_root()) {
      std::printf("%s\n", nlohmann::json{{"bench", "collectives"}, {"ranks", N}, {"config", argv[1]},
                                         {"median_step_s", seconds[seconds.size() / 2]},
                                         {"bytes_sent_per_rank", world.traffic().bytes_sent - bytes_before}}
                              .dump()
                              .c_str());
    }
  } catch (const qft::Error& error) {
    std::fprintf(stderr, "collectives_bench: %s\n", error.what());
    qft::dist::world().abort(1);
  }
  return 0;
}
