#include "io/gguf.h"

#include <array>
#include <bit>
#include <cstring>
#include <functional>
#include <limits>

#include "core/error.h"

namespace qft {
namespace {

static_assert(std::endian::native == std::endian::little, "GGUF is read as little-endian");

constexpr uint8_t kMagic[4] = {'G', 'G', 'U', 'F'};
constexpr uint64_t kDefaultAlignment = 32;
constexpr int kMaxDims = 4;         // GGML_MAX_DIMS
constexpr int kMaxArrayDepth = 16;  // nested metadata arrays

// ---------------------------------------------------------------- types ---

struct TypeTraits {
  GgmlType type;
  const char* name;
  int64_t block;  // elements per block
  int64_t bytes;  // bytes per block
  bool dequantizable;
};

constexpr TypeTraits kTypes[] = {
    {GgmlType::F32, "F32", 1, 4, true},          {GgmlType::F16, "F16", 1, 2, true},
    {GgmlType::Q4_0, "Q4_0", 32, 18, true},      {GgmlType::Q4_1, "Q4_1", 32, 20, true},
    {GgmlType::Q5_0, "Q5_0", 32, 22, true},      {GgmlType::Q5_1, "Q5_1", 32, 24, true},
    {GgmlType::Q8_0, "Q8_0", 32, 34, true},      {GgmlType::Q8_1, "Q8_1", 32, 36, false},
    {GgmlType::Q2_K, "Q2_K", 256, 84, false},    {GgmlType::Q3_K, "Q3_K", 256, 110, false},
    {GgmlType::Q4_K, "Q4_K", 256, 144, true},    {GgmlType::Q5_K, "Q5_K", 256, 176, true},
    {GgmlType::Q6_K, "Q6_K", 256, 210, true},    {GgmlType::Q8_K, "Q8_K", 256, 292, false},
    {GgmlType::IQ2_XXS, "IQ2_XXS", 256, 66, false}, {GgmlType::IQ2_XS, "IQ2_XS", 256, 74, false},
    {GgmlType::IQ3_XXS, "IQ3_XXS", 256, 98, false}, {GgmlType::IQ1_S, "IQ1_S", 256, 50, false},
    {GgmlType::IQ4_NL, "IQ4_NL", 32, 18, false}, {GgmlType::IQ3_S, "IQ3_S", 256, 110, false},
    {GgmlType::IQ2_S, "IQ2_S", 256, 82, false},  {GgmlType::IQ4_XS, "IQ4_XS", 256, 136, false},
    {GgmlType::I8, "I8", 1, 1, false},           {GgmlType::I16, "I16", 1, 2, false},
    {GgmlType::I32, "I32", 1, 4, false},         {GgmlType::I64, "I64", 1, 8, false},
    {GgmlType::F64, "F64", 1, 8, false},         {GgmlType::IQ1_M, "IQ1_M", 256, 56, false},
    {GgmlType::BF16, "BF16", 1, 2, true},        {GgmlType::TQ1_0, "TQ1_0", 256, 54, false},
    {GgmlType::TQ2_0, "TQ2_0", 256, 66, false},  {GgmlType::MXFP4, "MXFP4", 32, 17, false},
    {GgmlType::NVFP4, "NVFP4", 64, 36, false},   {GgmlType::Q1_0, "Q1_0", 128, 18, false},
};

const TypeTraits* find_traits(uint32_t type) {
  for (const TypeTraits& traits : kTypes) {
    if (static_cast<uint32_t>(traits.type) == type) return &traits;
  }
  return nullptr;
}

const TypeTraits& traits_of(GgmlType type) {
  const TypeTraits* traits = find_traits(static_cast<uint32_t>(type));
  if (!traits) fail("unknown ggml tensor type ", static_cast<uint32_t>(type));
  return *traits;
}

std::string dequantizable_list() {
  std::string list;
  for (const TypeTraits& traits : kTypes) {
    if (traits.dequantizable) list += (list.empty() ? "" : ", ") + std::string(traits.name);
  }
  return list;
}

// Bytes of one scalar of a metadata type; 0 for strings and arrays.
size_t scalar_bytes(GgufValueType type) {
  switch (type) {
    case GgufValueType::UInt8: case GgufValueType::Int8: case GgufValueType::Bool: return 1;
    case GgufValueType::UInt16: case GgufValueType::Int16: return 2;
    case GgufValueType::UInt32: case GgufValueType::Int32: case GgufValueType::Float32: return 4;
    case GgufValueType::UInt64: case GgufValueType::Int64: case GgufValueType::Float64: return 8;
    case GgufValueType::String: case GgufValueType::Array: return 0;
  }
  return 0;
}

bool value_type_known(uint32_t type) { return type <= static_cast<uint32_t>(GgufValueType::Float64); }

template <class T>
T load(const uint8_t* p) {
  T value;
  std::memcpy(&value, p, sizeof(T));
  return value;
}

// ------------------------------------------------------------- parsing ---

// Reads little-endian fields from the mapped bytes; every read is bounds
// checked and a failure names the byte offset and the field. `field` is a
// callable returning the field's description, evaluated only on error.
class Cursor {
 public:
  Cursor(const std::string& path, const uint8_t* data, size_t size) : path_(path), data_(data), size_(size) {}

  size_t pos() const { return pos_; }
  size_t left() const { return size_ - pos_; }
  const uint8_t* here() const { return data_ + pos_; }

  template <class Field>
  [[noreturn]] void invalid(size_t at, const Field& field, const std::string& problem) const {
    fail(path_, ": byte ", at, ": ", field(), ": ", problem);
  }

  template <class Field>
  void need(size_t bytes, const Field& field) const {
    if (left() < bytes) {
      invalid(pos_, field, "file truncated (" + std::to_string(bytes) + " bytes needed, " +
                               std::to_string(left()) + " left)");
    }
  }

  template <class T, class Field>
  T read(const Field& field) {
    need(sizeof(T), field);
    const T value = load<T>(data_ + pos_);
    pos_ += sizeof(T);
    return value;
  }

  template <class Field>
  void skip(size_t bytes, const Field& field) {
    need(bytes, field);
    pos_ += bytes;
  }

  // uint64 length, then that many bytes.
  template <class Field>
  std::string_view read_string(const Field& field) {
    const size_t at = pos_;
    const uint64_t length = read<uint64_t>([&] { return field() + " (its length)"; });
    if (length > left()) {
      invalid(at, field, "string length " + std::to_string(length) + " exceeds the " +
                             std::to_string(left()) + " bytes left in the file");
    }
    const std::string_view text(reinterpret_cast<const char*>(data_ + pos_), length);
    pos_ += length;
    return text;
  }

  // A count of items of at least `min_item_bytes` each, bounded by the bytes left.
  template <class Field>
  uint64_t read_count(const Field& field, size_t min_item_bytes) {
    const size_t at = pos_;
    const uint64_t count = read<uint64_t>(field);
    check_count(at, field, count, min_item_bytes);
    return count;
  }

  // Refuses `count` items of at least `min_item_bytes` each when the bytes
  // left cannot hold them: a corrupt count, or a truncated file.
  template <class Field>
  void check_count(size_t at, const Field& field, uint64_t count, size_t min_item_bytes) const {
    if (min_item_bytes > 0 && count > left() / min_item_bytes) {
      invalid(at, field, std::to_string(count) + " items need at least " +
                             (count > std::numeric_limits<uint64_t>::max() / min_item_bytes
                                  ? std::string("2^64")
                                  : std::to_string(count * min_item_bytes)) +
                             " bytes, but only " + std::to_string(left()) + " are left at byte " +
                             std::to_string(pos_) + " (a corrupt count, or a truncated file)");
    }
  }

 private:
  const std::string& path_;
  const uint8_t* data_;
  size_t size_;
  size_t pos_ = 0;
};

std::string quoted(std::string_view text) {
  std::string out = "'";
  for (char c : text.substr(0, 200)) out += (c >= 0x20 && c < 0x7f) ? c : '?';
  return out + (text.size() > 200 ? "…'" : "'");
}

template <class Field>
GgufValueType read_value_type(Cursor& cursor, const Field& field) {
  const size_t at = cursor.pos();
  const uint32_t type = cursor.read<uint32_t>(field);
  if (!value_type_known(type)) cursor.invalid(at, field, "unknown value type " + std::to_string(type));
  return static_cast<GgufValueType>(type);
}

using FieldName = std::function<std::string()>;

// Validates one value of `type` at the cursor and moves past it.
void skip_value(Cursor& cursor, GgufValueType type, const FieldName& field, int depth) {
  switch (type) {
    case GgufValueType::Bool: {
      const size_t at = cursor.pos();
      const uint8_t value = cursor.read<uint8_t>(field);
      if (value > 1) cursor.invalid(at, field, "bool value " + std::to_string(value) + " (must be 0 or 1)");
      return;
    }
    case GgufValueType::String:
      cursor.read_string(field);
      return;
    case GgufValueType::Array: {
      if (depth >= kMaxArrayDepth) {
        cursor.invalid(cursor.pos(), field, "arrays nested deeper than " + std::to_string(kMaxArrayDepth));
      }
      const GgufValueType element = read_value_type(cursor, [&] { return field() + " (array element type)"; });
      const size_t element_bytes = scalar_bytes(element);
      const size_t min_bytes = element == GgufValueType::String  ? 8
                               : element == GgufValueType::Array ? 12
                                                                 : element_bytes;
      const uint64_t count = cursor.read_count([&] { return field() + " (array length)"; }, min_bytes);
      if (element_bytes > 0 && element != GgufValueType::Bool) {
        cursor.skip(count * element_bytes, field);
        return;
      }
      for (uint64_t i = 0; i < count; ++i) {
        skip_value(cursor, element, [&] { return field() + "[" + std::to_string(i) + "]"; }, depth + 1);
      }
      return;
    }
    default:
      cursor.skip(scalar_bytes(type), field);
      return;
  }
}

// Size in bytes of an already validated value starting at p.
size_t validated_size(const uint8_t* p, GgufValueType type) {
  if (type == GgufValueType::String) return 8 + load<uint64_t>(p);
  if (type != GgufValueType::Array) return scalar_bytes(type);
  const auto element = static_cast<GgufValueType>(load<uint32_t>(p));
  const uint64_t count = load<uint64_t>(p + 4);
  if (scalar_bytes(element) > 0) return 12 + count * scalar_bytes(element);
  size_t bytes = 12;
  for (uint64_t i = 0; i < count; ++i) bytes += validated_size(p + bytes, element);
  return bytes;
}

// ------------------------------------------------------- de-quantizing ---

float half_bits_to_float(uint16_t h) {
  const uint32_t sign = static_cast<uint32_t>(h & 0x8000u) << 16;
  uint32_t exponent = (h >> 10) & 0x1fu;
  uint32_t mantissa = h & 0x3ffu;
  if (exponent == 0x1f) return std::bit_cast<float>(sign | 0x7f800000u | (mantissa << 13));
  if (exponent != 0) return std::bit_cast<float>(sign | ((exponent + 112) << 23) | (mantissa << 13));
  if (mantissa == 0) return std::bit_cast<float>(sign);
  exponent = 113;  // subnormal: shift the leading one into the implicit bit
  while (!(mantissa & 0x400u)) {
    mantissa <<= 1;
    --exponent;
  }
  return std::bit_cast<float>(sign | (exponent << 23) | ((mantissa & 0x3ffu) << 13));
}

const std::array<float, 65536>& half_table() {
  static const auto table = [] {
    std::array<float, 65536> values{};
    for (uint32_t h = 0; h < 65536; ++h) values[h] = half_bits_to_float(static_cast<uint16_t>(h));
    return values;
  }();
  return table;
}

inline float f16(const float* table, const uint8_t* p) { return table[load<uint16_t>(p)]; }

// Q8_0: f16 d, int8 q[32]; x = d·q.
void block_q8_0(const float* half, const uint8_t* b, float* y) {
  const float d = f16(half, b);
  for (int j = 0; j < 32; ++j) y[j] = static_cast<float>(static_cast<int8_t>(b[2 + j])) * d;
}

// Q4_0: f16 d, 16 bytes of nibbles (low nibbles: elements 0–15, high: 16–31); x = d·(q − 8).
void block_q4_0(const float* half, const uint8_t* b, float* y) {
  const float d = f16(half, b);
  const uint8_t* qs = b + 2;
  for (int j = 0; j < 16; ++j) {
    y[j] = d * static_cast<float>((qs[j] & 0xF) - 8);
    y[j + 16] = d * static_cast<float>((qs[j] >> 4) - 8);
  }
}

// Q4_1: f16 d, f16 m, nibbles as Q4_0; x = d·q + m.
void block_q4_1(const float* half, const uint8_t* b, float* y) {
  const float d = f16(half, b), m = f16(half, b + 2);
  const uint8_t* qs = b + 4;
  for (int j = 0; j < 16; ++j) {
    y[j] = d * static_cast<float>(qs[j] & 0xF) + m;
    y[j + 16] = d * static_cast<float>(qs[j] >> 4) + m;
  }
}

// Q5_0: f16 d, 32 fifth bits (bit j of a little-endian uint32 belongs to
// element j), nibbles as Q4_0; x = d·(q − 16).
void block_q5_0(const float* half, const uint8_t* b, float* y) {
  const float d = f16(half, b);
  const uint32_t qh = load<uint32_t>(b + 2);
  const uint8_t* qs = b + 6;
  for (int j = 0; j < 16; ++j) {
    const int low = (qs[j] & 0xF) | static_cast<int>(((qh >> j) & 1u) << 4);
    const int high = (qs[j] >> 4) | static_cast<int>(((qh >> (j + 16)) & 1u) << 4);
    y[j] = d * static_cast<float>(low - 16);
    y[j + 16] = d * static_cast<float>(high - 16);
  }
}

// Q5_1: f16 d, f16 m, fifth bits and nibbles as Q5_0; x = d·q + m.
void block_q5_1(const float* half, const uint8_t* b, float* y) {
  const float d = f16(half, b), m = f16(half, b + 2);
  const uint32_t qh = load<uint32_t>(b + 4);
  const uint8_t* qs = b + 8;
  for (int j = 0; j < 16; ++j) {
    const int low = (qs[j] & 0xF) | static_cast<int>(((qh >> j) & 1u) << 4);
    const int high = (qs[j] >> 4) | static_cast<int>(((qh >> (j + 16)) & 1u) << 4);
    y[j] = d * static_cast<float>(low) + m;
    y[j + 16] = d * static_cast<float>(high) + m;
  }
}

// The 6-bit scale and min of sub-block j (0–7) packed in 12 bytes: bytes
// 0–3 hold scales 0–3 (low 6 bits), bytes 4–7 mins 0–3; scales/mins 4–7 take
// their low 4 bits from bytes 8–11 and their top 2 bits from the top of bytes 0–7.
void k_scale_min(const uint8_t* s, int j, int& scale, int& min) {
  if (j < 4) {
    scale = s[j] & 63;
    min = s[j + 4] & 63;
  } else {
    scale = (s[j + 4] & 0xF) | ((s[j - 4] >> 6) << 4);
    min = (s[j + 4] >> 4) | ((s[j] >> 6) << 4);
  }
}

// Q4_K: 256 elements in 8 sub-blocks of 32: f16 d, f16 dmin, 12 bytes of
// scales/mins, 128 bytes of nibbles (32-byte chunk c: low nibbles are
// sub-block 2c, high nibbles 2c+1); x = (d·scale)·q − dmin·min.
void block_q4_k(const float* half, const uint8_t* b, float* y) {
  const float d = f16(half, b), dmin = f16(half, b + 2);
  const uint8_t* scales = b + 4;
  const uint8_t* qs = b + 16;
  for (int sub = 0; sub < 8; ++sub) {
    int scale, min;
    k_scale_min(scales, sub, scale, min);
    const float dl = d * static_cast<float>(scale), ml = dmin * static_cast<float>(min);
    const uint8_t* q = qs + 32 * (sub / 2);
    const int shift = 4 * (sub % 2);
    for (int l = 0; l < 32; ++l) y[32 * sub + l] = dl * static_cast<float>((q[l] >> shift) & 0xF) - ml;
  }
}

// Q5_K: as Q4_K plus 32 bytes of fifth bits before the nibbles (bit s of
// byte l belongs to element l of sub-block s).
void block_q5_k(const float* half, const uint8_t* b, float* y) {
  const float d = f16(half, b), dmin = f16(half, b + 2);
  const uint8_t* scales = b + 4;
  const uint8_t* qh = b + 16;
  const uint8_t* qs = b + 48;
  for (int sub = 0; sub < 8; ++sub) {
    int scale, min;
    k_scale_min(scales, sub, scale, min);
    const float dl = d * static_cast<float>(scale), ml = dmin * static_cast<float>(min);
    const uint8_t* q = qs + 32 * (sub / 2);
    const int shift = 4 * (sub % 2);
    for (int l = 0; l < 32; ++l) {
      const int value = ((q[l] >> shift) & 0xF) | (((qh[l] >> sub) & 1) << 4);
      y[32 * sub + l] = dl * static_cast<float>(value) - ml;
    }
  }
}

// Q6_K: 128 bytes of low nibbles, 64 bytes of 2-bit highs, 16 int8 scales
// (one per 16 elements), f16 d. Element e = 128h + 32s + l (h < 2, s < 4,
// l < 32): low 4 bits from byte 64h + 32(s % 2) + l, nibble s / 2; high 2
// bits from byte 32h + l, bits 2s; x = (d·scale[e / 16])·(q − 32).
void block_q6_k(const float* half, const uint8_t* b, float* y) {
  const uint8_t* ql = b;
  const uint8_t* qh = b + 128;
  const int8_t* scales = reinterpret_cast<const int8_t*>(b + 192);
  const float d = f16(half, b + 208);
  for (int h = 0; h < 2; ++h) {
    for (int s = 0; s < 4; ++s) {
      for (int l = 0; l < 32; ++l) {
        const int e = 128 * h + 32 * s + l;
        const int low = (ql[64 * h + 32 * (s % 2) + l] >> (4 * (s / 2))) & 0xF;
        const int high = (qh[32 * h + l] >> (2 * s)) & 3;
        y[e] = (d * static_cast<float>(scales[e / 16])) * static_cast<float>((low | (high << 4)) - 32);
      }
    }
  }
}

}  // namespace

// ------------------------------------------------------------ type API ---

bool ggml_type_known(uint32_t type) { return find_traits(type) != nullptr; }

const char* ggml_type_name(GgmlType type) {
  const TypeTraits* traits = find_traits(static_cast<uint32_t>(type));
  return traits ? traits->name : "?";
}

int64_t ggml_block_size(GgmlType type) { return traits_of(type).block; }
int64_t ggml_block_bytes(GgmlType type) { return traits_of(type).bytes; }

bool ggml_type_dequantizable(GgmlType type) {
  const TypeTraits* traits = find_traits(static_cast<uint32_t>(type));
  return traits && traits->dequantizable;
}

void dequantize_rows(GgmlType type, const uint8_t* data, float* out, int64_t count) {
  const TypeTraits& traits = traits_of(type);
  if (!traits.dequantizable) {
    fail("cannot de-quantize ggml type ", traits.name, " (supported: ", dequantizable_list(), ")");
  }
  if (count < 0 || count % traits.block != 0) {
    fail("de-quantizing ", traits.name, ": ", count, " elements is not a multiple of the block size ",
         traits.block);
  }
  if (count == 0) return;  // an empty tensor may have no data pointer at all
  switch (type) {
    case GgmlType::F32:
      std::memcpy(out, data, static_cast<size_t>(count) * sizeof(float));
      return;
    case GgmlType::BF16:
#pragma omp parallel for schedule(static) if (count > (1 << 16))
      for (int64_t i = 0; i < count; ++i) {
        out[i] = std::bit_cast<float>(static_cast<uint32_t>(load<uint16_t>(data + 2 * i)) << 16);
      }
      return;
    default:
      break;
  }
  using BlockFunction = void (*)(const float*, const uint8_t*, float*);
  BlockFunction block = nullptr;
  switch (type) {
    case GgmlType::F16: block = [](const float* half, const uint8_t* b, float* y) { *y = f16(half, b); }; break;
    case GgmlType::Q8_0: block = block_q8_0; break;
    case GgmlType::Q4_0: block = block_q4_0; break;
    case GgmlType::Q4_1: block = block_q4_1; break;
    case GgmlType::Q5_0: block = block_q5_0; break;
    case GgmlType::Q5_1: block = block_q5_1; break;
    case GgmlType::Q4_K: block = block_q4_k; break;
    case GgmlType::Q5_K: block = block_q5_k; break;
    case GgmlType::Q6_K: block = block_q6_k; break;
    default: fail("cannot de-quantize ggml type ", traits.name);
  }
  const float* half = half_table().data();
  const int64_t blocks = count / traits.block;
#pragma omp parallel for schedule(static) if (count > (1 << 16))
  for (int64_t i = 0; i < blocks; ++i) block(half, data + i * traits.bytes, out + i * traits.block);
}

// ---------------------------------------------------------- GgufValue ---

const char* gguf_value_type_name(GgufValueType type) {
  switch (type) {
    case GgufValueType::UInt8: return "uint8";
    case GgufValueType::Int8: return "int8";
    case GgufValueType::UInt16: return "uint16";
    case GgufValueType::Int16: return "int16";
    case GgufValueType::UInt32: return "uint32";
    case GgufValueType::Int32: return "int32";
    case GgufValueType::Float32: return "float32";
    case GgufValueType::Bool: return "bool";
    case GgufValueType::String: return "string";
    case GgufValueType::Array: return "array";
    case GgufValueType::UInt64: return "uint64";
    case GgufValueType::Int64: return "int64";
    case GgufValueType::Float64: return "float64";
  }
  return "?";
}

namespace {

// Integers as a sign flag plus magnitude, so every GGUF integer type fits.
bool integer_value(const GgufValue& value, const uint8_t* p, bool& negative, uint64_t& magnitude) {
  int64_t signed_value = 0;
  switch (value.type()) {
    case GgufValueType::UInt8: magnitude = load<uint8_t>(p); negative = false; return true;
    case GgufValueType::UInt16: magnitude = load<uint16_t>(p); negative = false; return true;
    case GgufValueType::UInt32: magnitude = load<uint32_t>(p); negative = false; return true;
    case GgufValueType::UInt64: magnitude = load<uint64_t>(p); negative = false; return true;
    case GgufValueType::Int8: signed_value = load<int8_t>(p); break;
    case GgufValueType::Int16: signed_value = load<int16_t>(p); break;
    case GgufValueType::Int32: signed_value = load<int32_t>(p); break;
    case GgufValueType::Int64: signed_value = load<int64_t>(p); break;
    default: return false;
  }
  negative = signed_value < 0;
  magnitude = negative ? 0 - static_cast<uint64_t>(signed_value) : static_cast<uint64_t>(signed_value);
  return true;
}

}  // namespace

uint64_t GgufValue::as_uint(const std::string& what) const {
  bool negative = false;
  uint64_t magnitude = 0;
  if (!integer_value(*this, data_, negative, magnitude)) {
    fail(what, " is a ", gguf_value_type_name(type_), ", expected an unsigned integer");
  }
  if (negative) fail(what, " is negative (-", magnitude, "), expected an unsigned integer");
  return magnitude;
}

int64_t GgufValue::as_int(const std::string& what) const {
  bool negative = false;
  uint64_t magnitude = 0;
  if (!integer_value(*this, data_, negative, magnitude)) {
    fail(what, " is a ", gguf_value_type_name(type_), ", expected an integer");
  }
  constexpr uint64_t kMax = static_cast<uint64_t>(std::numeric_limits<int64_t>::max());
  if (!negative && magnitude > kMax) fail(what, " = ", magnitude, " does not fit a signed 64-bit integer");
  return negative ? static_cast<int64_t>(0 - magnitude) : static_cast<int64_t>(magnitude);
}

double GgufValue::as_float(const std::string& what) const {
  if (type_ == GgufValueType::Float32) return load<float>(data_);
  if (type_ == GgufValueType::Float64) return load<double>(data_);
  fail(what, " is a ", gguf_value_type_name(type_), ", expected float32 or float64");
}

bool GgufValue::as_bool(const std::string& what) const {
  if (type_ != GgufValueType::Bool) fail(what, " is a ", gguf_value_type_name(type_), ", expected a bool");
  return data_[0] != 0;
}

std::string GgufValue::as_string(const std::string& what) const {
  if (type_ != GgufValueType::String) fail(what, " is a ", gguf_value_type_name(type_), ", expected a string");
  return std::string(reinterpret_cast<const char*>(data_), bytes_);
}

std::vector<GgufValue> GgufValue::elements() const {
  std::vector<GgufValue> out;
  if (type_ != GgufValueType::Array) return out;
  out.reserve(count_);
  const uint8_t* p = data_;
  for (uint64_t i = 0; i < count_; ++i) {
    GgufValue element;
    element.type_ = element_type_;
    const size_t size = validated_size(p, element_type_);
    if (element_type_ == GgufValueType::String) {
      element.data_ = p + 8;
      element.bytes_ = size - 8;
    } else if (element_type_ == GgufValueType::Array) {
      element.element_type_ = static_cast<GgufValueType>(load<uint32_t>(p));
      element.count_ = load<uint64_t>(p + 4);
      element.data_ = p + 12;
      element.bytes_ = size - 12;
    } else {
      element.data_ = p;
      element.bytes_ = size;
    }
    out.push_back(element);
    p += size;
  }
  return out;
}

// ----------------------------------------------------------- GgufFile ---

GgufFile::GgufFile(const std::string& path) : map_(path) {
  Cursor cursor(map_.path(), map_.data(), map_.size());
  const auto field = [](const char* text) { return [text] { return std::string(text); }; };

  cursor.need(4, field("magic"));
  if (std::memcmp(cursor.here(), kMagic, 4) != 0) {
    std::string seen;
    for (int i = 0; i < 4; ++i) seen += (cursor.here()[i] >= 0x20 && cursor.here()[i] < 0x7f) ? char(cursor.here()[i]) : '?';
    cursor.invalid(0, field("magic"), "not a GGUF file (starts with '" + seen + "', expected 'GGUF')");
  }
  cursor.skip(4, field("magic"));
  version_ = cursor.read<uint32_t>(field("version"));
  if (version_ != 2 && version_ != 3) {
    if (version_ == 0x02000000u || version_ == 0x03000000u) {
      cursor.invalid(4, field("version"), "a big-endian GGUF file; only little-endian files are supported");
    }
    cursor.invalid(4, field("version"), "unsupported GGUF version " + std::to_string(version_) +
                                            " (supported: 2 and 3)");
  }
  const size_t tensor_count_at = cursor.pos();
  const uint64_t tensor_count = cursor.read<uint64_t>(field("tensor count"));  // checked before the infos
  // Smallest possible key/value: empty key, type, one byte.
  const uint64_t kv_count = cursor.read_count(field("metadata key/value count"), 8 + 4 + 1);

  metadata_.reserve(kv_count);
  for (uint64_t i = 0; i < kv_count; ++i) {
    const size_t key_at = cursor.pos();
    const std::string key(cursor.read_string([&] { return "key of metadata entry #" + std::to_string(i); }));
    const auto describe = [&] { return "metadata " + quoted(key); };
    if (index_.count(key)) cursor.invalid(key_at, describe, "key appears twice");
    const GgufValueType type = read_value_type(cursor, [&] { return describe() + " (value type)"; });
    const size_t value_at = cursor.pos();
    skip_value(cursor, type, describe, 0);
    GgufValue value;
    value.type_ = type;
    value.data_ = map_.data() + value_at;
    value.bytes_ = cursor.pos() - value_at;
    if (type == GgufValueType::String) {
      value.data_ += 8;
      value.bytes_ -= 8;
    } else if (type == GgufValueType::Array) {
      value.element_type_ = static_cast<GgufValueType>(load<uint32_t>(value.data_));
      value.count_ = load<uint64_t>(value.data_ + 4);
      value.data_ += 12;
      value.bytes_ -= 12;
    }
    index_.emplace(key, metadata_.size());
    metadata_.emplace_back(key, value);
  }

  if (const GgufValue* alignment = find("general.alignment")) {
    if (alignment->type() != GgufValueType::UInt32) {
      fail(path, ": metadata 'general.alignment' is a ", gguf_value_type_name(alignment->type()),
           ", expected uint32");
    }
    alignment_ = alignment->as_uint("general.alignment");
    if (alignment_ == 0 || (alignment_ & (alignment_ - 1)) != 0) {
      fail(path, ": metadata 'general.alignment' = ", alignment_, " is not a power of two");
    }
  } else {
    alignment_ = kDefaultAlignment;
  }

  // Smallest possible tensor info: empty name, no dimensions, type, offset.
  cursor.check_count(tensor_count_at, field("tensor count"), tensor_count, 8 + 4 + 4 + 8);
  tensors_.reserve(tensor_count);
  for (uint64_t i = 0; i < tensor_count; ++i) {
    const size_t name_at = cursor.pos();
    GgufTensor tensor;
    tensor.name = cursor.read_string([&] { return "name of tensor #" + std::to_string(i); });
    const auto describe = [&] { return "tensor " + quoted(tensor.name); };
    if (tensor_index_.count(tensor.name)) cursor.invalid(name_at, describe, "name appears twice");
    const size_t dims_at = cursor.pos();
    const uint32_t n_dims = cursor.read<uint32_t>([&] { return describe() + " (dimension count)"; });
    if (n_dims > kMaxDims) {
      cursor.invalid(dims_at, describe, std::to_string(n_dims) + " dimensions (at most " +
                                            std::to_string(kMaxDims) + ")");
    }
    tensor.numel = 1;
    for (uint32_t d = 0; d < n_dims; ++d) {
      const size_t dim_at = cursor.pos();
      const auto dim_field = [&] { return describe() + " (dimension " + std::to_string(d) + ")"; };
      const uint64_t dim = cursor.read<uint64_t>(dim_field);
      constexpr uint64_t kMax = static_cast<uint64_t>(std::numeric_limits<int64_t>::max());
      if (dim > kMax || (dim > 0 && static_cast<uint64_t>(tensor.numel) > kMax / dim)) {
        cursor.invalid(dim_at, dim_field, "size " + std::to_string(dim) + " overflows the element count");
      }
      tensor.dims.push_back(static_cast<int64_t>(dim));
      tensor.numel *= static_cast<int64_t>(dim);
    }
    const size_t type_at = cursor.pos();
    const auto type_field = [&] { return describe() + " (type)"; };
    const uint32_t type = cursor.read<uint32_t>(type_field);
    const TypeTraits* traits = find_traits(type);
    if (!traits) cursor.invalid(type_at, type_field, "unknown ggml type " + std::to_string(type));
    tensor.type = traits->type;
    const int64_t row = tensor.dims.empty() ? 1 : tensor.dims[0];
    if (row % traits->block != 0) {
      cursor.invalid(type_at, type_field,
                     std::string(traits->name) + " needs dimension 0 to be a multiple of " +
                         std::to_string(traits->block) + ", it is " + std::to_string(row));
    }
    const uint64_t blocks = static_cast<uint64_t>(tensor.numel / traits->block);
    if (blocks > std::numeric_limits<size_t>::max() / static_cast<uint64_t>(traits->bytes)) {
      cursor.invalid(type_at, type_field, "the tensor's byte size overflows");
    }
    tensor.nbytes = blocks * static_cast<uint64_t>(traits->bytes);
    const size_t offset_at = cursor.pos();
    const auto offset_field = [&] { return describe() + " (data offset)"; };
    tensor.offset = cursor.read<uint64_t>(offset_field);
    if (tensor.offset % alignment_ != 0) {
      cursor.invalid(offset_at, offset_field, "offset " + std::to_string(tensor.offset) +
                                                  " is not a multiple of the alignment " +
                                                  std::to_string(alignment_));
    }
    tensor_index_.emplace(tensor.name, tensors_.size());
    tensors_.push_back(std::move(tensor));
  }

  // The data section starts at the next multiple of the alignment.
  const uint64_t end_of_infos = cursor.pos();
  data_offset_ = (end_of_infos + alignment_ - 1) / alignment_ * alignment_;
  const uint64_t data_bytes = data_offset_ <= map_.size() ? map_.size() - data_offset_ : 0;
  for (GgufTensor& tensor : tensors_) {
    if (tensor.offset > data_bytes || tensor.nbytes > data_bytes - tensor.offset) {
      fail(path, ": byte ", data_offset_ + tensor.offset, ": data of tensor ", quoted(tensor.name), " (",
           ggml_type_name(tensor.type), ", ", tensor.nbytes, " bytes at data offset ", tensor.offset,
           ") runs past the end of the file at byte ", map_.size(), " (truncated file?)");
    }
    tensor.data = map_.data() + data_offset_ + tensor.offset;
  }
}

const GgufValue* GgufFile::find(const std::string& key) const {
  const auto found = index_.find(key);
  return found == index_.end() ? nullptr : &metadata_[found->second].second;
}

const GgufValue& GgufFile::get(const std::string& key) const {
  const GgufValue* value = find(key);
  if (!value) fail(path(), ": metadata key '", key, "' is missing");
  return *value;
}

std::string GgufFile::get_string(const std::string& key) const {
  return get(key).as_string(path() + ": metadata '" + key + "'");
}
uint64_t GgufFile::get_uint(const std::string& key) const {
  return get(key).as_uint(path() + ": metadata '" + key + "'");
}
int64_t GgufFile::get_int(const std::string& key) const {
  return get(key).as_int(path() + ": metadata '" + key + "'");
}
double GgufFile::get_float(const std::string& key) const {
  return get(key).as_float(path() + ": metadata '" + key + "'");
}
bool GgufFile::get_bool(const std::string& key) const {
  return get(key).as_bool(path() + ": metadata '" + key + "'");
}

namespace {

const GgufValue& array_of(const GgufFile& file, const std::string& key, const char* expected) {
  const GgufValue& value = file.get(key);
  if (value.type() != GgufValueType::Array) {
    fail(file.path(), ": metadata '", key, "' is a ", gguf_value_type_name(value.type()), ", expected ", expected);
  }
  return value;
}

}  // namespace

std::vector<std::string> GgufFile::get_string_array(const std::string& key) const {
  const GgufValue& value = array_of(*this, key, "an array of strings");
  if (value.element_type() != GgufValueType::String) {
    fail(path(), ": metadata '", key, "' is an array of ", gguf_value_type_name(value.element_type()),
         ", expected an array of strings");
  }
  std::vector<std::string> out;
  out.reserve(value.size());
  for (const GgufValue& element : value.elements()) out.push_back(element.as_string(key));
  return out;
}

std::vector<double> GgufFile::get_float_array(const std::string& key) const {
  const GgufValue& value = array_of(*this, key, "an array of floats");
  if (value.element_type() != GgufValueType::Float32 && value.element_type() != GgufValueType::Float64) {
    fail(path(), ": metadata '", key, "' is an array of ", gguf_value_type_name(value.element_type()),
         ", expected an array of float32 or float64");
  }
  std::vector<double> out;
  out.reserve(value.size());
  for (const GgufValue& element : value.elements()) out.push_back(element.as_float(key));
  return out;
}

std::vector<int64_t> GgufFile::get_int_array(const std::string& key) const {
  const GgufValue& value = array_of(*this, key, "an array of integers");
  switch (value.element_type()) {
    case GgufValueType::Float32: case GgufValueType::Float64: case GgufValueType::Bool:
    case GgufValueType::String: case GgufValueType::Array:
      fail(path(), ": metadata '", key, "' is an array of ", gguf_value_type_name(value.element_type()),
           ", expected an array of integers");
    default:
      break;
  }
  std::vector<int64_t> out;
  out.reserve(value.size());
  size_t i = 0;
  for (const GgufValue& element : value.elements()) {
    out.push_back(element.as_int(path() + ": metadata '" + key + "'[" + std::to_string(i++) + "]"));
  }
  return out;
}

const GgufTensor* GgufFile::find_tensor(const std::string& name) const {
  const auto found = tensor_index_.find(name);
  return found == tensor_index_.end() ? nullptr : &tensors_[found->second];
}

const GgufTensor& GgufFile::tensor(const std::string& name) const {
  const GgufTensor* tensor = find_tensor(name);
  if (!tensor) fail(path(), ": no tensor named '", name, "'");
  return *tensor;
}

void GgufFile::check_dequantizable(const GgufTensor& tensor) const {
  if (!ggml_type_dequantizable(tensor.type)) {
    fail(path(), ": tensor '", tensor.name, "' has type ", ggml_type_name(tensor.type),
         ", which qft cannot de-quantize (supported: ", dequantizable_list(), ")");
  }
}

void GgufFile::dequantize(const GgufTensor& tensor, float* out) const {
  check_dequantizable(tensor);
  dequantize_rows(tensor.type, tensor.data, out, tensor.numel);
}

void GgufFile::dequantize(const GgufTensor& tensor, float* out, int64_t first, int64_t rows) const {
  check_dequantizable(tensor);
  const int64_t cols = tensor.dims.at(0);
  if (first < 0 || rows < 0 || (first + rows) * cols > tensor.numel) throw std::out_of_range("rows beyond the tensor");
  const int64_t row_bytes = cols / ggml_block_size(tensor.type) * ggml_block_bytes(tensor.type);
  dequantize_rows(tensor.type, tensor.data + first * row_bytes, out, rows * cols);
}

}  // namespace qft
