#pragma once
// The tokenizer of a model path: an HF directory's tokenizer files, or the
// tokenizer.ggml.* metadata of a GGUF file.
#include <memory>
#include <string>

#include "io/gguf.h"
#include "text/tokenizer.h"

namespace qft {

GgufTokenizerData gguf_tokenizer_data(const GgufFile& file);
std::unique_ptr<Tokenizer> load_model_tokenizer(const std::string& path);

}  // namespace qft
