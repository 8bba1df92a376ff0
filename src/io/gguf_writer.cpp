#include "io/gguf_writer.h"

#include <algorithm>
#include <cmath>
#include <cstring>

#include "core/error.h"
#include "core/float16.h"
#include "io/atomic_file.h"

namespace qft {
namespace {

constexpr uint32_t kMagic = 0x46554747;  // "GGUF" little-endian
constexpr uint32_t kVersion = 3;
constexpr int kQ8Block = 32;

template <class T>
std::string bytes_of(const T& value) {
  return std::string(reinterpret_cast<const char*>(&value), sizeof(T));
}

// Bytes of a tensor's data in its type.
uint64_t tensor_bytes(const Shape& shape, GgmlType type) {
  const int64_t count = shape_numel(shape);
  return static_cast<uint64_t>(count / ggml_block_size(type) * ggml_block_bytes(type));
}

}  // namespace

GgufWriter::GgufWriter(uint32_t alignment) : alignment_(alignment) {
  if (alignment == 0 || alignment % 8 != 0) fail("GGUF alignment must be a positive multiple of 8");
  if (alignment != 32) add_uint32("general.alignment", alignment);
}

void GgufWriter::raw(const void* data, size_t bytes) { metadata_.append(static_cast<const char*>(data), bytes); }

void GgufWriter::string(const std::string& text) {
  const uint64_t length = text.size();
  raw(&length, 8);
  metadata_ += text;
}

void GgufWriter::key(const std::string& key, GgufValueType type) {
  ++metadata_count_;
  string(key);
  const uint32_t code = static_cast<uint32_t>(type);
  raw(&code, 4);
}

void GgufWriter::add_string(const std::string& name, const std::string& value) {
  key(name, GgufValueType::String);
  string(value);
}

void GgufWriter::add_uint32(const std::string& name, uint32_t value) {
  key(name, GgufValueType::UInt32);
  raw(&value, 4);
}

void GgufWriter::add_int32(const std::string& name, int32_t value) {
  key(name, GgufValueType::Int32);
  raw(&value, 4);
}

void GgufWriter::add_float32(const std::string& name, float value) {
  key(name, GgufValueType::Float32);
  raw(&value, 4);
}

void GgufWriter::add_bool(const std::string& name, bool value) {
  key(name, GgufValueType::Bool);
  const uint8_t byte = value ? 1 : 0;
  raw(&byte, 1);
}

void GgufWriter::add_string_array(const std::string& name, const std::vector<std::string>& values) {
  key(name, GgufValueType::Array);
  const uint32_t type = static_cast<uint32_t>(GgufValueType::String);
  const uint64_t count = values.size();
  raw(&type, 4);
  raw(&count, 8);
  for (const std::string& value : values) string(value);
}

void GgufWriter::add_float32_array(const std::string& name, const std::vector<float>& values) {
  key(name, GgufValueType::Array);
  const uint32_t type = static_cast<uint32_t>(GgufValueType::Float32);
  const uint64_t count = values.size();
  raw(&type, 4);
  raw(&count, 8);
  raw(values.data(), values.size() * sizeof(float));
}

void GgufWriter::add_int32_array(const std::string& name, const std::vector<int32_t>& values) {
  key(name, GgufValueType::Array);
  const uint32_t type = static_cast<uint32_t>(GgufValueType::Int32);
  const uint64_t count = values.size();
  raw(&type, 4);
  raw(&count, 8);
  raw(values.data(), values.size() * sizeof(int32_t));
}

// The payload of a value (no key, no type code), re-encoded from its accessors.
void GgufWriter::value(const GgufValue& v) {
  const std::string what = "metadata value";
  switch (v.type()) {
    case GgufValueType::UInt8: { const uint8_t x = static_cast<uint8_t>(v.as_uint(what)); raw(&x, 1); break; }
    case GgufValueType::Int8: { const int8_t x = static_cast<int8_t>(v.as_int(what)); raw(&x, 1); break; }
    case GgufValueType::UInt16: { const uint16_t x = static_cast<uint16_t>(v.as_uint(what)); raw(&x, 2); break; }
    case GgufValueType::Int16: { const int16_t x = static_cast<int16_t>(v.as_int(what)); raw(&x, 2); break; }
    case GgufValueType::UInt32: { const uint32_t x = static_cast<uint32_t>(v.as_uint(what)); raw(&x, 4); break; }
    case GgufValueType::Int32: { const int32_t x = static_cast<int32_t>(v.as_int(what)); raw(&x, 4); break; }
    case GgufValueType::UInt64: { const uint64_t x = v.as_uint(what); raw(&x, 8); break; }
    case GgufValueType::Int64: { const int64_t x = v.as_int(what); raw(&x, 8); break; }
    case GgufValueType::Float32: { const float x = static_cast<float>(v.as_float(what)); raw(&x, 4); break; }
    case GgufValueType::Float64: { const double x = v.as_float(what); raw(&x, 8); break; }
    case GgufValueType::Bool: { const uint8_t x = v.as_bool(what) ? 1 : 0; raw(&x, 1); break; }
    case GgufValueType::String: string(v.as_string(what)); break;
    case GgufValueType::Array: {
      const uint32_t type = static_cast<uint32_t>(v.element_type());
      const uint64_t count = v.size();
      raw(&type, 4);
      raw(&count, 8);
      for (const GgufValue& element : v.elements()) value(element);
      break;
    }
  }
}

void GgufWriter::add_value(const std::string& name, const GgufValue& v) {
  key(name, v.type());
  value(v);
}

void GgufWriter::add_tensor(const std::string& name, const Shape& shape, GgmlType type) {
  if (shape.empty()) fail(name, ": a GGUF tensor needs at least one dimension");
  if (shape.back() % ggml_block_size(type) != 0) {
    fail(name, ": rows of ", shape.back(), " values do not fill whole ", ggml_type_name(type), " blocks of ",
         ggml_block_size(type));
  }
  tensors_.push_back({name, shape, type});
}

GgufWriter::Layout GgufWriter::layout() const {
  Layout layout;
  layout.header = bytes_of(kMagic) + bytes_of(kVersion);
  layout.header += bytes_of(static_cast<uint64_t>(tensors_.size())) + bytes_of(metadata_count_) + metadata_;
  uint64_t offset = 0;
  for (const Tensor& tensor : tensors_) {
    layout.header += bytes_of(static_cast<uint64_t>(tensor.name.size())) + tensor.name;
    layout.header += bytes_of(static_cast<uint32_t>(tensor.shape.size()));
    for (auto dim = tensor.shape.rbegin(); dim != tensor.shape.rend(); ++dim) layout.header += bytes_of(static_cast<uint64_t>(*dim));
    layout.header += bytes_of(static_cast<uint32_t>(tensor.type)) + bytes_of(offset);
    layout.offsets.push_back(offset);
    layout.data_bytes = offset + tensor_bytes(tensor.shape, tensor.type);  // the last tensor is not padded
    offset += (tensor_bytes(tensor.shape, tensor.type) + alignment_ - 1) / alignment_ * alignment_;
    layout.largest = std::max(layout.largest, static_cast<size_t>(shape_numel(tensor.shape)));
  }
  layout.header.append((alignment_ - layout.header.size() % alignment_) % alignment_, '\0');
  return layout;
}

uint64_t GgufWriter::file_bytes() const {
  const Layout planned = layout();
  return planned.header.size() + planned.data_bytes;
}

void GgufWriter::write(const std::string& path, const std::function<void(size_t, float*)>& fill) const {
  const Layout planned = layout();
  const std::string& header = planned.header;
  const std::vector<uint64_t>& offsets = planned.offsets;
  const size_t largest = planned.largest;
  AtomicFileWriter writer(path, header.size() + planned.data_bytes);
  writer.write(header.data(), header.size());
  std::vector<float> values(largest);
  std::vector<uint8_t> encoded(largest * sizeof(float));
  uint64_t written = 0;
  for (size_t i = 0; i < tensors_.size(); ++i) {
    const Tensor& tensor = tensors_[i];
    const int64_t count = shape_numel(tensor.shape);
    fill(i, values.data());
    uint16_t* halves = reinterpret_cast<uint16_t*>(encoded.data());
    switch (tensor.type) {
      case GgmlType::F32: std::memcpy(encoded.data(), values.data(), count * sizeof(float)); break;
      case GgmlType::F16: for (int64_t j = 0; j < count; ++j) halves[j] = float_to_half(values[j]); break;
      case GgmlType::BF16: for (int64_t j = 0; j < count; ++j) halves[j] = float_to_bf16(values[j]); break;
      case GgmlType::Q8_0: quantize_q8_0(encoded.data(), values.data(), count); break;
      default: fail(path, ": cannot write tensor type ", ggml_type_name(tensor.type));
    }
    const uint64_t bytes = tensor_bytes(tensor.shape, tensor.type);
    const std::string padding(offsets[i] - written, '\0');
    writer.write(padding.data(), padding.size());
    writer.write(encoded.data(), bytes);
    written = offsets[i] + bytes;
  }
  writer.commit();
}

void quantize_q8_0(uint8_t* out, const float* values, int64_t count) {
  for (int64_t block = 0; block < count / kQ8Block; ++block) {
    const float* x = values + block * kQ8Block;
    float amax = 0.0f;
    for (int i = 0; i < kQ8Block; ++i) amax = std::max(amax, std::abs(x[i]));
    const float d = amax / 127.0f;
    const float inverse = d > 0.0f ? 1.0f / d : 0.0f;
    uint8_t* q = out + block * (2 + kQ8Block);
    const uint16_t d16 = float_to_half(d);
    std::memcpy(q, &d16, 2);
    for (int i = 0; i < kQ8Block; ++i) q[2 + i] = static_cast<uint8_t>(static_cast<int8_t>(std::nearbyint(x[i] * inverse)));
  }
}

}  // namespace qft
