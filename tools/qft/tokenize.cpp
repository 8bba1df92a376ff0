// qft tokenize: token ids of text, or text of token ids, with the model's tokenizer.
#include <cstdio>
#include <fstream>
#include <nlohmann/json.hpp>

#include "commands.h"
#include "common.h"
#include "core/error.h"
#include "data/batch.h"
#include "text/model_tokenizer.h"

namespace qft::cli {
namespace {

std::vector<std::string> inputs(const Args& args) {
  if (args.has("text") == args.has("file")) fail("give exactly one of --text TEXT or --file FILE");
  if (args.has("text")) return {args.get("text")};
  std::ifstream file(args.get("file"), std::ios::binary);
  if (!file) fail(args.get("file"), ": cannot open");
  std::vector<std::string> lines;
  for (std::string line; std::getline(file, line);) lines.push_back(line);
  return lines;
}

}  // namespace

int run_tokenize(int argc, char** argv) {
  Args args("tokenize",
            "Prints the token ids of --text (or of each line of --file, one output line per input\n"
            "line) with the tokenizer of --model (an HF directory or a GGUF file). With --decode the\n"
            "input holds whitespace-separated token ids and the text is printed.",
            {{"model", "PATH", "HF model directory or GGUF file", ""},
             {"text", "TEXT", "the text (or ids with --decode)", ""},
             {"file", "FILE", "one input per line", ""},
             {"decode", "", "turn token ids into text", ""},
             {"no-special", "", "encode: no BOS/EOS template; decode: drop special tokens", ""},
             {"json", "", "one JSON object per input: ids and token strings (or text)", ""}});
  if (!args.parse(argc, argv)) return 0;
  args.require({"model"});
  const auto tokenizer = load_model_tokenizer(args.get("model"));
  const bool special = !args.flag("no-special");
  for (const std::string& input : inputs(args)) {
    if (args.flag("decode")) {
      const std::string text = tokenizer->decode(parse_token_ids(input, tokenizer->vocab_size(), "--decode"), !special);
      std::printf("%s\n", args.flag("json") ? nlohmann::json{{"text", text}}.dump().c_str() : text.c_str());
      continue;
    }
    const std::vector<int> ids = tokenizer->encode(input, special);
    if (args.flag("json")) {
      nlohmann::json tokens = nlohmann::json::array();
      for (int id : ids) tokens.push_back(tokenizer->id_to_token(id));
      std::printf("%s\n", nlohmann::json{{"ids", ids}, {"tokens", tokens}}.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace).c_str());
    } else {
      std::string line;
      for (size_t i = 0; i < ids.size(); ++i) line += (i ? " " : "") + std::to_string(ids[i]);
      std::printf("%s\n", line.c_str());
    }
  }
  return 0;
}

}  // namespace qft::cli
