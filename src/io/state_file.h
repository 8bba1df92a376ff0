#pragma once
// Training state as raw tensors (INT8 codes, FP32 ranges and moments, CSR
// indices, step counters) in one safetensors file, with an XXH64 checksum
// per tensor kept beside it (in a checkpoint's manifest), so a loader detects
// truncation and corruption and names the file and the tensor. A writer takes
// views of live buffers (nothing is copied); a reader checks the presence,
// dtype, shape and checksum of a tensor before handing out its bytes.
#include <cstdint>
#include <deque>
#include <functional>
#include <set>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "io/safetensors.h"

namespace qft {

// XXH64 (Collet's xxHash, 64-bit) of `bytes` bytes.
uint64_t xxh64(const void* data, size_t bytes, uint64_t seed = 0);
// 16 lowercase hex digits, as checksums are written.
std::string hex64(uint64_t value);

class StateWriter {
 public:
  // `data` (shape's numel × dtype_size) must stay valid until write().
  void add(std::string name, DType dtype, Shape shape, const void* data);
  // A copy of `data`, for values that do not outlive the call.
  void add_copy(std::string name, DType dtype, Shape shape, const void* data);
  void add_int64(std::string name, int64_t value);  // a scalar, copied

  // {name: "xxh64 hex"} of every tensor, as StateReader checks them.
  nlohmann::json checksums() const;
  // Writes the tensors to `path` (fsynced, renamed into place) in the order
  // added. after_tensor() runs after each tensor's bytes are handed to the
  // file (tests interrupt there).
  void write(const std::string& path, const std::function<void()>& after_tensor = {}) const;
  // The bytes write leaves on disk.
  uint64_t file_bytes() const;

 private:
  std::string header() const;  // safetensors JSON, padded to 8 bytes

  struct Entry {
    std::string name;
    DType dtype;
    Shape shape;
    const void* data;
  };
  std::vector<Entry> entries_;
  std::set<std::string> names_;
  std::deque<std::vector<uint8_t>> copies_;  // stable addresses
};

class StateReader {
 public:
  // `checksums` as StateWriter::checksums returned them; the file must hold
  // exactly those tensors.
  StateReader(const std::string& path, const nlohmann::json& checksums);

  // The bytes of `name`, which must have this dtype and shape; verifies the checksum.
  const uint8_t* get(const std::string& name, DType dtype, const Shape& shape) const;
  // The same for a tensor whose length varies (one dimension, any length).
  const TensorRecord& get_vector(const std::string& name, DType dtype) const;
  void read(const std::string& name, DType dtype, const Shape& shape, void* out) const;
  int64_t read_int64(const std::string& name) const;

  // Throws when some tensor of the file was never read: the checkpoint holds
  // state this configuration does not have.
  void expect_all_read() const;
  const std::string& path() const { return file_.path(); }

 private:
  const TensorRecord& checked(const std::string& name, DType dtype) const;

  SafetensorsFile file_;
  std::map<std::string, uint64_t> checksums_;
  mutable std::set<std::string> read_;
};

// The per-rank state files of a checkpoint that `ranks` ranks wrote: rank
// s's share of each sharded tensor is in files[s] (with one rank, the
// checkpoint's state file itself).
struct ShardReaders {
  int ranks = 1;
  std::vector<const StateReader*> files;
};

}  // namespace qft
