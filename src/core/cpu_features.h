#pragma once
// What this CPU offers the kernels, found once at run time (CPUID and the
// kernel's permission for AMX tiles), and what oneDNN will use on it.
#include <string>

namespace qft {

struct CpuFeatures {
  std::string model_name;  // from CPUID's brand string; "" if absent
  bool avx2 = false;
  bool avx512f = false;
  bool avx512_bf16 = false;
  bool amx_bf16 = false;  // the unit exists and the OS lets this process use it
  bool amx_int8 = false;
};

const CpuFeatures& cpu_features();

// The instruction sets found, as "avx2 avx512f avx512_bf16 amx_bf16 amx_int8".
std::string cpu_feature_list(const CpuFeatures& features);

// oneDNN's version and the instruction set its kernels dispatch to here
// (e.g. "oneDNN 2.6.3, isa avx512_core_amx").
std::string gemm_library_description();

}  // namespace qft
