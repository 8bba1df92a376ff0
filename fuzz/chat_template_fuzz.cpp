// The chat-template detector on any Jinja source; a template it recognises
// renders a conversation into its pieces.
#include "fuzz_util.h"
#include "text/chat_template.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string source(reinterpret_cast<const char*>(data), size);
  qft::fuzz::expect_only_qft_errors([&] {
    const qft::ChatTemplate chat = qft::ChatTemplate::detect(source);
    chat.render({{"system", "Be brief."}, {"user", "Hi"}, {"assistant", "Hello"}, {"user", "Bye"}}, true, "<s>", "</s>");
  });
  return 0;
}
