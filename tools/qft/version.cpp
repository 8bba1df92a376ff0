// qft --version: what this binary is and the compute paths it takes on this CPU.
#include <cstdio>

#include "build_info.h"
#include "commands.h"
#include "common.h"
#include "core/cpu_features.h"
#include "kernels/kernels.h"

namespace qft::cli {

int run_version() {
  const CpuFeatures& cpu = cpu_features();
  std::printf("qft %s (commit %s)\n", QFT_VERSION, QFT_GIT_COMMIT);
  std::printf("compiler: %s, %s\n", QFT_COMPILER, *QFT_ARCH_FLAGS ? QFT_ARCH_FLAGS : "no -march flags");
  std::printf("cpu: %s\n", cpu.model_name.empty() ? "unknown" : cpu.model_name.c_str());
  std::printf("isa: %s\n", cpu_feature_list(cpu).c_str());
  std::printf("gemm: %s; FP32 sgemm, BF16 %s\n", gemm_library_description().c_str(),
              kernels::native_bf16_matmul() ? "matmul primitive" : "operands rounded, then sgemm (no native BF16 matmul)");
  std::printf("compute: %s by default (--compute bf16|fp32); generate: fp32\n", default_compute_description().c_str());
  return 0;
}

}  // namespace qft::cli
