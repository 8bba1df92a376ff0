#pragma once
// Tokenizers that reproduce Hugging Face's `tokenizers` library token for token.
//
// One interface, built from:
//   * an HF directory: tokenizer.json (byte-level BPE as in GPT-2, SmolLM2, LLaMA-3 and
//     Qwen2, or SentencePiece-style BPE with byte fallback as in LLaMA-2), else
//     tokenizer.model (SentencePiece, through libsentencepiece); tokenizer_config.json
//     supplies the BOS/EOS/pad tokens and the chat template;
//   * GGUF metadata (tokenizer.ggml.*): "gpt2" vocabularies become the byte-level BPE of
//     the matching tokenizer.json, "llama" vocabularies a SentencePiece BPE merged by score.
// Special tokens written in the text are always recognised, as HF does by default.
#include <cstdint>
#include <memory>
#include <nlohmann/json_fwd.hpp>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "io/atomic_file.h"

namespace qft {

class Tokenizer {
 public:
  virtual ~Tokenizer() = default;

  // Token ids of UTF-8 `text` (fails on invalid UTF-8). add_special_tokens applies the
  // post-processor (the BOS/EOS template), as HF's encode(..., add_special_tokens=True).
  virtual std::vector<int> encode(std::string_view text, bool add_special_tokens = true) const = 0;
  // Text of `ids` (HF's decode); fails on an id outside the vocabulary.
  virtual std::string decode(const std::vector<int>& ids, bool skip_special_tokens = false) const = 0;

  virtual std::optional<int> token_to_id(std::string_view token) const = 0;
  virtual std::string id_to_token(int id) const = 0;  // fails on an id outside the vocabulary
  virtual bool is_special(int id) const = 0;          // a special added token (skipped by decode)
  // One past the largest id (model vocabulary and added tokens): the embedding rows needed.
  virtual int vocab_size() const = 0;
  // "byte-level BPE", "BPE", "SentencePiece BPE (by score)", "SentencePiece".
  virtual std::string kind() const = 0;

  std::optional<int> bos_id() const { return bos_; }
  std::optional<int> eos_id() const { return eos_; }
  std::optional<int> pad_id() const { return pad_; }
  const std::string& chat_template() const { return chat_template_; }

  // The HF tokenizer.json equivalent of this tokenizer; fails for those without one (a
  // SentencePiece tokenizer.model).
  virtual nlohmann::json to_tokenizer_json() const;

 protected:
  std::optional<int> bos_, eos_, pad_;
  std::string chat_template_;
};

// GGUF tokenizer metadata, one field per tokenizer.ggml.* key (filled by the GGUF reader).
struct GgufTokenizerData {
  std::string model;                 // tokenizer.ggml.model: "gpt2" or "llama"
  std::string pre;                   // tokenizer.ggml.pre: "smollm", "llama-bpe", "qwen2", "gpt-2", ...
  std::vector<std::string> tokens;   // tokenizer.ggml.tokens
  std::vector<float> scores;         // tokenizer.ggml.scores (llama)
  std::vector<int32_t> token_types;  // tokenizer.ggml.token_type: 1 normal, 2 unknown, 3 control,
                                     // 4 user-defined, 5 unused, 6 byte
  std::vector<std::string> merges;   // tokenizer.ggml.merges (gpt2): "left right"
  int bos = -1, eos = -1, unk = -1, pad = -1;  // *_token_id; -1 when absent
  // Absent keys take llama.cpp's defaults: add_bos for llama and llama-bpe, no add_eos,
  // add_space_prefix for llama.
  std::optional<bool> add_bos, add_eos, add_space_prefix;
  std::string chat_template;         // tokenizer.chat_template
};

// llama.cpp's tokenizer.ggml.pre name for a byte-level BPE tokenizer.json's
// pre-tokenizer: "smollm", "llama-bpe", "qwen2" or "gpt-2"; throws for others.
std::string gguf_pre_name(const nlohmann::json& tokenizer_json);

// tokenizer.json if the directory has one, else tokenizer.model.
std::unique_ptr<Tokenizer> load_tokenizer(const std::string& hf_directory);
std::unique_ptr<Tokenizer> load_tokenizer(const GgufTokenizerData& gguf);

// tokenizer.json (to_tokenizer_json) and a tokenizer_config.json naming the BOS/EOS/pad
// tokens and the chat template, so transformers' AutoTokenizer loads the directory.
NamedFiles tokenizer_files(const Tokenizer& tokenizer);
void write_tokenizer_files(const Tokenizer& tokenizer, const std::string& directory);

}  // namespace qft
