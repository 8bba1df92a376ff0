#include "data/instruction_data.h"

#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "core/error.h"

namespace qft {
namespace {

using nlohmann::json;

std::string required_string(const json& record, const char* key) {
  if (!record.contains(key) || !record[key].is_string()) fail("missing or non-string '", key, "'");
  return record[key].get<std::string>();
}

std::vector<ChatMessage> alpaca_messages(const json& record) {
  std::vector<ChatMessage> messages;
  if (record.contains("system") && record["system"].is_string() && !record["system"].get<std::string>().empty()) {
    messages.push_back({"system", record["system"]});
  }
  if (record.contains("history") && !record["history"].is_null()) {
    if (!record["history"].is_array()) fail("'history' must be a list of [instruction, response] pairs");
    for (const json& turn : record["history"]) {
      if (!turn.is_array() || turn.size() != 2 || !turn[0].is_string() || !turn[1].is_string()) {
        fail("'history' must be a list of [instruction, response] pairs");
      }
      messages.push_back({"user", turn[0]});
      messages.push_back({"assistant", turn[1]});
    }
  }
  std::string prompt = required_string(record, "instruction");
  if (record.contains("input") && record["input"].is_string() && !record["input"].get<std::string>().empty()) {
    prompt += "\n\n" + record["input"].get<std::string>();
  }
  messages.push_back({"user", prompt});
  messages.push_back({"assistant", required_string(record, "output")});
  return messages;
}

std::string sharegpt_role(const std::string& from) {
  if (from == "human" || from == "user") return "user";
  if (from == "gpt" || from == "assistant" || from == "bot" || from == "chatgpt") return "assistant";
  if (from == "system") return "system";
  fail("unknown speaker '", from, "' (expected human, gpt or system)");
}

std::vector<ChatMessage> turns(const json& list, const char* role_key, const char* content_key, bool sharegpt) {
  if (!list.is_array() || list.empty()) fail("the conversation must be a non-empty list");
  std::vector<ChatMessage> messages;
  for (const json& turn : list) {
    if (!turn.is_object()) fail("each turn must be an object");
    const std::string role = required_string(turn, role_key);
    messages.push_back({sharegpt ? sharegpt_role(role) : role, required_string(turn, content_key)});
    const std::string& normalized = messages.back().role;
    if (normalized != "system" && normalized != "user" && normalized != "assistant") {
      fail("unknown role '", role, "' (expected system, user or assistant)");
    }
  }
  // FastChat's rule: the conversation alternates user/assistant after an optional system turn.
  const size_t first = messages[0].role == "system" ? 1 : 0;
  for (size_t i = first; i < messages.size(); ++i) {
    const char* expected = (i - first) % 2 == 0 ? "user" : "assistant";
    if (messages[i].role != expected) fail("turn ", i + 1, " is '", messages[i].role, "' where '", expected, "' was expected");
  }
  if (messages.back().role != "assistant") fail("the conversation does not end with an assistant turn");
  return messages;
}

std::optional<DataFormat> detect(const json& record) {
  if (!record.is_object()) return std::nullopt;
  if (record.contains("conversations")) return DataFormat::ShareGPT;
  if (record.contains("messages")) return DataFormat::Messages;
  if (record.contains("instruction") && record.contains("output")) return DataFormat::Alpaca;
  if (record.contains("text")) return DataFormat::Text;
  return std::nullopt;
}

DataRecord parse_record(const json& record, DataFormat format, int line) {
  if (!record.is_object()) fail("a record must be a JSON object");
  DataRecord parsed;
  parsed.line = line;
  switch (format) {
    case DataFormat::Alpaca: parsed.messages = alpaca_messages(record); break;
    case DataFormat::ShareGPT: parsed.messages = turns(record.value("conversations", json()), "from", "value", true); break;
    case DataFormat::Messages: parsed.messages = turns(record.value("messages", json()), "role", "content", false); break;
    case DataFormat::Text: parsed.text = required_string(record, "text"); break;
  }
  return parsed;
}

// (line, record) pairs: a JSON array's elements (numbered from 1) or JSONL lines.
std::vector<std::pair<int, std::string>> raw_records(const std::string& path, const std::string& contents) {
  std::vector<std::pair<int, std::string>> records;
  const size_t first = contents.find_first_not_of(" \t\r\n");
  if (first != std::string::npos && contents[first] == '[') {
    json array;
    try {
      array = json::parse(contents);
    } catch (const json::exception& error) {
      fail(path, ": not valid JSON: ", error.what());
    }
    for (size_t i = 0; i < array.size(); ++i) records.emplace_back(static_cast<int>(i + 1), array[i].dump());
    return records;
  }
  std::istringstream lines(contents);
  std::string line;
  for (int number = 1; std::getline(lines, line); ++number) {
    if (line.find_first_not_of(" \t\r") != std::string::npos) records.emplace_back(number, line);
  }
  return records;
}

}  // namespace

const char* data_format_name(DataFormat format) {
  switch (format) {
    case DataFormat::Alpaca: return "alpaca";
    case DataFormat::ShareGPT: return "sharegpt";
    case DataFormat::Messages: return "messages";
    case DataFormat::Text: return "text";
  }
  return "?";
}

DataFormat parse_data_format(const std::string& name) {
  for (DataFormat format : {DataFormat::Alpaca, DataFormat::ShareGPT, DataFormat::Messages, DataFormat::Text}) {
    if (name == data_format_name(format)) return format;
  }
  fail("unknown data format '", name, "' (expected alpaca, sharegpt, messages or text)");
}

DataSet read_instruction_data(const std::string& path, std::optional<DataFormat> format, bool strict) {
  std::ifstream file(path, std::ios::binary);
  if (!file) fail(path, ": cannot open");
  std::stringstream buffer;
  buffer << file.rdbuf();
  const std::string contents = buffer.str();
  DataSet data;
  if (path.size() >= 4 && path.compare(path.size() - 4, 4, ".txt") == 0) {
    if (format && *format != DataFormat::Text) fail(path, ": a .txt file holds plain text");
    data.format = DataFormat::Text;
    data.records.push_back({1, {}, contents});
    return data;
  }
  for (const auto& [line, text] : raw_records(path, contents)) {
    try {
      json record;
      try {
        record = json::parse(text);
      } catch (const json::exception&) {
        fail("not valid JSON");
      }
      if (!format) {
        format = detect(record);
        if (!format) fail("cannot tell the format (expected alpaca, sharegpt, messages or text fields); use --data-format");
      }
      data.records.push_back(parse_record(record, *format, line));
    } catch (const Error& error) {
      const std::string where = path + ":" + std::to_string(line) + ": " + error.what();
      if (strict) fail(where);
      data.skipped.push_back(where);
    }
  }
  if (data.records.empty()) fail(path, ": no valid record", data.skipped.empty() ? "" : (" (first problem: " + data.skipped[0] + ")"));
  data.format = *format;
  return data;
}

}  // namespace qft
