#pragma once
// safetensors: 8-byte little-endian header length, JSON header mapping each
// tensor name to {dtype, shape, data_offsets} (relative to the end of the
// header), then the raw little-endian data.
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "core/shape.h"
#include "io/mapped_file.h"

namespace qft {

enum class DType { F64, F32, F16, BF16, I64, I32, I16, I8, U8, BOOL, U16 };

const char* dtype_name(DType dtype);
size_t dtype_size(DType dtype);

struct TensorRecord {
  std::string name;
  DType dtype = DType::F32;
  Shape shape;
  const uint8_t* data = nullptr;
  size_t nbytes = 0;
  const std::string* file = nullptr;  // the file it lives in, for messages
};


// One memory-mapped, fully validated .safetensors file.
class SafetensorsFile {
 public:
  explicit SafetensorsFile(const std::string& path);

  const std::string& path() const { return map_.path(); }
  const TensorRecord* find(const std::string& name) const;
  const std::map<std::string, TensorRecord>& tensors() const { return tensors_; }

 private:
  MappedFile map_;
  std::map<std::string, TensorRecord> tensors_;
};

// Converts a floating-point record (F32, F16, BF16, F64) to float32.
void convert_to_f32(float* out, const TensorRecord& record);

struct TensorView {
  std::string name;
  Shape shape;
  const float* data = nullptr;
};

// Writes float32 tensors to `path` atomically, in the order given.
void write_safetensors(const std::string& path, const std::vector<TensorView>& tensors);

struct TensorInfo {
  std::string name;
  Shape shape;
};
// The same, producing one tensor at a time: fill(i, out) writes tensor i as
// float32, stored as `dtype` (F32, F16 or BF16; rounded to nearest even).
void write_safetensors(const std::string& path, const std::vector<TensorInfo>& tensors,
                       const std::function<void(size_t, float*)>& fill, DType dtype = DType::F32);
// The bytes that write leaves on disk, known before writing.
uint64_t safetensors_file_bytes(const std::vector<TensorInfo>& tensors, DType dtype = DType::F32);

}  // namespace qft
