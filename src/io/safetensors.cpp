#include "io/safetensors.h"

#include <algorithm>
#include <bit>
#include <cstring>
#include <nlohmann/json.hpp>

#include "core/error.h"
#include "core/float16.h"
#include "io/atomic_file.h"

namespace qft {
namespace {

static_assert(std::endian::native == std::endian::little, "safetensors is little-endian");

constexpr uint64_t kMaxHeaderBytes = 100ull << 20;

DType parse_dtype(const std::string& path, const std::string& tensor, const std::string& name) {
  static const std::map<std::string, DType> names = {
      {"F64", DType::F64}, {"F32", DType::F32}, {"F16", DType::F16}, {"BF16", DType::BF16},
      {"I64", DType::I64}, {"I32", DType::I32}, {"I16", DType::I16}, {"I8", DType::I8},
      {"U8", DType::U8},   {"BOOL", DType::BOOL}, {"U16", DType::U16}};
  const auto found = names.find(name);
  if (found == names.end()) fail(path, ": tensor '", tensor, "': unsupported dtype '", name, "'");
  return found->second;
}

}  // namespace

const char* dtype_name(DType dtype) {
  switch (dtype) {
    case DType::F64: return "F64";
    case DType::F32: return "F32";
    case DType::F16: return "F16";
    case DType::BF16: return "BF16";
    case DType::I64: return "I64";
    case DType::I32: return "I32";
    case DType::I16: return "I16";
    case DType::I8: return "I8";
    case DType::U8: return "U8";
    case DType::BOOL: return "BOOL";
    case DType::U16: return "U16";
  }
  return "?";
}

size_t dtype_size(DType dtype) {
  switch (dtype) {
    case DType::F64: case DType::I64: return 8;
    case DType::F32: case DType::I32: return 4;
    case DType::F16: case DType::BF16: case DType::I16: case DType::U16: return 2;
    case DType::I8: case DType::U8: case DType::BOOL: return 1;
  }
  return 0;
}

SafetensorsFile::SafetensorsFile(const std::string& path) : map_(path) {
  if (map_.size() < 8) fail(path, ": truncated safetensors file (", map_.size(), " bytes)");
  uint64_t header_bytes = 0;
  std::memcpy(&header_bytes, map_.data(), 8);
  if (header_bytes > kMaxHeaderBytes || header_bytes > map_.size() - 8) {
    fail(path, ": header length ", header_bytes, " exceeds the file size ", map_.size());
  }
  const char* header_begin = reinterpret_cast<const char*>(map_.data() + 8);
  nlohmann::json header;
  try {
    header = nlohmann::json::parse(header_begin, header_begin + header_bytes);
  } catch (const nlohmann::json::exception& error) {
    fail(path, ": malformed JSON header: ", error.what());
  }
  if (!header.is_object()) fail(path, ": header is not a JSON object");

  const uint8_t* data_begin = map_.data() + 8 + header_bytes;
  const size_t data_bytes = map_.size() - 8 - header_bytes;
  for (const auto& [name, entry] : header.items()) {
    if (name == "__metadata__") continue;
    try {
      TensorRecord record;
      record.name = name;
      record.file = &map_.path();
      record.dtype = parse_dtype(path, name, entry.at("dtype").get<std::string>());
      record.shape = entry.at("shape").get<std::vector<int64_t>>();
      const auto offsets = entry.at("data_offsets").get<std::vector<uint64_t>>();
      if (offsets.size() != 2 || offsets[0] > offsets[1]) {
        fail(path, ": tensor '", name, "': invalid data_offsets");
      }
      uint64_t expected = dtype_size(record.dtype);
      for (int64_t dim : record.shape) {
        if (dim < 0 || (dim > 0 && expected > (1ull << 62) / static_cast<uint64_t>(dim))) {
          fail(path, ": tensor '", name, "': invalid shape");
        }
        expected *= static_cast<uint64_t>(dim);
      }
      if (offsets[1] - offsets[0] != expected) {
        fail(path, ": tensor '", name, "': data_offsets span ", offsets[1] - offsets[0],
             " bytes but dtype and shape need ", expected);
      }
      if (offsets[1] > data_bytes) {
        fail(path, ": tensor '", name, "': data ends at byte ", offsets[1],
             " but the file holds only ", data_bytes, " data bytes (truncated file?)");
      }
      record.data = data_begin + offsets[0];
      record.nbytes = expected;
      tensors_.emplace(name, std::move(record));
    } catch (const nlohmann::json::exception& error) {
      fail(path, ": tensor '", name, "': malformed header entry: ", error.what());
    }
  }
}

const TensorRecord* SafetensorsFile::find(const std::string& name) const {
  const auto found = tensors_.find(name);
  return found == tensors_.end() ? nullptr : &found->second;
}

void convert_to_f32(float* out, const TensorRecord& record) {
  const int64_t count = shape_numel(record.shape);
  const uint8_t* in = record.data;
  switch (record.dtype) {
    case DType::F32:
      std::memcpy(out, in, count * sizeof(float));
      return;
    case DType::F64:
      for (int64_t i = 0; i < count; ++i) {
        double value;
        std::memcpy(&value, in + 8 * i, 8);
        out[i] = static_cast<float>(value);
      }
      return;
    case DType::F16:
      for (int64_t i = 0; i < count; ++i) {
        uint16_t half;
        std::memcpy(&half, in + 2 * i, 2);
        out[i] = half_to_float(half);
      }
      return;
    case DType::BF16:
      for (int64_t i = 0; i < count; ++i) {
        uint16_t bf16;
        std::memcpy(&bf16, in + 2 * i, 2);
        out[i] = std::bit_cast<float>(static_cast<uint32_t>(bf16) << 16);
      }
      return;
    default:
      fail(*record.file, ": tensor '", record.name, "' has dtype ", dtype_name(record.dtype),
           ", expected a floating-point type");
  }
}

namespace {

// The header (padded so the data stays 8-byte aligned) and the data's bytes.
struct SafetensorsLayout {
  std::string header;
  uint64_t data_bytes = 0;
  size_t largest = 0;  // elements of the largest tensor
};

SafetensorsLayout safetensors_layout(const std::string& path, const std::vector<TensorInfo>& tensors, DType dtype) {
  if (dtype != DType::F32 && dtype != DType::F16 && dtype != DType::BF16) {
    fail(path, ": cannot write dtype ", dtype_name(dtype), " (F32, F16 or BF16)");
  }
  const size_t element = dtype_size(dtype);
  nlohmann::json header = nlohmann::json::object();
  SafetensorsLayout layout;
  for (const TensorInfo& tensor : tensors) {
    const size_t count = static_cast<size_t>(shape_numel(tensor.shape));
    const uint64_t offset = layout.data_bytes;
    header[tensor.name] = {{"dtype", dtype_name(dtype)}, {"shape", tensor.shape}, {"data_offsets", {offset, offset + count * element}}};
    layout.data_bytes += count * element;
    layout.largest = std::max(layout.largest, count);
  }
  layout.header = header.dump();
  layout.header.append((8 - layout.header.size() % 8) % 8, ' ');
  return layout;
}

}  // namespace

uint64_t safetensors_file_bytes(const std::vector<TensorInfo>& tensors, DType dtype) {
  const SafetensorsLayout layout = safetensors_layout("", tensors, dtype);
  return 8 + layout.header.size() + layout.data_bytes;
}

void write_safetensors(const std::string& path, const std::vector<TensorInfo>& tensors,
                       const std::function<void(size_t, float*)>& fill, DType dtype) {
  const SafetensorsLayout layout = safetensors_layout(path, tensors, dtype);
  const std::string& text = layout.header;
  const uint64_t header_bytes = text.size();
  const size_t largest = layout.largest;
  AtomicFileWriter writer(path, 8 + header_bytes + layout.data_bytes);
  writer.write(&header_bytes, 8);
  writer.write(text.data(), text.size());
  std::vector<float> staging(largest);
  std::vector<uint16_t> narrow(dtype == DType::F32 ? 0 : largest);
  for (size_t i = 0; i < tensors.size(); ++i) {
    fill(i, staging.data());
    const size_t count = static_cast<size_t>(shape_numel(tensors[i].shape));
    if (dtype == DType::F32) {
      writer.write(staging.data(), count * sizeof(float));
      continue;
    }
    for (size_t j = 0; j < count; ++j) narrow[j] = dtype == DType::F16 ? float_to_half(staging[j]) : float_to_bf16(staging[j]);
    writer.write(narrow.data(), count * sizeof(uint16_t));
  }
  writer.commit();
}

void write_safetensors(const std::string& path, const std::vector<TensorView>& tensors) {
  std::vector<TensorInfo> infos;
  for (const TensorView& tensor : tensors) infos.push_back({tensor.name, tensor.shape});
  write_safetensors(path, infos, [&](size_t i, float* out) {
    const size_t count = static_cast<size_t>(shape_numel(tensors[i].shape));
    if (count > 0) std::memcpy(out, tensors[i].data, count * sizeof(float));  // an empty tensor may have no data
  });
}

}  // namespace qft
