#include "io/safetensors.h"

#include <gtest/gtest.h>

#include <cstring>
#include <filesystem>
#include <nlohmann/json.hpp>

#include "core/error.h"
#include "test_util.h"

namespace qft {
namespace {

using test::TempDir;

// A safetensors file from a raw header and data, for malformed cases.
void write_raw(const std::string& path, const std::string& header, const std::string& data,
               uint64_t declared_header_bytes = 0) {
  const uint64_t length = declared_header_bytes ? declared_header_bytes : header.size();
  std::string bytes(reinterpret_cast<const char*>(&length), 8);
  test::write_text(path, bytes + header + data);
}

std::string error_of(const std::string& path) {
  try {
    SafetensorsFile file(path);
  } catch (const Error& error) {
    return error.what();
  }
  return "";
}

TEST(Safetensors, RoundTripKeepsNamesShapesAndValues) {
  TempDir dir;
  const std::vector<float> matrix = {1.5f, -2.0f, 3.25f, 0.0f, 1e-30f, -7.0f};
  const std::vector<float> scalar = {42.0f};
  write_safetensors(dir.file("t.safetensors"),
                    {{"a.weight", {2, 3}, matrix.data()}, {"b", {}, scalar.data()}, {"empty", {0, 4}, nullptr}});
  const SafetensorsFile file(dir.file("t.safetensors"));
  ASSERT_EQ(file.tensors().size(), 3u);
  const TensorRecord* a = file.find("a.weight");
  ASSERT_NE(a, nullptr);
  EXPECT_EQ(a->shape, (Shape{2, 3}));
  EXPECT_EQ(a->dtype, DType::F32);
  std::vector<float> values(6);
  convert_to_f32(values.data(), *a);
  EXPECT_EQ(values, matrix);
  EXPECT_EQ(file.find("b")->shape, Shape{});
  EXPECT_EQ(file.find("empty")->nbytes, 0u);
  EXPECT_EQ(file.find("missing"), nullptr);
  // Data must start 8-byte aligned (the format's recommendation).
  uint64_t header_bytes;
  std::memcpy(&header_bytes, test::read_text(dir.file("t.safetensors")).data(), 8);
  EXPECT_EQ(header_bytes % 8, 0u);
}

TEST(Safetensors, WriteLeavesNoTemporaryFiles) {
  TempDir dir;
  const float value = 1.0f;
  write_safetensors(dir.file("x.safetensors"), {{"x", {1}, &value}});
  EXPECT_EQ(std::distance(std::filesystem::directory_iterator(dir.path()), {}), 1);
  EXPECT_THROW(write_safetensors(dir.file("no/such/dir/x.safetensors"), {{"x", {1}, &value}}), Error);
}

// Expected values come from the IEEE 754 binary16 and bfloat16 definitions.
TEST(Safetensors, HalfAndBfloat16ConvertExactly) {
  TempDir dir;
  const uint16_t halves[] = {0x3C00, 0xC000, 0x7BFF, 0x0001, 0x0400, 0x7C00, 0x8000, 0x3555};
  const float half_values[] = {1.0f, -2.0f, 65504.0f, 5.9604644775390625e-8f, 6.103515625e-5f,
                               INFINITY, -0.0f, 0.333251953125f};
  const uint16_t bfloats[] = {0x3F80, 0x4049, 0xC2F7, 0x0001};
  const float bfloat_values[] = {1.0f, 3.140625f, -123.5f, 9.183549615799121e-41f};
  const std::string header = nlohmann::json{
      {"h", {{"dtype", "F16"}, {"shape", {8}}, {"data_offsets", {0, 16}}}},
      {"b", {{"dtype", "BF16"}, {"shape", {4}}, {"data_offsets", {16, 24}}}}}.dump();
  write_raw(dir.file("h.safetensors"), header,
            std::string(reinterpret_cast<const char*>(halves), 16) + std::string(reinterpret_cast<const char*>(bfloats), 8));
  const SafetensorsFile file(dir.file("h.safetensors"));
  float converted[8];
  convert_to_f32(converted, *file.find("h"));
  for (int i = 0; i < 8; ++i) EXPECT_EQ(converted[i], half_values[i]) << "half " << i;
  EXPECT_TRUE(std::signbit(converted[6]));
  convert_to_f32(converted, *file.find("b"));
  for (int i = 0; i < 4; ++i) EXPECT_EQ(converted[i], bfloat_values[i]) << "bfloat16 " << i;
}

struct MalformedCase {
  const char* what;
  std::string header;
  std::string data;
  uint64_t declared_header_bytes;
  const char* expected_message;
};

TEST(Safetensors, MalformedFilesGiveErrorsNamingFileAndTensor) {
  TempDir dir;
  const auto entry = [](const char* dtype, nlohmann::json shape, uint64_t begin, uint64_t end) {
    return nlohmann::json{{"w", {{"dtype", dtype}, {"shape", shape}, {"data_offsets", {begin, end}}}}}.dump();
  };
  const std::vector<MalformedCase> cases = {
      {"header longer than file", entry("F32", {2}, 0, 8), std::string(8, '\0'), 1 << 20, "exceeds the file size"},
      {"not JSON", "{not json", "", 0, "malformed JSON header"},
      {"unknown dtype", entry("F7", {2}, 0, 8), std::string(8, '\0'), 0, "unsupported dtype 'F7'"},
      {"shape and offsets disagree", entry("F32", {3}, 0, 8), std::string(8, '\0'), 0, "need 12"},
      {"truncated data", entry("F32", {4}, 0, 16), std::string(8, '\0'), 0, "truncated"},
      {"negative dimension", entry("F32", {-2}, 0, 8), std::string(8, '\0'), 0, "invalid shape"},
      {"missing field", R"({"w": {"dtype": "F32", "shape": [2]}})", "", 0, "malformed header entry"},
  };
  for (const MalformedCase& c : cases) {
    const std::string path = dir.file("bad.safetensors");
    write_raw(path, c.header, c.data, c.declared_header_bytes);
    const std::string message = error_of(path);
    EXPECT_NE(message.find(path), std::string::npos) << c.what << ": " << message;
    EXPECT_NE(message.find(c.expected_message), std::string::npos) << c.what << ": " << message;
  }
  test::write_text(dir.file("tiny.safetensors"), "abc");
  EXPECT_NE(error_of(dir.file("tiny.safetensors")).find("truncated"), std::string::npos);
  EXPECT_NE(error_of(dir.file("absent.safetensors")).find("cannot open"), std::string::npos);
}

}  // namespace
}  // namespace qft
