// The GGUF reader: header, every metadata value (arrays recursively), tensor
// infos, every tensor de-quantized, and what the model loader reads from it
// (the architecture's config and the tokenizer metadata).
#include <functional>
#include <vector>

#include "fuzz_util.h"
#include "io/gguf.h"
#include "model/weights.h"
#include "text/model_tokenizer.h"

namespace {

void visit(const qft::GgufValue& value, int depth) {
  switch (value.type()) {
    case qft::GgufValueType::Array:
      if (depth < 4) {
        for (const qft::GgufValue& element : value.elements()) visit(element, depth + 1);
      }
      break;
    case qft::GgufValueType::String: value.as_string("value"); break;
    case qft::GgufValueType::Float32:
    case qft::GgufValueType::Float64: value.as_float("value"); break;
    case qft::GgufValueType::Bool: value.as_bool("value"); break;
    default: (void)value.as_int("value"); break;
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string path = qft::fuzz::write_input("input.gguf", data, size);
  qft::fuzz::expect_only_qft_errors([&] {
    const qft::GgufFile file(path);
    for (const auto& [key, value] : file.metadata()) visit(value, 0);
    for (const qft::GgufTensor& tensor : file.tensors()) {
      if (!qft::ggml_type_dequantizable(tensor.type) || tensor.numel > (1 << 20)) continue;
      std::vector<float> values(static_cast<size_t>(tensor.numel));
      file.dequantize(tensor, values.data());
    }
  });
  qft::fuzz::expect_only_qft_errors([&] { qft::ModelSource::open(path); });
  qft::fuzz::expect_only_qft_errors([&] {
    const auto tokenizer = qft::load_model_tokenizer(path);
    const std::vector<int> ids = tokenizer->encode("Hello, world! 123 <|im_end|> héllo", true);
    tokenizer->decode(ids, false);
  });
  return 0;
}
