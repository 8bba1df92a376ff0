// Tokenizers against HF's `tokenizers` library (tests/reference/make_tokenizer_reference.py):
// every kind and source, on every string of the reference corpus, token for token.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "core/error.h"
#include "test_util.h"
#include "text/model_tokenizer.h"
#include "text/tokenizer.h"

namespace qft {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;
using test::TempDir;

std::string tokenizer_dir() { return test::reference_case("tokenizers"); }

json read_json(const std::string& path) {
  std::ifstream file(path);
  if (!file) throw std::runtime_error("missing " + path);
  return json::parse(file);
}

const std::vector<std::string>& corpus() {
  static const auto strings = read_json(tokenizer_dir() + "/corpus.json").get<std::vector<std::string>>();
  return strings;
}

template <class T>
T value_or(const json& spec, const char* key, T fallback) {
  return spec.contains(key) && !spec.at(key).is_null() ? spec.at(key).get<T>() : fallback;
}

std::optional<bool> optional_bool(const json& spec, const char* key) {
  if (!spec.contains(key) || spec.at(key).is_null()) return std::nullopt;
  return spec.at(key).get<bool>();
}

// gguf.json holds the tokenizer.ggml.* values as make_tokenizer_reference.py read them.
GgufTokenizerData read_gguf(const std::string& path) {
  const json spec = read_json(path);
  GgufTokenizerData data;
  data.model = spec.at("model").get<std::string>();
  data.pre = value_or<std::string>(spec, "pre", "");
  data.tokens = spec.at("tokens").get<std::vector<std::string>>();
  data.scores = value_or<std::vector<float>>(spec, "scores", {});
  data.token_types = value_or<std::vector<int32_t>>(spec, "token_types", {});
  data.merges = value_or<std::vector<std::string>>(spec, "merges", {});
  data.bos = value_or(spec, "bos", -1);
  data.eos = value_or(spec, "eos", -1);
  data.unk = value_or(spec, "unk", -1);
  data.pad = value_or(spec, "pad", -1);
  data.add_bos = optional_bool(spec, "add_bos");
  data.add_eos = optional_bool(spec, "add_eos");
  data.add_space_prefix = optional_bool(spec, "add_space_prefix");
  data.chat_template = value_or<std::string>(spec, "chat_template", "");
  return data;
}

std::unique_ptr<Tokenizer> load_case(const std::string& name) {
  const std::string dir = tokenizer_dir() + "/" + name;
  if (fs::exists(dir + "/gguf.json")) return load_tokenizer(read_gguf(dir + "/gguf.json"));
  return load_tokenizer(dir);
}

std::string quoted(const std::string& text) {
  std::string out = "\"";
  for (const char c : text.substr(0, 120)) {
    if (c == '\n') out += "\\n";
    else if (c == '\t') out += "\\t";
    else if (c == '\r') out += "\\r";
    else out += c;
  }
  return out + (text.size() > 120 ? "...\"" : "\"");
}

std::string ids_text(const std::vector<int>& ids) {
  std::string out;
  for (size_t i = 0; i < ids.size() && i < 40; ++i) out += (i ? " " : "") + std::to_string(ids[i]);
  return out + (ids.size() > 40 ? " ..." : "");
}

// Agreement of one tokenizer with the expected.json HF wrote; at most a few mismatches
// are described in `failures`.
struct Agreement {
  size_t ids = 0, ids_plain = 0, decoded = 0, decoded_skip = 0, round_trip = 0, hf_round_trip = 0;
  std::vector<std::string> failures;
};

Agreement compare(const Tokenizer& tokenizer, const json& expected) {
  Agreement agreement;
  const auto& strings = corpus();
  auto note = [&](size_t i, const std::string& what) {
    if (agreement.failures.size() < 8) agreement.failures.push_back("#" + std::to_string(i) + " " + quoted(strings[i]) + ": " + what);
  };
  for (size_t i = 0; i < strings.size(); ++i) {
    const auto want = expected["ids"][i].get<std::vector<int>>();
    const auto want_plain = expected["ids_plain"][i].get<std::vector<int>>();
    const auto got = tokenizer.encode(strings[i], true);
    const auto got_plain = tokenizer.encode(strings[i], false);
    if (got == want) ++agreement.ids; else note(i, "ids " + ids_text(got) + " want " + ids_text(want));
    if (got_plain == want_plain) ++agreement.ids_plain;
    else if (got == want) note(i, "plain ids " + ids_text(got_plain) + " want " + ids_text(want_plain));
    const std::string decoded = tokenizer.decode(want_plain, false);
    if (decoded == expected["decoded"][i].get<std::string>()) ++agreement.decoded;
    else note(i, "decoded " + quoted(decoded) + " want " + quoted(expected["decoded"][i].get<std::string>()));
    const std::string skipped = tokenizer.decode(want, true);
    if (skipped == expected["decoded_skip"][i].get<std::string>()) ++agreement.decoded_skip;
    else note(i, "decoded (skip special) " + quoted(skipped) + " want " + quoted(expected["decoded_skip"][i].get<std::string>()));
    if (expected["decoded"][i].get<std::string>() == strings[i]) {
      ++agreement.hf_round_trip;
      if (tokenizer.decode(got_plain, false) == strings[i]) ++agreement.round_trip;
    }
  }
  return agreement;
}

void expect_agreement(const std::string& label, const Tokenizer& tokenizer, const json& expected) {
  const Agreement a = compare(tokenizer, expected);
  const size_t n = corpus().size();
  std::printf("[ %s ] %s: encode %zu/%zu, encode w/o specials %zu/%zu, decode %zu/%zu, decode skipping specials %zu/%zu, "
              "decode(encode(x)) == x %zu/%zu (HF: %zu)\n",
              tokenizer.kind().c_str(), label.c_str(), a.ids, n, a.ids_plain, n, a.decoded, n, a.decoded_skip, n,
              a.round_trip, a.hf_round_trip, a.hf_round_trip);
  for (const std::string& failure : a.failures) ADD_FAILURE() << label << " " << failure;
  EXPECT_EQ(a.ids, n);
  EXPECT_EQ(a.ids_plain, n);
  EXPECT_EQ(a.decoded, n);
  EXPECT_EQ(a.decoded_skip, n);
  EXPECT_EQ(a.round_trip, a.hf_round_trip);
}

class HfReference : public testing::TestWithParam<std::string> {};

TEST_P(HfReference, EncodesAndDecodesLikeHf) {
  const std::string name = GetParam();
  const auto tokenizer = load_case(name);
  expect_agreement(name, *tokenizer, read_json(tokenizer_dir() + "/" + name + "/expected.json"));
}

INSTANTIATE_TEST_SUITE_P(Cases, HfReference,
                         testing::Values("smollm2_gguf", "smollm2_json", "smollm2_transformers", "llama3_json",
                                         "llama3_gguf", "qwen2_json", "qwen2_gguf", "gpt2_json", "gpt2_gguf",
                                         "options_json", "spm_model", "spm_gguf", "spm_json", "spm_json_nonlegacy"),
                         [](const auto& info) { return info.param; });

// The SmolLM2 GGUF file itself, through qft's GGUF reader (not the Python dump).
TEST(Tokenizer, SmolLM2GgufFileMatchesHf) {
  const std::string path = fs::path(QFT_REFERENCE_DIR).parent_path() / "models" / "SmolLM2-135M-Instruct.Q4_1.gguf";
  const auto tokenizer = load_model_tokenizer(path);
  expect_agreement("SmolLM2-135M-Instruct.Q4_1.gguf", *tokenizer,
                   read_json(tokenizer_dir() + "/smollm2_gguf/expected.json"));
}

// A tokenizer from GGUF written as tokenizer.json: our loader and HF's (tokenizers and
// transformers' AutoTokenizer, via check_tokenizer_json.py) both read it back to the same
// ids as the reference.
class WrittenTokenizerJson : public testing::TestWithParam<std::string> {};

TEST_P(WrittenTokenizerJson, LoadsBackInQftAndHf) {
  const std::string name = GetParam();
  const auto tokenizer = load_case(name);
  TempDir dir;
  write_tokenizer_files(*tokenizer, dir.path());
  const std::string expected_path = tokenizer_dir() + "/" + name + "/expected.json";
  const auto reloaded = load_tokenizer(dir.path());
  EXPECT_EQ(reloaded->bos_id(), tokenizer->bos_id());
  EXPECT_EQ(reloaded->eos_id(), tokenizer->eos_id());
  EXPECT_EQ(reloaded->chat_template(), tokenizer->chat_template());
  expect_agreement(name + " written and reloaded", *reloaded, read_json(expected_path));

  const auto hf = test::run_command(std::string(QFT_PYENV_DIR) + "/bin/python " + QFT_SOURCE_DIR +
                                    "/tests/reference/check_tokenizer_json.py " + dir.path() + " " + tokenizer_dir() +
                                    "/corpus.json " + expected_path);
  std::printf("%s", hf.output.c_str());
  EXPECT_EQ(hf.exit_code, 0) << hf.output;
}

INSTANTIATE_TEST_SUITE_P(Gguf, WrittenTokenizerJson,
                         testing::Values("smollm2_gguf", "llama3_gguf", "qwen2_gguf", "gpt2_gguf", "spm_gguf"),
                         [](const auto& info) { return info.param; });

// The merges written for a GGUF llama vocabulary are the ones transformers' slow->fast
// conversion generates from the same SentencePiece model, in the same order.
TEST(Tokenizer, GgufLlamaMergesAreTransformers) {
  const auto written = load_case("spm_gguf")->to_tokenizer_json();
  const auto converted = read_json(tokenizer_dir() + "/spm_json/tokenizer.json");
  EXPECT_EQ(written.at("model").at("merges"), converted.at("model").at("merges"));
  EXPECT_EQ(written.at("model").at("vocab"), converted.at("model").at("vocab"));
  EXPECT_EQ(written.at("normalizer"), converted.at("normalizer"));
  EXPECT_EQ(written.at("decoder"), converted.at("decoder"));
}

TEST(Tokenizer, SmolLM2FromGgufKnowsItsSpecialTokens) {
  const auto tokenizer = load_case("smollm2_gguf");
  EXPECT_EQ(tokenizer->vocab_size(), 49152);
  EXPECT_EQ(tokenizer->bos_id(), 1);
  EXPECT_EQ(tokenizer->eos_id(), 2);
  EXPECT_EQ(tokenizer->token_to_id("<|im_end|>"), 2);
  EXPECT_EQ(tokenizer->id_to_token(2), "<|im_end|>");
  EXPECT_TRUE(tokenizer->is_special(2));
  EXPECT_FALSE(tokenizer->is_special(1000));
  EXPECT_NE(tokenizer->chat_template().find("<|im_start|>"), std::string::npos);
  const auto ids = tokenizer->encode("<|im_start|>user\nHi 123<|im_end|>", false);
  EXPECT_EQ(ids.front(), 1);
  EXPECT_EQ(ids.back(), 2);
  EXPECT_EQ(tokenizer->decode(ids, true), "user\nHi 123");
}

TEST(Tokenizer, ClearErrors) {
  const auto tokenizer = load_case("gpt2_json");
  auto message = [](const auto& action) -> std::string {
    try {
      action();
    } catch (const Error& error) {
      return error.what();
    }
    return "no error";
  };
  EXPECT_NE(message([&] { tokenizer->encode("bad \xff byte"); }).find("not valid UTF-8 (byte 4)"), std::string::npos);
  EXPECT_NE(message([&] { tokenizer->decode({1 << 30}); }).find("not in the vocabulary"), std::string::npos);
  EXPECT_NE(message([] { load_tokenizer("/nonexistent/dir"); }).find("/nonexistent/dir: not a directory"),
            std::string::npos);
  TempDir empty;
  EXPECT_NE(message([&] { load_tokenizer(empty.path()); }).find("no tokenizer.json or tokenizer.model"), std::string::npos);
  test::write_text(empty.file("tokenizer.json"), "{\"model\": ");
  EXPECT_NE(message([&] { load_tokenizer(empty.path()); }).find(empty.file("tokenizer.json") + ": invalid JSON"),
            std::string::npos);
  test::write_text(empty.file("tokenizer.json"), R"({"model": {"type": "Unigram", "vocab": []}})");
  EXPECT_NE(message([&] { load_tokenizer(empty.path()); }).find("model type 'Unigram' is not supported"),
            std::string::npos);

  GgufTokenizerData gguf = read_gguf(tokenizer_dir() + "/gpt2_gguf/gguf.json");
  gguf.pre = "mystery";
  EXPECT_NE(message([&] { load_tokenizer(gguf); }).find("tokenizer.ggml.pre 'mystery' is not supported"),
            std::string::npos);
  gguf.model = "bert";
  EXPECT_NE(message([&] { load_tokenizer(gguf); }).find("tokenizer.ggml.model 'bert' is not supported"),
            std::string::npos);
  GgufTokenizerData llama = read_gguf(tokenizer_dir() + "/spm_gguf/gguf.json");
  llama.scores.clear();
  EXPECT_NE(message([&] { load_tokenizer(llama); }).find("scores"), std::string::npos);
  EXPECT_NE(message([&] { load_tokenizer("/nonexistent").get(); }).find("/nonexistent"), std::string::npos);
  const auto spm = load_case("spm_model");  // libsentencepiece: no tokenizer.json of ours
  EXPECT_NE(message([&] { spm->to_tokenizer_json(); }).find("has no tokenizer.json form"), std::string::npos);
}

}  // namespace
}  // namespace qft
