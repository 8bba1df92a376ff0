#pragma once
// Instruction data as conversations: Alpaca (instruction/input/output with
// optional history), ShareGPT (conversations of from/value, with system
// turns), messages (role/content) and plain text ({"text": …} records or a
// .txt file), from a JSON array or JSON Lines. The format is detected from
// the first record unless given.
#include <optional>
#include <string>
#include <vector>

#include "text/chat_template.h"

namespace qft {

enum class DataFormat { Alpaca, ShareGPT, Messages, Text };

const char* data_format_name(DataFormat format);
// alpaca | sharegpt | messages | text; throws naming the choices.
DataFormat parse_data_format(const std::string& name);

struct DataRecord {
  int line = 0;                       // 1-based line (JSONL) or record index (JSON array)
  std::vector<ChatMessage> messages;  // Alpaca, ShareGPT, messages
  std::string text;                   // plain text
};

struct DataSet {
  DataFormat format = DataFormat::Alpaca;
  std::vector<DataRecord> records;
  std::vector<std::string> skipped;  // "file:line: reason" for each malformed record
};

// A malformed record is skipped and reported in `skipped`, or, with strict,
// throws naming the file and line. A file that is not JSON, has no valid
// record, or mixes formats in a way detection cannot settle, throws.
DataSet read_instruction_data(const std::string& path, std::optional<DataFormat> format, bool strict);

}  // namespace qft
