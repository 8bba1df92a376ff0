#pragma once
// GGUF (ggml's model file, versions 2 and 3, little-endian): header, typed
// metadata key/values (arrays nest), tensor infos, then the aligned data
// section. The file is memory-mapped and fully validated when opened: every
// count and length is bounded by the bytes left in the file, and a truncated
// or malformed file throws naming the byte offset and the field being read.
// Tensors de-quantize to float32 from the block formats' definitions.
#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "core/shape.h"
#include "io/mapped_file.h"

namespace qft {

// ggml's tensor types (ggml.h numbering; 4, 5, 31–33 and 36–38 are retired).
enum class GgmlType : uint32_t {
  F32 = 0, F16 = 1, Q4_0 = 2, Q4_1 = 3, Q5_0 = 6, Q5_1 = 7, Q8_0 = 8, Q8_1 = 9,
  Q2_K = 10, Q3_K = 11, Q4_K = 12, Q5_K = 13, Q6_K = 14, Q8_K = 15,
  IQ2_XXS = 16, IQ2_XS = 17, IQ3_XXS = 18, IQ1_S = 19, IQ4_NL = 20, IQ3_S = 21, IQ2_S = 22,
  IQ4_XS = 23, I8 = 24, I16 = 25, I32 = 26, I64 = 27, F64 = 28, IQ1_M = 29, BF16 = 30,
  TQ1_0 = 34, TQ2_0 = 35, MXFP4 = 39, NVFP4 = 40, Q1_0 = 41,
};

// False for numbers ggml does not define (the file cannot be laid out).
bool ggml_type_known(uint32_t type);
const char* ggml_type_name(GgmlType type);  // "Q4_K"; "?" when unknown
// Elements per block and bytes per block (1 and the element size for plain types).
int64_t ggml_block_size(GgmlType type);
int64_t ggml_block_bytes(GgmlType type);
// F32, F16, BF16, Q8_0, Q4_0, Q4_1, Q5_0, Q5_1, Q4_K, Q5_K, Q6_K.
bool ggml_type_dequantizable(GgmlType type);

// De-quantizes `count` consecutive elements (a multiple of the type's block
// size) starting at a block boundary of `data` into out[count].
void dequantize_rows(GgmlType type, const uint8_t* data, float* out, int64_t count);

enum class GgufValueType : uint32_t {
  UInt8 = 0, Int8 = 1, UInt16 = 2, Int16 = 3, UInt32 = 4, Int32 = 5, Float32 = 6, Bool = 7,
  String = 8, Array = 9, UInt64 = 10, Int64 = 11, Float64 = 12,
};
const char* gguf_value_type_name(GgufValueType type);  // "uint32", "array", …

// A validated metadata value: a view into the mapped file (no copy).
class GgufValue {
 public:
  GgufValueType type() const { return type_; }
  // Scalars; each throws Error (naming `what`) when the value has another type.
  // as_uint/as_int take any integer type whose value fits; as_float takes
  // float32 or float64.
  uint64_t as_uint(const std::string& what) const;
  int64_t as_int(const std::string& what) const;
  double as_float(const std::string& what) const;
  bool as_bool(const std::string& what) const;
  std::string as_string(const std::string& what) const;
  // Arrays: element type and count; elements() decodes one level.
  GgufValueType element_type() const { return element_type_; }
  uint64_t size() const { return count_; }
  std::vector<GgufValue> elements() const;

 private:
  friend class GgufFile;
  GgufValueType type_ = GgufValueType::UInt8;
  GgufValueType element_type_ = GgufValueType::UInt8;  // arrays only
  uint64_t count_ = 0;                                 // arrays only
  const uint8_t* data_ = nullptr;  // the value's bytes (arrays: the first element)
  size_t bytes_ = 0;               // the value's total size (arrays: all elements)
};

struct GgufTensor {
  std::string name;
  std::vector<int64_t> dims;  // ggml order: dims[0] (ne0) varies fastest
  GgmlType type = GgmlType::F32;
  uint64_t offset = 0;       // from the start of the data section
  const uint8_t* data = nullptr;
  size_t nbytes = 0;
  int64_t numel = 0;

  // Row-major (PyTorch/HF) shape: dims reversed.
  Shape shape() const { return Shape(dims.rbegin(), dims.rend()); }
};

class GgufFile {
 public:
  explicit GgufFile(const std::string& path);
  GgufFile(const GgufFile&) = delete;
  GgufFile& operator=(const GgufFile&) = delete;

  const std::string& path() const { return map_.path(); }
  uint32_t version() const { return version_; }
  uint64_t alignment() const { return alignment_; }
  uint64_t data_offset() const { return data_offset_; }  // file offset of the data section

  // Metadata, in file order; lookups throw naming the file and key when the
  // key is missing or holds another type.
  const std::vector<std::pair<std::string, GgufValue>>& metadata() const { return metadata_; }
  bool has(const std::string& key) const { return index_.count(key) != 0; }
  const GgufValue* find(const std::string& key) const;
  const GgufValue& get(const std::string& key) const;
  std::string get_string(const std::string& key) const;
  uint64_t get_uint(const std::string& key) const;
  int64_t get_int(const std::string& key) const;
  double get_float(const std::string& key) const;
  bool get_bool(const std::string& key) const;
  std::vector<std::string> get_string_array(const std::string& key) const;
  std::vector<double> get_float_array(const std::string& key) const;
  std::vector<int64_t> get_int_array(const std::string& key) const;

  // Tensors, in file order.
  const std::vector<GgufTensor>& tensors() const { return tensors_; }
  const GgufTensor* find_tensor(const std::string& name) const;
  const GgufTensor& tensor(const std::string& name) const;  // throws when absent

  // out[tensor.numel]; throws for types without a de-quantizer.
  void dequantize(const GgufTensor& tensor, float* out) const;
  // Rows [first, first + rows) (a row: dims[0] elements, whole blocks), out (rows, dims[0]).
  void dequantize(const GgufTensor& tensor, float* out, int64_t first, int64_t rows) const;

 private:
  // Throws naming the file, the tensor and its type unless qft de-quantizes it.
  void check_dequantizable(const GgufTensor& tensor) const;
  MappedFile map_;
  uint32_t version_ = 0;
  uint64_t alignment_ = 32;
  uint64_t data_offset_ = 0;
  std::vector<std::pair<std::string, GgufValue>> metadata_;
  std::map<std::string, size_t, std::less<>> index_;
  std::vector<GgufTensor> tensors_;
  std::map<std::string, size_t, std::less<>> tensor_index_;
};

}  // namespace qft
