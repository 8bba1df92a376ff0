#include "io/state_file.h"

#include <sys/mman.h>
#include <unistd.h>

#include <bit>
#include <cinttypes>
#include <cstdio>
#include <cstring>

#include "core/error.h"
#include "io/atomic_file.h"

namespace qft {
namespace {

static_assert(std::endian::native == std::endian::little, "the state file is little-endian");

constexpr uint64_t kPrime1 = 0x9E3779B185EBCA87ull, kPrime2 = 0xC2B2AE3D27D4EB4Full, kPrime3 = 0x165667B19E3779F9ull,
                   kPrime4 = 0x85EBCA77C2B2AE63ull, kPrime5 = 0x27D4EB2F165667C5ull;

uint64_t read64(const uint8_t* p) {
  uint64_t value;
  std::memcpy(&value, p, 8);
  return value;
}

uint32_t read32(const uint8_t* p) {
  uint32_t value;
  std::memcpy(&value, p, 4);
  return value;
}

uint64_t xxh_round(uint64_t accumulator, uint64_t input) {
  return std::rotl(accumulator + input * kPrime2, 31) * kPrime1;
}

uint64_t xxh_merge(uint64_t hash, uint64_t lane) { return (hash ^ xxh_round(0, lane)) * kPrime1 + kPrime4; }

size_t byte_count(DType dtype, const Shape& shape) {
  return static_cast<size_t>(shape_numel(shape)) * dtype_size(dtype);
}

std::string shape_text(const Shape& shape) {
  std::string text = "[";
  for (size_t i = 0; i < shape.size(); ++i) {
    if (i) text += ", ";
    text += std::to_string(shape[i]);
  }
  return text + "]";
}

}  // namespace

std::string hex64(uint64_t value) {
  char text[17];
  std::snprintf(text, sizeof text, "%016" PRIx64, value);
  return text;
}

uint64_t xxh64(const void* data, size_t bytes, uint64_t seed) {
  // Offsets rather than pointers past the end: `data` may be null when bytes == 0.
  const uint8_t* p = static_cast<const uint8_t*>(data);
  size_t at = 0;
  uint64_t hash;
  if (bytes >= 32) {
    // Four independent lanes over 32-byte stripes.
    uint64_t lane[4] = {seed + kPrime1 + kPrime2, seed + kPrime2, seed, seed - kPrime1};
    for (; at + 32 <= bytes; at += 32) {
      for (int i = 0; i < 4; ++i) lane[i] = xxh_round(lane[i], read64(p + at + 8 * i));
    }
    hash = std::rotl(lane[0], 1) + std::rotl(lane[1], 7) + std::rotl(lane[2], 12) + std::rotl(lane[3], 18);
    for (uint64_t value : lane) hash = xxh_merge(hash, value);
  } else {
    hash = seed + kPrime5;
  }
  hash += bytes;
  for (; at + 8 <= bytes; at += 8) hash = std::rotl(hash ^ xxh_round(0, read64(p + at)), 27) * kPrime1 + kPrime4;
  if (at + 4 <= bytes) {
    hash = std::rotl(hash ^ (static_cast<uint64_t>(read32(p + at)) * kPrime1), 23) * kPrime2 + kPrime3;
    at += 4;
  }
  for (; at < bytes; ++at) hash = std::rotl(hash ^ (p[at] * kPrime5), 11) * kPrime1;
  hash ^= hash >> 33;
  hash *= kPrime2;
  hash ^= hash >> 29;
  hash *= kPrime3;
  hash ^= hash >> 32;
  return hash;
}

void StateWriter::add(std::string name, DType dtype, Shape shape, const void* data) {
  if (!names_.insert(name).second) fail("state tensor '", name, "' added twice");
  if (!data && byte_count(dtype, shape) > 0) fail("state tensor '", name, "' has no data");
  entries_.push_back({std::move(name), dtype, std::move(shape), data});
}

void StateWriter::add_copy(std::string name, DType dtype, Shape shape, const void* data) {
  const auto* bytes = static_cast<const uint8_t*>(data);
  copies_.emplace_back(bytes, bytes + byte_count(dtype, shape));
  add(std::move(name), dtype, std::move(shape), copies_.back().data());
}

void StateWriter::add_int64(std::string name, int64_t value) { add_copy(std::move(name), DType::I64, {1}, &value); }

std::string StateWriter::header() const {
  nlohmann::json header = nlohmann::json::object();
  uint64_t offset = 0;
  for (const Entry& entry : entries_) {
    const uint64_t bytes = byte_count(entry.dtype, entry.shape);
    header[entry.name] = {{"dtype", dtype_name(entry.dtype)}, {"shape", entry.shape}, {"data_offsets", {offset, offset + bytes}}};
    offset += bytes;
  }
  std::string text = header.dump();
  text.append((8 - text.size() % 8) % 8, ' ');
  return text;
}

uint64_t StateWriter::file_bytes() const {
  uint64_t bytes = 8 + header().size();
  for (const Entry& entry : entries_) bytes += byte_count(entry.dtype, entry.shape);
  return bytes;
}

nlohmann::json StateWriter::checksums() const {
  std::vector<uint64_t> hashes(entries_.size());
  // Hashing runs at memory speed; tensors in parallel for large models.
#pragma omp parallel for schedule(dynamic)
  for (size_t i = 0; i < entries_.size(); ++i) {
    hashes[i] = xxh64(entries_[i].data, byte_count(entries_[i].dtype, entries_[i].shape));
  }
  nlohmann::json checksums = nlohmann::json::object();
  for (size_t i = 0; i < entries_.size(); ++i) checksums[entries_[i].name] = hex64(hashes[i]);
  return checksums;
}

void StateWriter::write(const std::string& path, const std::function<void()>& after_tensor) const {
  const std::string text = header();
  const uint64_t header_bytes = text.size();
  AtomicFileWriter writer(path, file_bytes());
  writer.write(&header_bytes, 8);
  writer.write(text.data(), text.size());
  for (const Entry& entry : entries_) {
    writer.write(entry.data, byte_count(entry.dtype, entry.shape));
    if (after_tensor) after_tensor();
  }
  writer.commit();
}

StateReader::StateReader(const std::string& path, const nlohmann::json& checksums) : file_(path) {
  if (!checksums.is_object()) fail(path, ": the manifest lists no checksums for this file");
  for (const auto& [name, value] : checksums.items()) {
    uint64_t hash = 0;
    const std::string text = value.is_string() ? value.get<std::string>() : "";
    if (text.size() != 16 || std::sscanf(text.c_str(), "%16" SCNx64, &hash) != 1) {
      fail(path, ": the manifest's checksum of tensor '", name, "' is malformed");
    }
    if (!file_.find(name)) fail(path, ": tensor '", name, "' is missing (the file is incomplete or not this checkpoint's)");
    checksums_.emplace(name, hash);
  }
  for (const auto& [name, record] : file_.tensors()) {
    if (!checksums_.count(name)) fail(path, ": tensor '", name, "' is not listed in the manifest");
  }
}

const TensorRecord& StateReader::checked(const std::string& name, DType dtype) const {
  const TensorRecord* record = file_.find(name);
  if (!record) fail(path(), ": tensor '", name, "' is missing");
  if (record->dtype != dtype) {
    fail(path(), ": tensor '", name, "' has dtype ", dtype_name(record->dtype), ", expected ", dtype_name(dtype));
  }
  if (!read_.count(name)) {
    if (xxh64(record->data, record->nbytes) != checksums_.at(name)) {
      fail(path(), ": tensor '", name, "' fails its checksum (the file is corrupted)");
    }
    read_.insert(name);
  }
  return *record;
}

const uint8_t* StateReader::get(const std::string& name, DType dtype, const Shape& shape) const {
  const TensorRecord& record = checked(name, dtype);
  if (record.shape != shape) {
    fail(path(), ": tensor '", name, "' has shape ", shape_text(record.shape), ", expected ", shape_text(shape));
  }
  return record.data;
}

const TensorRecord& StateReader::get_vector(const std::string& name, DType dtype) const {
  const TensorRecord& record = checked(name, dtype);
  if (record.shape.size() != 1) fail(path(), ": tensor '", name, "' has shape ", shape_text(record.shape), ", expected one dimension");
  return record;
}

void StateReader::read(const std::string& name, DType dtype, const Shape& shape, void* out) const {
  const uint8_t* data = get(name, dtype, shape);
  const size_t bytes = byte_count(dtype, shape);
  if (bytes == 0) return;
  std::memcpy(out, data, bytes);
  // Drops the mapped pages just copied, so loading a checkpoint as large as
  // the model does not double the resident set (they are re-read from the
  // file should anything touch them again).
  const uintptr_t page = static_cast<uintptr_t>(::sysconf(_SC_PAGESIZE));
  const uintptr_t begin = reinterpret_cast<uintptr_t>(data) / page * page;
  const uintptr_t end = reinterpret_cast<uintptr_t>(data) + bytes;
  ::madvise(reinterpret_cast<void*>(begin), end - begin, MADV_DONTNEED);
}

int64_t StateReader::read_int64(const std::string& name) const {
  int64_t value;
  read(name, DType::I64, {1}, &value);
  return value;
}

void StateReader::expect_all_read() const {
  for (const auto& [name, record] : file_.tensors()) {
    if (!read_.count(name)) fail(path(), ": tensor '", name, "' belongs to no parameter of this configuration");
  }
}

}  // namespace qft
