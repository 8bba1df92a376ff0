// GGUF: the reader against the gguf Python package (every supported tensor
// type, every metadata value type), malformed files, and models read from GGUF
// against the same models from HF checkpoints and against transformers' own
// GGUF loading of SmolLM2-135M (tests/reference/make_gguf_reference.py).
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <fstream>
#include <functional>
#include <limits>
#include <nlohmann/json.hpp>
#include <random>
#include <set>

#include "core/error.h"
#include "data/batch.h"
#include "io/gguf.h"
#include "io/safetensors.h"
#include "model/transformer.h"
#include "model/weights.h"
#include "test_util.h"

namespace qft {
namespace {

std::string gguf_reference(const std::string& name) { return test::reference_case("gguf/" + name); }

std::vector<uint8_t> read_bytes(const std::string& path) {
  std::ifstream file(path, std::ios::binary);
  return {std::istreambuf_iterator<char>(file), std::istreambuf_iterator<char>()};
}

void write_bytes(const std::string& path, const std::vector<uint8_t>& bytes) {
  std::ofstream(path, std::ios::binary).write(reinterpret_cast<const char*>(bytes.data()), bytes.size());
}

// The qft::Error message of f(), or a test failure when nothing is thrown.
std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const Error& error) {
    return error.what();
  }
  ADD_FAILURE() << "expected a qft::Error";
  return "";
}

#define EXPECT_CONTAINS(text, part) EXPECT_NE(std::string(text).find(part), std::string::npos) << (text)

// ------------------------------------------------------------- builder ---

// Hand-made GGUF files, so tests know every field's offset and can break it.
struct Bytes {
  std::vector<uint8_t> data;
  template <class T>
  void put(T value) {
    const auto* p = reinterpret_cast<const uint8_t*>(&value);
    data.insert(data.end(), p, p + sizeof(T));
  }
  void str(const std::string& text) {
    put<uint64_t>(text.size());
    data.insert(data.end(), text.begin(), text.end());
  }
  size_t size() const { return data.size(); }
};

struct KvSpec {
  std::string key;
  std::function<void(Bytes&)> typed_value;  // writes the value type, then the value
};

KvSpec kv_u32(const std::string& key, uint32_t value) {
  return {key, [=](Bytes& b) { b.put<uint32_t>(4); b.put<uint32_t>(value); }};
}
KvSpec kv_f32(const std::string& key, float value) {
  return {key, [=](Bytes& b) { b.put<uint32_t>(6); b.put<float>(value); }};
}
KvSpec kv_str(const std::string& key, const std::string& value) {
  return {key, [=](Bytes& b) { b.put<uint32_t>(8); b.str(value); }};
}

struct TensorSpec {
  std::string name;
  std::vector<uint64_t> dims;  // ggml order
  uint32_t type = 0;           // F32
  std::vector<uint8_t> data;   // raw bytes
};

TensorSpec f32_tensor(const std::string& name, std::vector<uint64_t> dims, float scale = 0.1f) {
  uint64_t count = 1;
  for (uint64_t dim : dims) count *= dim;
  std::vector<float> values(count);
  for (uint64_t i = 0; i < count; ++i) values[i] = scale * std::sin(0.7f * static_cast<float>(i) + 0.3f);
  TensorSpec tensor{name, std::move(dims), 0, std::vector<uint8_t>(count * 4)};
  std::memcpy(tensor.data.data(), values.data(), count * 4);
  return tensor;
}

struct Layout {
  std::vector<size_t> kv_at;      // where each key/value starts
  std::vector<size_t> tensor_at;  // where each tensor info starts
  size_t data_at = 0;             // the data section
};

std::vector<uint8_t> build_gguf(const std::vector<KvSpec>& kvs, const std::vector<TensorSpec>& tensors,
                                Layout* layout = nullptr, uint64_t alignment = 32) {
  Bytes b;
  b.data = {'G', 'G', 'U', 'F'};
  b.put<uint32_t>(3);
  b.put<uint64_t>(tensors.size());
  b.put<uint64_t>(kvs.size());
  Layout where;
  for (const KvSpec& kv : kvs) {
    where.kv_at.push_back(b.size());
    b.str(kv.key);
    kv.typed_value(b);
  }
  uint64_t offset = 0;
  std::vector<uint64_t> offsets;
  for (const TensorSpec& tensor : tensors) {
    where.tensor_at.push_back(b.size());
    b.str(tensor.name);
    b.put<uint32_t>(static_cast<uint32_t>(tensor.dims.size()));
    for (uint64_t dim : tensor.dims) b.put<uint64_t>(dim);
    b.put<uint32_t>(tensor.type);
    b.put<uint64_t>(offset);
    offsets.push_back(offset);
    offset += (tensor.data.size() + alignment - 1) / alignment * alignment;
  }
  while (b.size() % alignment) b.data.push_back(0);
  where.data_at = b.size();
  for (size_t i = 0; i < tensors.size(); ++i) {
    b.data.resize(where.data_at + offsets[i]);
    b.data.insert(b.data.end(), tensors[i].data.begin(), tensors[i].data.end());
  }
  if (layout) *layout = where;
  return b.data;
}

// A one-layer llama: C = 8, 2 heads of 4, 1 KV head, I = 12, V = 10, tied.
std::vector<KvSpec> tiny_llama_metadata() {
  return {kv_str("general.architecture", "llama"), kv_u32("llama.context_length", 64),
          kv_u32("llama.embedding_length", 8),     kv_u32("llama.block_count", 1),
          kv_u32("llama.feed_forward_length", 12), kv_u32("llama.attention.head_count", 2),
          kv_u32("llama.attention.head_count_kv", 1), kv_f32("llama.rope.freq_base", 5000.0f),
          kv_f32("llama.attention.layer_norm_rms_epsilon", 1e-5f), kv_u32("llama.rope.dimension_count", 4)};
}

std::vector<TensorSpec> tiny_llama_tensors() {
  return {f32_tensor("token_embd.weight", {8, 10}),       f32_tensor("blk.0.attn_norm.weight", {8}, 1.0f),
          f32_tensor("blk.0.attn_q.weight", {8, 8}),      f32_tensor("blk.0.attn_k.weight", {8, 4}),
          f32_tensor("blk.0.attn_v.weight", {8, 4}),      f32_tensor("blk.0.attn_output.weight", {8, 8}),
          f32_tensor("blk.0.ffn_norm.weight", {8}, 1.0f), f32_tensor("blk.0.ffn_gate.weight", {8, 12}),
          f32_tensor("blk.0.ffn_up.weight", {8, 12}),     f32_tensor("blk.0.ffn_down.weight", {12, 8}),
          f32_tensor("output_norm.weight", {8}, 1.0f)};
}

// ---------------------------------------------------------- tensor types ---

// Every supported type against gguf.quants.dequantize. Bit for bit: each
// block product (f16 scale × small integer, or × 6-bit sub-scale × quant) is
// exact in float32 or rounded once, in the same order as the package.
TEST(GgufTypes, EveryTypeDequantizesLikeTheGgufPackage) {
  const GgufFile file(gguf_reference("types.gguf"));
  const SafetensorsFile expected(gguf_reference("types_expected.safetensors"));
  std::set<std::string> types_seen;
  for (const auto& [name, record] : expected.tensors()) {
    SCOPED_TRACE(name);
    const GgufTensor& tensor = file.tensor(name);
    EXPECT_EQ(tensor.shape(), record.shape);
    std::vector<float> want(record.nbytes / 4), got(tensor.numel);
    convert_to_f32(want.data(), record);
    ASSERT_EQ(got.size(), want.size());
    file.dequantize(tensor, got.data());
    size_t differing = 0;
    for (size_t i = 0; i < got.size(); ++i) differing += std::memcmp(&got[i], &want[i], 4) != 0;
    EXPECT_EQ(differing, 0u) << "relative error " << test::relative_error(got, want);
    types_seen.insert(ggml_type_name(tensor.type));
  }
  const std::set<std::string> supported = {"F32", "F16", "BF16", "Q8_0", "Q4_0", "Q4_1",
                                           "Q5_0", "Q5_1", "Q4_K", "Q5_K", "Q6_K"};
  EXPECT_EQ(types_seen, supported);
}

TEST(GgufTypes, DequantizeRowsDecodesAnyRangeOfWholeBlocks) {
  const GgufFile file(gguf_reference("types.gguf"));
  for (const char* name : {"Q4_0", "Q5_1", "Q8_0", "Q4_K", "Q5_K", "Q6_K", "BF16", "F16"}) {
    SCOPED_TRACE(name);
    const GgufTensor& tensor = file.tensor(name);
    std::vector<float> whole(tensor.numel);
    file.dequantize(tensor, whole.data());
    const int64_t row = tensor.dims[0], rows = tensor.numel / row;
    const size_t row_bytes = tensor.nbytes / rows;
    std::vector<float> part(row * (rows - 1));
    dequantize_rows(tensor.type, tensor.data + row_bytes, part.data(), row * (rows - 1));
    EXPECT_EQ(std::memcmp(part.data(), whole.data() + row, part.size() * 4), 0);
  }
  float out[64];
  const std::vector<uint8_t> zeros(1024);
  EXPECT_CONTAINS(error_of([&] { dequantize_rows(GgmlType::Q4_K, zeros.data(), out, 32); }), "block size 256");
  EXPECT_CONTAINS(error_of([&] { dequantize_rows(GgmlType::Q2_K, zeros.data(), out, 256); }), "Q2_K");
}

TEST(GgufTypes, BlockLayouts) {
  EXPECT_EQ(ggml_block_size(GgmlType::Q4_K), 256);
  EXPECT_EQ(ggml_block_bytes(GgmlType::Q4_K), 144);
  EXPECT_EQ(ggml_block_bytes(GgmlType::Q5_K), 176);
  EXPECT_EQ(ggml_block_bytes(GgmlType::Q6_K), 210);
  EXPECT_EQ(ggml_block_bytes(GgmlType::Q8_0), 34);
  EXPECT_EQ(ggml_block_bytes(GgmlType::Q5_0), 22);
  EXPECT_TRUE(ggml_type_known(30));  // BF16
  EXPECT_FALSE(ggml_type_known(4));  // retired Q4_2
  EXPECT_STREQ(ggml_type_name(GgmlType::Q6_K), "Q6_K");
  EXPECT_FALSE(ggml_type_dequantizable(GgmlType::IQ2_XXS));
}

// -------------------------------------------------------------- metadata ---

// A GGUF value against its JSON description from make_gguf_reference.py.
void expect_value(const GgufValue& value, const std::string& type, const nlohmann::json& want,
                  const std::string& what) {
  SCOPED_TRACE(what);
  ASSERT_EQ(gguf_value_type_name(value.type()), type);
  if (type == "string") {
    EXPECT_EQ(value.as_string(what), want.get<std::string>());
  } else if (type == "bool") {
    EXPECT_EQ(value.as_bool(what), want.get<bool>());
  } else if (type == "float32" || type == "float64") {
    EXPECT_EQ(value.as_float(what), want.get<double>());
  } else if (type.rfind("uint", 0) == 0) {
    EXPECT_EQ(value.as_uint(what), want.get<uint64_t>());
  } else {
    EXPECT_EQ(value.as_int(what), want.get<int64_t>());
  }
}

void expect_array(const GgufValue& value, const nlohmann::json& want, const std::string& what) {
  SCOPED_TRACE(what);
  ASSERT_EQ(value.type(), GgufValueType::Array);
  ASSERT_EQ(value.size(), want.size());
  const std::vector<GgufValue> elements = value.elements();
  ASSERT_EQ(elements.size(), want.size());
  for (size_t i = 0; i < elements.size(); ++i) {
    const std::string element = what + "[" + std::to_string(i) + "]";
    if (want[i].is_array()) {
      ASSERT_EQ(value.element_type(), GgufValueType::Array);
      expect_array(elements[i], want[i], element);
    } else {
      expect_value(elements[i], gguf_value_type_name(value.element_type()), want[i], element);
    }
  }
}

TEST(GgufMetadata, EveryValueTypeReadsBackAsWritten) {
  const GgufFile file(gguf_reference("metadata.gguf"));
  std::ifstream json_file(gguf_reference("metadata_expected.json"));
  const nlohmann::json expected = nlohmann::json::parse(json_file);
  EXPECT_EQ(file.version(), 3u);
  EXPECT_EQ(file.alignment(), 64u);
  EXPECT_EQ(file.get_uint("general.alignment"), 64u);
  for (const auto& [key, want] : expected.items()) {
    const GgufValue& value = file.get(key);
    if (want.at("type") == "array") {
      EXPECT_EQ(gguf_value_type_name(value.element_type()), want.at("element_type").get<std::string>()) << key;
      expect_array(value, want.at("value"), key);
    } else {
      expect_value(value, want.at("type"), want.at("value"), key);
    }
  }
  EXPECT_EQ(file.metadata().size(), expected.size() + 1);  // + general.alignment

  EXPECT_EQ(file.get_string_array("test.array.string"), (std::vector<std::string>{"a", "", "ccc", "ünï"}));
  EXPECT_EQ(file.get_int_array("test.array.int8"), (std::vector<int64_t>{-128, 0, 127}));
  EXPECT_EQ(file.get_int_array("test.array.int64"),
            (std::vector<int64_t>{std::numeric_limits<int64_t>::min(), std::numeric_limits<int64_t>::max()}));
  EXPECT_EQ(file.get_float_array("test.array.float64"), (std::vector<double>{1e-300, -2.5}));
  EXPECT_EQ(file.get_float_array("test.array.float32")[1], -0.25);
  EXPECT_EQ(file.get_int("test.uint8"), 200);
  EXPECT_EQ(file.get_uint("test.uint64"), 18000000000000000000ull);
  EXPECT_EQ(file.get_string("test.empty_string"), "");
  EXPECT_TRUE(file.get_bool("test.bool_true"));

  // The tensors after the 64-byte aligned data section.
  EXPECT_EQ(file.data_offset() % 64, 0u);
  const GgufTensor& b = file.tensor("b");
  EXPECT_EQ(b.dims, (std::vector<int64_t>{4, 3}));
  EXPECT_EQ(b.shape(), (Shape{3, 4}));
  EXPECT_EQ(b.offset % 64, 0u);
  std::vector<float> values(12);
  file.dequantize(b, values.data());
  for (int i = 0; i < 12; ++i) EXPECT_EQ(values[i], 0.5f * i);
}

TEST(GgufMetadata, LookupsNameTheKeyAndTheTypeFound) {
  const GgufFile file(gguf_reference("metadata.gguf"));
  const std::string missing = error_of([&] { file.get_uint("no.such.key"); });
  EXPECT_CONTAINS(missing, "metadata.gguf");
  EXPECT_CONTAINS(missing, "'no.such.key' is missing");
  EXPECT_CONTAINS(error_of([&] { file.get_uint("test.string"); }), "'test.string' is a string");
  EXPECT_CONTAINS(error_of([&] { file.get_uint("test.int8"); }), "negative");
  EXPECT_CONTAINS(error_of([&] { file.get_float("test.uint32"); }), "expected float32 or float64");
  EXPECT_CONTAINS(error_of([&] { file.get_string("test.array.string"); }), "is a array");
  EXPECT_CONTAINS(error_of([&] { file.get_bool("test.uint8"); }), "expected a bool");
  EXPECT_CONTAINS(error_of([&] { file.get_string_array("test.array.int32"); }), "array of int32");
  EXPECT_CONTAINS(error_of([&] { file.get_int_array("test.array.float32"); }), "array of float32");
  EXPECT_CONTAINS(error_of([&] { file.get_int_array("test.array.uint64"); }), "does not fit");
  EXPECT_CONTAINS(error_of([&] { file.get_float_array("test.float64"); }), "expected an array");
  EXPECT_CONTAINS(error_of([&] { file.tensor("c"); }), "no tensor named 'c'");
}

TEST(GgufMetadata, Version2ReadsLikeVersion3AndOthersAreRefused) {
  test::TempDir dir;
  std::vector<uint8_t> bytes = read_bytes(gguf_reference("metadata.gguf"));
  const auto with_version = [&](uint32_t version) {
    std::memcpy(bytes.data() + 4, &version, 4);
    write_bytes(dir.file("v.gguf"), bytes);
    return dir.file("v.gguf");
  };
  const GgufFile v2(with_version(2));
  EXPECT_EQ(v2.version(), 2u);
  EXPECT_EQ(v2.get_string("test.string"), "héllo, GGUF");
  EXPECT_EQ(v2.tensors().size(), 2u);
  EXPECT_CONTAINS(error_of([&] { GgufFile file(with_version(1)); }), "unsupported GGUF version 1");
  EXPECT_CONTAINS(error_of([&] { GgufFile file(with_version(4)); }), "byte 4: version");
  EXPECT_CONTAINS(error_of([&] { GgufFile file(with_version(0x03000000)); }), "big-endian");
}

// ------------------------------------------------------------- malformed ---

TEST(GgufMalformed, TruncationAtEveryOffsetThrowsNamingTheOffset) {
  test::TempDir dir;
  for (const char* name : {"metadata.gguf", "types.gguf"}) {
    SCOPED_TRACE(name);
    const std::vector<uint8_t> bytes = read_bytes(gguf_reference(name));
    size_t needed = 0;  // where the last tensor's data ends
    {
      const GgufFile file(gguf_reference(name));
      for (const GgufTensor& tensor : file.tensors()) {
        needed = std::max<size_t>(needed, file.data_offset() + tensor.offset + tensor.nbytes);
      }
    }
    const std::string path = dir.file("cut.gguf");
    for (size_t size = 0; size < needed; size += (size < 2048 ? 1 : 97)) {
      write_bytes(path, std::vector<uint8_t>(bytes.begin(), bytes.begin() + size));
      const std::string message = error_of([&] { GgufFile file(path); });
      if (message.find("byte ") == std::string::npos) {
        ADD_FAILURE() << "truncated at " << size << ": " << message;
        break;
      }
    }
    write_bytes(path, std::vector<uint8_t>(bytes.begin(), bytes.begin() + needed));
    EXPECT_NO_THROW(GgufFile file(path));
  }
}

TEST(GgufMalformed, TruncationNamesTheFieldBeingRead) {
  test::TempDir dir;
  std::vector<uint8_t> bytes;
  const auto cut_at = [&](size_t size) {
    write_bytes(dir.file("cut.gguf"), std::vector<uint8_t>(bytes.begin(), bytes.begin() + size));
    return error_of([&] { GgufFile file(dir.file("cut.gguf")); });
  };
  // Two key/values.
  Layout layout;
  bytes = build_gguf({kv_str("general.architecture", "llama"), kv_u32("llama.context_length", 64)}, {}, &layout);
  EXPECT_CONTAINS(cut_at(0), "cut.gguf: byte 0: magic: file truncated");
  EXPECT_CONTAINS(cut_at(6), "byte 4: version: file truncated");
  EXPECT_CONTAINS(cut_at(13), "byte 8: tensor count: file truncated");
  EXPECT_CONTAINS(cut_at(20), "byte 16: metadata key/value count: file truncated");
  // Too few bytes left for even two minimal entries.
  EXPECT_CONTAINS(cut_at(layout.kv_at[0] + 3), "byte 16: metadata key/value count: 2 items need at least 26 bytes");
  EXPECT_CONTAINS(cut_at(layout.kv_at[0] + 3), "a corrupt count, or a truncated file");
  // Inside the key of entry 1 ("llama.context_length": 8 + 20 bytes), its type, its value.
  EXPECT_CONTAINS(cut_at(layout.kv_at[1] + 12), "byte " + std::to_string(layout.kv_at[1]) +
                                                    ": key of metadata entry #1: string length 20 exceeds");
  EXPECT_CONTAINS(cut_at(layout.kv_at[1] + 28 + 2), "metadata 'llama.context_length' (value type): file truncated");
  EXPECT_CONTAINS(cut_at(layout.kv_at[1] + 32 + 1), "byte " + std::to_string(layout.kv_at[1] + 32) +
                                                        ": metadata 'llama.context_length': file truncated");
  // Tensor info 1 (blk.0.attn_q.weight): name, dimension count, dimensions, type, offset.
  bytes = build_gguf({}, {f32_tensor("a.tensor.with.a.thirty.two.byte.", {4}), f32_tensor("blk.0.attn_q.weight", {8, 8})},
                     &layout);
  const size_t info = layout.tensor_at[1], name_end = info + 8 + 19;
  EXPECT_CONTAINS(cut_at(info + 5), "byte " + std::to_string(info) + ": name of tensor #1 (its length): file truncated");
  EXPECT_CONTAINS(cut_at(name_end + 1), "tensor 'blk.0.attn_q.weight' (dimension count): file truncated");
  EXPECT_CONTAINS(cut_at(name_end + 4 + 9), "byte " + std::to_string(name_end + 12) +
                                                ": tensor 'blk.0.attn_q.weight' (dimension 1): file truncated");
  EXPECT_CONTAINS(cut_at(name_end + 20 + 3), "tensor 'blk.0.attn_q.weight' (type): file truncated");
  EXPECT_CONTAINS(cut_at(name_end + 24 + 7), "tensor 'blk.0.attn_q.weight' (data offset): file truncated");
  // The data section: the first tensor's data is cut.
  const std::string data = cut_at(layout.data_at + 10);
  EXPECT_CONTAINS(data, "byte " + std::to_string(layout.data_at) + ": data of tensor 'a.tensor.with.a.thirty.two.byte.'");
  EXPECT_CONTAINS(data, "(truncated file?)");
}

TEST(GgufMalformed, BadMagic) {
  test::TempDir dir;
  std::vector<uint8_t> bytes = build_gguf(tiny_llama_metadata(), tiny_llama_tensors());
  bytes[0] = 'X';
  write_bytes(dir.file("bad.gguf"), bytes);
  const std::string message = error_of([&] { GgufFile file(dir.file("bad.gguf")); });
  EXPECT_CONTAINS(message, "bad.gguf: byte 0: magic: not a GGUF file (starts with 'XGUF'");
  write_bytes(dir.file("empty.gguf"), {});
  EXPECT_CONTAINS(error_of([&] { GgufFile file(dir.file("empty.gguf")); }), "byte 0: magic");
}

TEST(GgufMalformed, AbsurdCountsAndLengthsAreBoundedByTheFileSize) {
  test::TempDir dir;
  const std::string path = dir.file("absurd.gguf");
  Layout layout;
  const std::vector<uint8_t> good = build_gguf(tiny_llama_metadata(), tiny_llama_tensors(), &layout);
  const auto patched = [&](size_t at, uint64_t value, size_t bytes = 8) {
    std::vector<uint8_t> copy = good;
    std::memcpy(copy.data() + at, &value, bytes);
    write_bytes(path, copy);
    return error_of([&] { GgufFile file(path); });
  };
  const uint64_t huge = 1ull << 62;
  EXPECT_CONTAINS(patched(8, huge), "byte 8: tensor count: 4611686018427387904 items need at least");
  EXPECT_CONTAINS(patched(16, ~0ull), "byte 16: metadata key/value count");
  EXPECT_CONTAINS(patched(layout.kv_at[0], huge), "key of metadata entry #0: string length");
  // The architecture string's length (after key and type).
  EXPECT_CONTAINS(patched(layout.kv_at[0] + 8 + 20 + 4, huge), "metadata 'general.architecture': string length");
  // A dimension of 2^62 times another overflows the element count.
  const size_t dims_at = layout.tensor_at[0] + 8 + 17 + 4;
  EXPECT_CONTAINS(patched(dims_at + 8, huge), "overflows");
  EXPECT_CONTAINS(patched(dims_at - 4, 9, 4), "9 dimensions (at most 4)");

  // An array claiming 2^40 elements of uint32.
  const std::vector<KvSpec> kvs = {{"big", [](Bytes& b) { b.put<uint32_t>(9); b.put<uint32_t>(4); b.put<uint64_t>(1ull << 40); b.put<uint32_t>(1); }}};
  write_bytes(path, build_gguf(kvs, {}));
  EXPECT_CONTAINS(error_of([&] { GgufFile file(path); }), "metadata 'big' (array length): 1099511627776 items need at least 4398046511104 bytes");
  // An array of 2^40 strings, of arrays.
  for (uint32_t element : {8u, 9u}) {
    const std::vector<KvSpec> nested = {{"big", [=](Bytes& b) { b.put<uint32_t>(9); b.put<uint32_t>(element); b.put<uint64_t>(1ull << 40); }}};
    write_bytes(path, build_gguf(nested, {}));
    EXPECT_CONTAINS(error_of([&] { GgufFile file(path); }), "array length");
  }
}

TEST(GgufMalformed, UnknownTypesAreRefusedWithOffsetAndName) {
  test::TempDir dir;
  const std::string path = dir.file("types.gguf");
  Layout layout;
  std::vector<uint8_t> bytes = build_gguf(tiny_llama_metadata(), tiny_llama_tensors(), &layout);
  const size_t type_at = layout.tensor_at[1] + 8 + 22 + 4 + 8;  // blk.0.attn_norm.weight, 1 dim
  for (uint32_t type : {4u, 31u, 200u}) {
    std::memcpy(bytes.data() + type_at, &type, 4);
    write_bytes(path, bytes);
    EXPECT_CONTAINS(error_of([&] { GgufFile file(path); }),
                    "byte " + std::to_string(type_at) + ": tensor 'blk.0.attn_norm.weight' (type): unknown ggml type " +
                        std::to_string(type));
  }
  const std::vector<KvSpec> kvs = {{"odd", [](Bytes& b) { b.put<uint32_t>(13); b.put<uint32_t>(0); }}};
  write_bytes(path, build_gguf(kvs, {}));
  EXPECT_CONTAINS(error_of([&] { GgufFile file(path); }), "byte 35: metadata 'odd' (value type): unknown value type 13");
  const std::vector<KvSpec> array = {{"odd", [](Bytes& b) { b.put<uint32_t>(9); b.put<uint32_t>(77); b.put<uint64_t>(1); }}};
  write_bytes(path, build_gguf(array, {}));
  EXPECT_CONTAINS(error_of([&] { GgufFile file(path); }), "(array element type): unknown value type 77");
}

TEST(GgufMalformed, InvalidValuesAndLayouts) {
  test::TempDir dir;
  const std::string path = dir.file("bad.gguf");
  const auto open_error = [&](const std::vector<uint8_t>& bytes) {
    write_bytes(path, bytes);
    return error_of([&] { GgufFile file(path); });
  };
  const KvSpec bad_bool = {"flag", [](Bytes& b) { b.put<uint32_t>(7); b.put<uint8_t>(2); }};
  EXPECT_CONTAINS(open_error(build_gguf({bad_bool}, {})), "metadata 'flag': bool value 2");
  const KvSpec bad_bools = {"flags", [](Bytes& b) { b.put<uint32_t>(9); b.put<uint32_t>(7); b.put<uint64_t>(3);
                                                    b.put<uint8_t>(1); b.put<uint8_t>(0); b.put<uint8_t>(5); }};
  EXPECT_CONTAINS(open_error(build_gguf({bad_bools}, {})), "metadata 'flags'[2]: bool value 5");
  EXPECT_CONTAINS(open_error(build_gguf({kv_u32("a", 1), kv_u32("a", 2)}, {})), "metadata 'a': key appears twice");
  EXPECT_CONTAINS(open_error(build_gguf({kv_u32("general.alignment", 48)}, {})), "not a power of two");
  EXPECT_CONTAINS(open_error(build_gguf({kv_f32("general.alignment", 32)}, {})), "expected uint32");
  // Arrays nested 1000 deep: refused, not a stack overflow.
  const KvSpec deep = {"deep", [](Bytes& b) {
                         b.put<uint32_t>(9);
                         for (int i = 0; i < 1000; ++i) { b.put<uint32_t>(9); b.put<uint64_t>(1); }
                         b.put<uint32_t>(4); b.put<uint64_t>(0);
                       }};
  EXPECT_CONTAINS(open_error(build_gguf({deep}, {})), "nested deeper than");
  // Two tensors with one name; an offset off the alignment; dimension 0 not a whole block.
  EXPECT_CONTAINS(open_error(build_gguf({}, {f32_tensor("x", {4}), f32_tensor("x", {4})})), "tensor 'x': name appears twice");
  Layout layout;
  std::vector<uint8_t> bytes = build_gguf({}, {f32_tensor("x", {4}), f32_tensor("y", {4})}, &layout);
  const uint64_t misaligned = 16;
  std::memcpy(bytes.data() + layout.tensor_at[1] + 8 + 1 + 4 + 8 + 4, &misaligned, 8);
  EXPECT_CONTAINS(open_error(bytes), "tensor 'y' (data offset): offset 16 is not a multiple of the alignment 32");
  TensorSpec q4 = {"q", {48}, 2, std::vector<uint8_t>(36)};  // Q4_0 needs multiples of 32
  EXPECT_CONTAINS(open_error(build_gguf({}, {q4})), "Q4_0 needs dimension 0 to be a multiple of 32, it is 48");
  // A tensor beyond the end of the file.
  bytes = build_gguf({}, {f32_tensor("x", {4})}, &layout);
  const uint64_t far = 1ull << 40;
  std::memcpy(bytes.data() + layout.tensor_at[0] + 8 + 1 + 4 + 8 + 4, &far, 8);
  EXPECT_CONTAINS(open_error(bytes), "data of tensor 'x' (F32, 16 bytes at data offset 1099511627776) runs past the end");

  // A known type without a de-quantizer opens, and de-quantizing it is refused.
  const TensorSpec q2k = {"k", {256}, 10, std::vector<uint8_t>(84)};
  write_bytes(path, build_gguf({}, {q2k}));
  const GgufFile file(path);
  std::vector<float> out(256);
  const std::string message = error_of([&] { file.dequantize(file.tensor("k"), out.data()); });
  EXPECT_CONTAINS(message, "tensor 'k' has type Q2_K, which qft cannot de-quantize (supported: F32, F16");
}

TEST(GgufMalformed, RandomCorruptionThrowsOrOpensButNeverCrashes) {
  test::TempDir dir;
  const std::string path = dir.file("fuzz.gguf");
  const std::vector<uint8_t> good = read_bytes(gguf_reference("metadata.gguf"));
  size_t data_offset = 0;
  {
    const GgufFile file(gguf_reference("metadata.gguf"));
    data_offset = file.data_offset();
  }
  std::mt19937_64 random(1234);
  int opened = 0, refused = 0;
  for (int trial = 0; trial < 3000; ++trial) {
    std::vector<uint8_t> bytes = good;
    const int flips = 1 + static_cast<int>(random() % 4);
    for (int f = 0; f < flips; ++f) {
      const size_t at = random() % data_offset;  // header, metadata and tensor infos
      bytes[at] = static_cast<uint8_t>(trial % 3 == 0 ? 0xFF : random());
    }
    if (trial % 5 == 0) bytes.resize(random() % bytes.size());
    write_bytes(path, bytes);
    try {
      const GgufFile file(path);
      for (const auto& entry : file.metadata()) {  // every value decodes
        if (entry.second.type() == GgufValueType::Array) entry.second.elements();
      }
      for (const GgufTensor& tensor : file.tensors()) {
        if (ggml_type_dequantizable(tensor.type) && tensor.numel < (1 << 20)) {
          std::vector<float> out(tensor.numel);
          file.dequantize(tensor, out.data());
        }
      }
      ++opened;
    } catch (const Error& error) {
      ++refused;
      EXPECT_NE(std::string(error.what()).find("fuzz.gguf"), std::string::npos) << error.what();
    }
  }
  EXPECT_GT(refused, 1000);
  EXPECT_GT(opened, 10);
}

// ---------------------------------------------------------------- models ---

TEST(GgufModel, ConfigTensorNamesAndLlamaRowOrder) {
  test::TempDir dir;
  const std::string path = dir.file("tiny.gguf");
  write_bytes(path, build_gguf(tiny_llama_metadata(), tiny_llama_tensors()));
  const ModelSource source = ModelSource::open(path);
  const ModelConfig& config = source.config();
  EXPECT_EQ(config.architecture, Architecture::Llama);
  EXPECT_EQ(config.vocab_size, 10);
  EXPECT_EQ(config.hidden_size, 8);
  EXPECT_EQ(config.intermediate_size, 12);
  EXPECT_EQ(config.num_layers, 1);
  EXPECT_EQ(config.num_heads, 2);
  EXPECT_EQ(config.num_kv_heads, 1);
  EXPECT_EQ(config.head_dim, 4);
  EXPECT_EQ(config.max_position_embeddings, 64);
  EXPECT_EQ(config.rope_theta, 5000.0f);
  EXPECT_EQ(config.rms_norm_eps, 1e-5f);
  EXPECT_TRUE(config.tie_word_embeddings);
  EXPECT_FALSE(config.qkv_bias || config.o_bias || config.mlp_bias);
  ASSERT_NE(source.gguf(), nullptr);

  // llama.cpp stores HF row j·D/2 + i of each head at row 2i + j: with D = 4
  // HF rows 0 1 2 3 come from GGUF rows 0 2 1 3, per head.
  const GgufFile& file = *source.gguf();
  struct RowOrder {
    std::string gguf_name, hf_name;
    std::vector<int> rows;  // GGUF row of each HF row
  };
  const RowOrder orders[] = {
      {"blk.0.attn_q.weight", "model.layers.0.self_attn.q_proj.weight", {0, 2, 1, 3, 4, 6, 5, 7}},
      {"blk.0.attn_k.weight", "model.layers.0.self_attn.k_proj.weight", {0, 2, 1, 3}},
      {"blk.0.attn_v.weight", "model.layers.0.self_attn.v_proj.weight", {0, 1, 2, 3}}};
  for (const auto& [gguf_name, hf_name, rows] : orders) {
    SCOPED_TRACE(hf_name);
    const GgufTensor& tensor = file.tensor(gguf_name);
    std::vector<float> stored(tensor.numel);
    file.dequantize(tensor, stored.data());
    size_t index = 0;
    while (source.specs()[index].name != hf_name) ++index;
    std::vector<float> filled(tensor.numel);
    source.fill(index, filled.data());
    for (size_t r = 0; r < rows.size(); ++r) {
      EXPECT_EQ(std::memcmp(filled.data() + 8 * r, stored.data() + 8 * rows[r], 8 * sizeof(float)), 0) << "row " << r;
    }
  }
}

TEST(GgufModel, UnsupportedOrInconsistentFilesAreRefused) {
  test::TempDir dir;
  const std::string path = dir.file("m.gguf");
  const auto refusal = [&](std::vector<KvSpec> kvs, std::vector<TensorSpec> tensors) {
    write_bytes(path, build_gguf(kvs, tensors));
    return error_of([&] { ModelSource::gguf_file(path); });
  };
  auto kvs = tiny_llama_metadata();
  auto tensors = tiny_llama_tensors();
  kvs[0] = kv_str("general.architecture", "gpt2");
  EXPECT_CONTAINS(refusal(kvs, tensors), "unsupported general.architecture 'gpt2'");
  kvs = tiny_llama_metadata();
  kvs.erase(kvs.begin() + 8);  // layer_norm_rms_epsilon
  EXPECT_CONTAINS(refusal(kvs, tensors), "metadata key 'llama.attention.layer_norm_rms_epsilon' is missing");
  kvs = tiny_llama_metadata();
  kvs[4] = kv_str("llama.feed_forward_length", "12");
  EXPECT_CONTAINS(refusal(kvs, tensors), "'llama.feed_forward_length' is a string, expected an unsigned integer");
  kvs = tiny_llama_metadata();
  kvs.push_back(kv_str("llama.rope.scaling.type", "longrope"));
  EXPECT_CONTAINS(refusal(kvs, tensors), "RoPE scaling 'llama.rope.scaling.type' = 'longrope' is not supported (linear, yarn)");
  kvs.back() = kv_str("llama.rope.scaling.type", "yarn");  // without its factor
  EXPECT_CONTAINS(refusal(kvs, tensors), "metadata key 'llama.rope.scaling.factor' is missing");
  kvs = tiny_llama_metadata();
  kvs[9] = kv_u32("llama.rope.dimension_count", 2);
  EXPECT_CONTAINS(refusal(kvs, tensors), "partial RoPE");
  kvs = tiny_llama_metadata();
  tensors.erase(tensors.begin() + 3);  // attn_k
  EXPECT_CONTAINS(refusal(kvs, tensors), "tensor 'blk.0.attn_k.weight' (model.layers.0.self_attn.k_proj.weight) is missing");
  tensors = tiny_llama_tensors();
  tensors[9] = f32_tensor("blk.0.ffn_down.weight", {12, 9});
  EXPECT_CONTAINS(refusal(kvs, tensors), "tensor 'blk.0.ffn_down.weight' has shape [9, 12]");
  tensors = tiny_llama_tensors();
  tensors.push_back(f32_tensor("blk.0.attn_output.bias", {8}));
  EXPECT_CONTAINS(refusal(kvs, tensors), "tensors this model layout does not use: 'blk.0.attn_output.bias'");
  EXPECT_CONTAINS(error_of([&] { ModelSource::open(dir.file("absent.gguf")); }), "no such file");
}

class GgufModelCase : public testing::TestWithParam<const char*> {};

// The same model written by transformers (HF directory) and as GGUF (llama's
// Q/K rows permuted as llama.cpp does): every parameter equal bit for bit.
TEST_P(GgufModelCase, EqualsTheHfCheckpointBitForBit) {
  const std::string dir = gguf_reference(std::string("models/") + GetParam());
  const ModelSource hf = ModelSource::open(dir);
  const ModelSource gguf = ModelSource::open(dir + "/" + GetParam() + ".gguf");
  const nlohmann::json hf_config = model_config_to_json(hf.config());
  EXPECT_EQ(model_config_to_json(gguf.config()), hf_config);
  ASSERT_EQ(gguf.specs().size(), hf.specs().size());
  for (size_t i = 0; i < hf.specs().size(); ++i) {
    ASSERT_EQ(gguf.specs()[i].name, hf.specs()[i].name);
    const size_t count = shape_numel(hf.specs()[i].shape);
    std::vector<float> want(count), got(count);
    hf.fill(i, want.data());
    gguf.fill(i, got.data());
    EXPECT_EQ(std::memcmp(got.data(), want.data(), count * sizeof(float)), 0) << hf.specs()[i].name;
    const ParamRole role = hf.specs()[i].role;
    if (role != ParamRole::Embedding && role != ParamRole::LmHead) continue;
    // The rows a store reads a vocabulary-sized matrix by are the whole tensor's rows.
    const int rows = static_cast<int>(hf.specs()[i].shape[0]), cols = static_cast<int>(count / rows);
    for (const ModelSource* source : {&hf, &gguf}) {
      std::vector<float> middle(static_cast<size_t>(rows - 3) * cols);
      source->fill_rows(i, middle.data(), 2, rows - 3);
      EXPECT_EQ(std::memcmp(middle.data(), want.data() + 2 * cols, middle.size() * sizeof(float)), 0)
          << hf.specs()[i].name;
    }
  }
  LoadedModel from_gguf = load_model(dir + "/" + GetParam() + ".gguf");
  LoadedModel from_hf = load_model(dir);
  const std::vector<TokenSequence> lines = {{1, 5, 9, 2, 7, 3, 3, 8}, {4, 0, 6, 11, 2}};
  Transformer a(from_gguf.config, *from_gguf.weights, nullptr), b(from_hf.config, *from_hf.weights, nullptr);
  EXPECT_EQ(a.loss(make_batch(lines)), b.loss(make_batch(lines)));
}

INSTANTIATE_TEST_SUITE_P(Cases, GgufModelCase, testing::Values("llama_gqa", "llama_bias", "qwen2_bias", "mistral"));

// --------------------------------------------------------------- SmolLM2 ---

// SmolLM2-135M-Instruct (Q8_0 embeddings, Q4_1 linear weights) through qft's
// transformer against transformers' GGUF loading, computed in float64.
class SmolLM2 : public testing::Test {
 protected:
  static void SetUpTestSuite() {
    std::string path = test::read_text(gguf_reference("smollm2/model_path.txt"));
    path.erase(path.find_last_not_of(" \n") + 1);
    model_ = new LoadedModel(load_model(path));
  }
  static void TearDownTestSuite() {
    delete model_;
    model_ = nullptr;
  }
  static LoadedModel* model_;
};
LoadedModel* SmolLM2::model_ = nullptr;

TEST_F(SmolLM2, ConfigFromGgufMetadata) {
  const ModelConfig& config = model_->config;
  EXPECT_EQ(config.architecture, Architecture::Llama);
  EXPECT_EQ(config.vocab_size, 49152);
  EXPECT_EQ(config.hidden_size, 576);
  EXPECT_EQ(config.intermediate_size, 1536);
  EXPECT_EQ(config.num_layers, 30);
  EXPECT_EQ(config.num_heads, 9);
  EXPECT_EQ(config.num_kv_heads, 3);
  EXPECT_EQ(config.head_dim, 64);
  EXPECT_EQ(config.max_position_embeddings, 8192);
  EXPECT_EQ(config.rope_theta, 100000.0f);
  EXPECT_FLOAT_EQ(config.rms_norm_eps, 1e-5f);
  EXPECT_TRUE(config.tie_word_embeddings);
}

// The mean loss, and next-token log-probabilities position by position (each
// a function of the whole logits row: its log-sum-exp and the target's logit).
TEST_F(SmolLM2, LossAndNextTokenLogProbabilitiesMatchTransformers) {
  const std::string dir = gguf_reference("smollm2");
  const auto lines = read_token_file(dir + "/tokens.txt", model_->config.vocab_size);
  const double want_loss = std::stod(test::read_text(dir + "/loss.txt"));
  Transformer transformer(model_->config, *model_->weights, nullptr);
  const double loss = transformer.loss(make_batch(lines));
  EXPECT_NEAR(loss, want_loss, 1e-4 * want_loss);
  std::printf("SmolLM2 loss: qft %.8f, transformers (float64) %.8f, relative error %.2e\n", loss, want_loss,
              std::abs(loss - want_loss) / want_loss);

  const SafetensorsFile logits(dir + "/expected.safetensors");
  const int V = model_->config.vocab_size;
  double worst = 0.0;
  for (size_t i = 0; i < lines.size(); ++i) {
    const TensorRecord* record = logits.find("logits." + std::to_string(i));
    ASSERT_NE(record, nullptr);
    std::vector<float> row_logits(record->nbytes / 4);
    convert_to_f32(row_logits.data(), *record);
    // Position t of line i: a batch of the prefix predicting only token t + 1
    // (every position of the first line, every 4th / 2nd of the others).
    const size_t stride = i == 0 ? 1 : i == 1 ? 4 : 2;
    for (size_t t = 0; t + 1 < lines[i].size(); t += stride) {
      const float* row = row_logits.data() + t * V;
      double max_logit = row[0];
      for (int v = 1; v < V; ++v) max_logit = std::max<double>(max_logit, row[v]);
      double sum = 0.0;
      for (int v = 0; v < V; ++v) sum += std::exp(row[v] - max_logit);
      const double want = max_logit + std::log(sum) - row[lines[i][t + 1]];
      Batch batch = make_batch({TokenSequence(lines[i].begin(), lines[i].begin() + t + 2)});
      for (size_t j = 0; j < t; ++j) batch.targets[j] = -1;
      batch.predicted = 1;
      const double got = transformer.loss(batch);
      EXPECT_NEAR(got, want, 2e-3 + 1e-4 * want) << "line " << i << " position " << t;
      worst = std::max(worst, std::abs(got - want));
    }
  }
  std::printf("SmolLM2 next-token -log p: largest difference %.2e\n", worst);
}

}  // namespace
}  // namespace qft
