// The instruction-data reader. The first byte picks the file's extension
// (.json, .jsonl, .txt), the format (detected, or forced to each of the four)
// and strict or skipping; the rest is the file.
#include <optional>

#include "data/instruction_data.h"
#include "fuzz_util.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using qft::DataFormat;
  if (size == 0) return 0;
  static const char* const names[] = {"data.json", "data.jsonl", "data.txt"};
  static const std::optional<DataFormat> formats[] = {std::nullopt, DataFormat::Alpaca, DataFormat::ShareGPT,
                                                      DataFormat::Messages, DataFormat::Text};
  const uint8_t choice = data[0];
  const std::string path = qft::fuzz::write_input(names[choice % 3], data + 1, size - 1);
  const std::optional<DataFormat> format = formats[(choice / 3) % 5];
  const bool strict = (choice / 15) % 2;
  qft::fuzz::expect_only_qft_errors([&] { qft::read_instruction_data(path, format, strict); });
  return 0;
}
