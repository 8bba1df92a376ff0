// qft export: a model (HF directory or GGUF file) as an HF directory or a GGUF file.
#include <cstdio>
#include <filesystem>

#include "commands.h"
#include "common.h"
#include "core/error.h"
#include "io/mapped_file.h"
#include "model/gguf_export.h"
#include "model/hf_export.h"
#include "model/weights.h"
#include "text/model_tokenizer.h"

namespace qft::cli {
namespace {

namespace fs = std::filesystem;

// The source directory's own tokenizer files, or files written from the tokenizer.
NamedFiles tokenizer_files(const std::string& source, const Tokenizer* tokenizer) {
  if (!fs::is_directory(source)) return tokenizer ? tokenizer_files(*tokenizer) : NamedFiles{};
  NamedFiles files;
  for (const char* name : {"tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "tokenizer.model"}) {
    const fs::path path = fs::path(source) / name;
    if (!fs::exists(path)) continue;
    const MappedFile file(path.string());
    files.emplace_back(name, std::string(reinterpret_cast<const char*>(file.data()), file.size()));
  }
  return files;
}

}  // namespace

int run_export(int argc, char** argv) {
  Args args("export",
            "Writes the model at --model (an HF directory or a GGUF file) as an HF directory\n"
            "(config.json, model.safetensors, tokenizer files, generation_config.json) that\n"
            "transformers and vLLM load, or as a GGUF file that llama.cpp loads.",
            {{"model", "PATH", "HF model directory or GGUF file", ""},
             {"out", "PATH", "the directory (hf) or file (gguf) to create; must not exist", ""},
             {"format", "FORMAT", "hf | gguf", "hf"},
             {"dtype", "TYPE", "bf16 | f16 | f32, and q8_0 for gguf", "bf16"},
             threads_option()});
  if (!args.parse(argc, argv)) return 0;
  args.require({"model", "out"});
  apply_threads(args);
  const std::string path = args.get("model"), out = args.get("out"), format = args.get("format");
  if (format != "hf" && format != "gguf") fail("--format must be hf or gguf, got '", format, "'");
  if (format == "hf" && args.get("dtype") == "q8_0") fail("--dtype q8_0 is for --format gguf; HF takes bf16, f16 or f32");
  if (fs::exists(out)) fail(out, ": already exists");

  const ModelSource source = ModelSource::open(path);
  std::unique_ptr<Tokenizer> tokenizer;
  try {
    tokenizer = load_model_tokenizer(path);
  } catch (const Error& error) {
    std::fprintf(stderr, "qft export: warning: exporting without a tokenizer: %s\n", error.what());
  }
  const auto fill = [&](size_t i, float* values) { source.fill(i, values); };
  if (format == "hf") {
    HfExport options;
    options.dtype = parse_export_dtype(args.get("dtype"));
    options.files = tokenizer_files(path, tokenizer.get());
    if (tokenizer) {
      options.bos_token_id = tokenizer->bos_id().value_or(-1);
      options.eos_token_id = tokenizer->eos_id().value_or(-1);
      options.pad_token_id = tokenizer->pad_id().value_or(-1);
    }
    export_hf_model(out, source.config(), fill, options);
  } else {
    GgufExport options;
    options.matrix_type = parse_gguf_matrix_type(args.get("dtype"));
    options.name = fs::path(path).filename().string();
    options.add_tokenizer = [&](GgufWriter& writer) {
      if (source.gguf()) copy_gguf_tokenizer(writer, *source.gguf());
      else if (tokenizer) add_gguf_tokenizer(writer, *tokenizer);
    };
    export_gguf_model(out, source.config(), fill, options);
  }
  std::printf("%s\n", out.c_str());
  return 0;
}

}  // namespace qft::cli
