// Tokenizers from an HF directory, and the files that let HF load one back.
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "core/error.h"
#include "io/atomic_file.h"
#include "io/mapped_file.h"
#include "text/pipeline_tokenizer.h"
#include "text/sentencepiece_model.h"
#include "text/tokenizer.h"

namespace qft {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;
using text::PipelineTokenizer;

json read_json(const fs::path& path) {
  std::ifstream file(path);
  if (!file) fail(path.string(), ": cannot open");
  try {
    return json::parse(file);
  } catch (const json::exception& error) {
    fail(path.string(), ": invalid JSON: ", error.what());
  }
}

// The parts of tokenizer_config.json (and chat_template.json/.jinja) a tokenizer uses.
struct TokenizerConfig {
  bool present = false;
  std::optional<std::string> bos, eos, pad;
  std::optional<bool> add_bos, add_eos;
  std::string chat_template;
};

// A special token is written as "<s>" or {"content": "<s>", ...}, or null.
std::optional<std::string> token_name(const json& config, const char* key) {
  if (!config.contains(key) || config.at(key).is_null()) return std::nullopt;
  const json& value = config.at(key);
  if (value.is_string()) return value.get<std::string>();
  if (value.is_object() && value.contains("content")) return value.at("content").get<std::string>();
  return std::nullopt;
}

// A chat template is a string, or a list of {"name", "template"} (the "default" one wins).
std::string chat_template_of(const json& value) {
  if (value.is_string()) return value.get<std::string>();
  if (!value.is_array() || value.empty()) return "";
  for (const auto& entry : value) {
    if (entry.value("name", "") == "default") return entry.value("template", "");
  }
  return value.front().value("template", "");
}

TokenizerConfig read_config(const fs::path& directory) {
  TokenizerConfig config;
  const fs::path path = directory / "tokenizer_config.json";
  if (fs::exists(path)) {
    const json spec = read_json(path);
    config.present = true;
    config.bos = token_name(spec, "bos_token");
    config.eos = token_name(spec, "eos_token");
    config.pad = token_name(spec, "pad_token");
    if (spec.contains("add_bos_token") && spec.at("add_bos_token").is_boolean()) config.add_bos = spec.at("add_bos_token").get<bool>();
    if (spec.contains("add_eos_token") && spec.at("add_eos_token").is_boolean()) config.add_eos = spec.at("add_eos_token").get<bool>();
    if (spec.contains("chat_template")) config.chat_template = chat_template_of(spec.at("chat_template"));
  }
  if (fs::exists(directory / "chat_template.jinja")) {
    std::ifstream file(directory / "chat_template.jinja");
    std::stringstream text;
    text << file.rdbuf();
    config.chat_template = text.str();
  } else if (fs::exists(directory / "chat_template.json")) {
    config.chat_template = chat_template_of(read_json(directory / "chat_template.json").value("chat_template", json()));
  }
  return config;
}

std::optional<int> lookup(const Tokenizer& tokenizer, const std::optional<std::string>& name, const fs::path& config) {
  if (!name) return std::nullopt;
  const auto id = tokenizer.token_to_id(*name);
  if (!id) fail(config.string(), ": special token '", *name, "' is not in the vocabulary");
  return id;
}

std::unique_ptr<Tokenizer> from_tokenizer_json(const fs::path& directory) {
  const fs::path path = directory / "tokenizer.json";
  auto tokenizer = text::tokenizer_from_json(read_json(path), path.string());
  const TokenizerConfig config = read_config(directory);
  const fs::path config_path = directory / "tokenizer_config.json";
  std::optional<int> bos = lookup(*tokenizer, config.bos, config_path);
  std::optional<int> eos = lookup(*tokenizer, config.eos, config_path);
  // Without a config, the post-processor's single added token on each side says it.
  const auto& post = tokenizer->post_processor();
  if (!config.present && post.prefix.size() == 1) bos = post.prefix[0];
  if (!config.present && post.suffix.size() == 1) eos = post.suffix[0];
  tokenizer->set_metadata(bos, eos, lookup(*tokenizer, config.pad, config_path), config.chat_template);
  return tokenizer;
}

// HF's LlamaTokenizerFast around the SentencePiece model: control and unknown pieces are
// special added tokens, user-defined pieces plain ones; BOS (add_bos_token, default on)
// and EOS (add_eos_token, default off) around each sequence.
std::unique_ptr<Tokenizer> from_sentencepiece(const fs::path& directory) {
  const fs::path path = directory / "tokenizer.model";
  auto model = std::make_unique<text::SentencePieceModel>(path.string());
  const text::SentencePieceInfo& info = model->info();
  const TokenizerConfig config = read_config(directory);
  const std::optional<int> bos = model->bos_id(), eos = model->eos_id();

  text::PipelineParts parts;
  parts.kind = "SentencePiece";
  for (size_t id = 0; id < info.pieces.size(); ++id) {
    const int type = info.types[id];
    if (type != 2 && type != 3 && type != 4) continue;
    parts.added_tokens.push_back(
        text::AddedToken{static_cast<int>(id), info.pieces[id], false, false, false, false, type != 4});
  }
  const char* metaspace = "\xE2\x96\x81";
  json decoders = {{{"type", "Replace"}, {"pattern", {{"String", metaspace}}}, {"content", " "}},
                   {{"type", "ByteFallback"}},
                   {{"type", "Fuse"}}};
  if (info.add_dummy_prefix) decoders.push_back({{"type", "Strip"}, {"content", " "}, {"start", 1}, {"stop", 0}});
  parts.decoder = text::make_decoder({{"type", "Sequence"}, {"decoders", decoders}}, path.string());
  if (config.add_bos.value_or(true)) {
    if (!bos) fail(path.string(), ": add_bos_token is set but the model has no BOS piece");
    parts.post_processor.prefix = {*bos};
  }
  if (config.add_eos.value_or(false)) {
    if (!eos) fail(path.string(), ": add_eos_token is set but the model has no EOS piece");
    parts.post_processor.suffix = {*eos};
  }
  const std::optional<int> pad = model->pad_id();
  parts.model = std::move(model);
  auto tokenizer = std::make_unique<PipelineTokenizer>(std::move(parts));
  const fs::path config_path = directory / "tokenizer_config.json";
  tokenizer->set_metadata(config.bos ? lookup(*tokenizer, config.bos, config_path) : bos,
                          config.eos ? lookup(*tokenizer, config.eos, config_path) : eos,
                          config.pad ? lookup(*tokenizer, config.pad, config_path) : pad, config.chat_template);
  return tokenizer;
}

}  // namespace

std::unique_ptr<Tokenizer> load_tokenizer(const std::string& hf_directory) {
  const fs::path directory(hf_directory);
  if (!fs::is_directory(directory)) fail(hf_directory, ": not a directory");
  if (fs::exists(directory / "tokenizer.json")) return from_tokenizer_json(directory);
  if (fs::exists(directory / "tokenizer.model")) return from_sentencepiece(directory);
  fail(hf_directory, ": no tokenizer.json or tokenizer.model");
}

NamedFiles tokenizer_files(const Tokenizer& tokenizer) {
  json config = {{"tokenizer_class", "PreTrainedTokenizerFast"}, {"clean_up_tokenization_spaces", false}};
  if (const auto bos = tokenizer.bos_id()) config["bos_token"] = tokenizer.id_to_token(*bos);
  if (const auto eos = tokenizer.eos_id()) config["eos_token"] = tokenizer.id_to_token(*eos);
  if (const auto pad = tokenizer.pad_id()) config["pad_token"] = tokenizer.id_to_token(*pad);
  if (!tokenizer.chat_template().empty()) config["chat_template"] = tokenizer.chat_template();
  return {{"tokenizer.json", tokenizer.to_tokenizer_json().dump(2)}, {"tokenizer_config.json", config.dump(2)}};
}

void write_tokenizer_files(const Tokenizer& tokenizer, const std::string& directory) {
  fs::create_directories(directory);
  for (const auto& [name, contents] : tokenizer_files(tokenizer)) write_file_atomically(directory + "/" + name, contents);
}

}  // namespace qft
