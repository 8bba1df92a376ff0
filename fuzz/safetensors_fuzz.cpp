// The safetensors reader: header length, JSON header, offsets, then every
// floating tensor converted to FP32.
#include <vector>

#include "fuzz_util.h"
#include "io/safetensors.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string path = qft::fuzz::write_input("input.safetensors", data, size);
  qft::fuzz::expect_only_qft_errors([&] {
    const qft::SafetensorsFile file(path);
    for (const auto& [name, record] : file.tensors()) {
      const bool floating = record.dtype == qft::DType::F32 || record.dtype == qft::DType::F16 ||
                            record.dtype == qft::DType::BF16 || record.dtype == qft::DType::F64;
      if (!floating) continue;
      std::vector<float> values(record.nbytes / qft::dtype_size(record.dtype));
      qft::convert_to_f32(values.data(), record);
    }
  });
  return 0;
}
