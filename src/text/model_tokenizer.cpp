#include "text/model_tokenizer.h"

#include <filesystem>

#include "core/error.h"

namespace qft {
namespace {

int optional_id(const GgufFile& file, const std::string& key) {
  return file.has(key) ? static_cast<int>(file.get_uint(key)) : -1;
}

std::optional<bool> optional_flag(const GgufFile& file, const std::string& key) {
  if (!file.has(key)) return std::nullopt;
  return file.get_bool(key);
}

}  // namespace

GgufTokenizerData gguf_tokenizer_data(const GgufFile& file) {
  if (!file.has("tokenizer.ggml.model")) fail(file.path(), ": no tokenizer (tokenizer.ggml.model is missing)");
  GgufTokenizerData data;
  data.model = file.get_string("tokenizer.ggml.model");
  if (file.has("tokenizer.ggml.pre")) data.pre = file.get_string("tokenizer.ggml.pre");
  data.tokens = file.get_string_array("tokenizer.ggml.tokens");
  if (file.has("tokenizer.ggml.scores")) {
    for (double score : file.get_float_array("tokenizer.ggml.scores")) data.scores.push_back(static_cast<float>(score));
  }
  if (file.has("tokenizer.ggml.token_type")) {
    for (int64_t type : file.get_int_array("tokenizer.ggml.token_type")) data.token_types.push_back(static_cast<int32_t>(type));
  }
  if (file.has("tokenizer.ggml.merges")) data.merges = file.get_string_array("tokenizer.ggml.merges");
  data.bos = optional_id(file, "tokenizer.ggml.bos_token_id");
  data.eos = optional_id(file, "tokenizer.ggml.eos_token_id");
  data.unk = optional_id(file, "tokenizer.ggml.unknown_token_id");
  data.pad = optional_id(file, "tokenizer.ggml.padding_token_id");
  data.add_bos = optional_flag(file, "tokenizer.ggml.add_bos_token");
  data.add_eos = optional_flag(file, "tokenizer.ggml.add_eos_token");
  data.add_space_prefix = optional_flag(file, "tokenizer.ggml.add_space_prefix");
  if (file.has("tokenizer.chat_template")) data.chat_template = file.get_string("tokenizer.chat_template");
  return data;
}

std::unique_ptr<Tokenizer> load_model_tokenizer(const std::string& path) {
  if (std::filesystem::is_directory(path)) return load_tokenizer(path);
  const GgufFile file(path);
  return load_tokenizer(gguf_tokenizer_data(file));
}

}  // namespace qft
