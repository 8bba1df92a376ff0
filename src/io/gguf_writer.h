#pragma once
// Writing GGUF version 3: metadata in insertion order, tensor infos, then each
// tensor's data at the file's alignment, converted from FP32 to its type
// (F32, F16, BF16 or Q8_0). Written to a temporary file renamed into place.
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "core/shape.h"
#include "io/gguf.h"

namespace qft {

class GgufWriter {
 public:
  explicit GgufWriter(uint32_t alignment = 32);

  void add_string(const std::string& key, const std::string& value);
  void add_uint32(const std::string& key, uint32_t value);
  void add_int32(const std::string& key, int32_t value);
  void add_float32(const std::string& key, float value);
  void add_bool(const std::string& key, bool value);
  void add_string_array(const std::string& key, const std::vector<std::string>& values);
  void add_float32_array(const std::string& key, const std::vector<float>& values);
  void add_int32_array(const std::string& key, const std::vector<int32_t>& values);
  // A value read from another GGUF file, re-encoded with its type.
  void add_value(const std::string& key, const GgufValue& value);

  // shape is row-major (HF order); the file stores it reversed (ggml order).
  void add_tensor(const std::string& name, const Shape& shape, GgmlType type);

  // fill(i, out) produces tensor i (in add_tensor order) as FP32.
  void write(const std::string& path, const std::function<void(size_t, float*)>& fill) const;
  // The bytes write leaves on disk, known before writing.
  uint64_t file_bytes() const;

 private:
  struct Layout {
    std::string header;             // padded to the alignment
    std::vector<uint64_t> offsets;  // of each tensor in the data section
    uint64_t data_bytes = 0;
    size_t largest = 0;             // elements of the largest tensor
  };
  Layout layout() const;
  struct Tensor {
    std::string name;
    Shape shape;
    GgmlType type;
  };
  void key(const std::string& key, GgufValueType type);
  void raw(const void* data, size_t bytes);
  void string(const std::string& text);
  void value(const GgufValue& value);

  uint32_t alignment_;
  uint64_t metadata_count_ = 0;
  std::string metadata_;  // encoded key/value pairs
  std::vector<Tensor> tensors_;
};

// Q8_0: blocks of 32 values as an FP16 scale d = max|x|/127 and 32 int8
// codes round(x/d). count must be a multiple of 32; out holds count/32 × 34 bytes.
void quantize_q8_0(uint8_t* out, const float* values, int64_t count);

}  // namespace qft
