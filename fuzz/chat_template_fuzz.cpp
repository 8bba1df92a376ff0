// The Jinja engine on any template source: parsing, then rendering a
// conversation with the assistant mask (only qft errors may escape).
#include "fuzz_util.h"
#include "text/chat_template.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string source(reinterpret_cast<const char*>(data), size);
  qft::fuzz::expect_only_qft_errors([&] {
    const qft::ChatTemplate chat = qft::ChatTemplate::from_source(source, "fuzz");
    chat.render({{"system", "Be brief."}, {"user", "Hi"}, {"assistant", "Hello"}, {"user", "Bye"}}, true,
                {"<s>", "</s>", "<pad>"});
  });
  return 0;
}
