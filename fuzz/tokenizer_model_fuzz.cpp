// tokenizer.model (a SentencePiece protobuf) loaded through libsentencepiece
// into qft's pipeline, then text encoded and decoded.
#include <filesystem>
#include <vector>

#include "fuzz_util.h"
#include "text/tokenizer.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string directory = qft::fuzz::scratch_directory() + "/spm";
  std::filesystem::create_directories(directory);
  qft::fuzz::write_input("spm/tokenizer.model", data, size);
  qft::fuzz::expect_only_qft_errors([&] {
    const auto tokenizer = qft::load_tokenizer(directory);
    for (const char* text : {"Hello, world!", " 12345 x=1;\n", "héllo 😀 \t\n  ", ""}) {
      const std::vector<int> ids = tokenizer->encode(text, true);
      tokenizer->decode(ids, false);
    }
  });
  return 0;
}
