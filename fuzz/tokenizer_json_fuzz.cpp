// tokenizer.json (with the tokenizer_config.json of SmolLM2's seed beside it)
// loaded into qft's pipeline, then text encoded and the ids decoded again.
#include <vector>

#include "fuzz_util.h"
#include "text/tokenizer.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  qft::fuzz::write_input("tokenizer.json", data, size);
  qft::fuzz::expect_only_qft_errors([&] {
    const auto tokenizer = qft::load_tokenizer(qft::fuzz::scratch_directory());
    for (const char* text : {"Hello, world!", " 12345 x=1; <|im_start|>user\n", "héllo 😀 \t\n  ", ""}) {
      const std::vector<int> ids = tokenizer->encode(text, true);
      tokenizer->decode(ids, false);
      tokenizer->decode(ids, true);
    }
  });
  return 0;
}
