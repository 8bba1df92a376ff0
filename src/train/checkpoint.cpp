#include "train/checkpoint.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>

#include "core/error.h"
#include "core/json_integer.h"
#include "dist/partition.h"
#include "dist/world.h"
#include "io/atomic_file.h"

namespace qft {
namespace {

namespace fs = std::filesystem;

constexpr const char* kFormat = "qft-checkpoint";
constexpr const char* kManifest = "manifest.json";
constexpr const char* kStateFile = "state.safetensors";

std::function<void(const std::string&)>& write_hook() {
  static std::function<void(const std::string&)> hook;
  return hook;
}

void reached(const std::string& stage) {
  if (write_hook()) write_hook()(stage);
}

// DIR without trailing separators, so DIR.tmp and DIR.old are its siblings.
fs::path target_path(const std::string& directory) {
  std::string path = directory;
  while (path.size() > 1 && path.back() == '/') path.pop_back();
  if (path.empty()) fail("the checkpoint directory is empty");
  return fs::path(path);
}

fs::path sibling(const fs::path& target, const char* suffix) { return fs::path(target.string() + suffix); }

fs::path parent_of(const fs::path& target) {
  return target.has_parent_path() ? target.parent_path() : fs::path(".");
}

// Whether `directory` holds nothing but checkpoint files (complete or being
// written), so replacing or removing it cannot destroy anything else.
bool only_checkpoint_files(const fs::path& directory) {
  if (!fs::is_directory(directory)) return false;
  for (const fs::directory_entry& entry : fs::directory_iterator(directory)) {
    const std::string name = entry.path().filename().string();
    const bool shard = name.rfind("shard-", 0) == 0 && name.find(".safetensors") != std::string::npos;
    const bool ours = name == kManifest || name == kStateFile || name.rfind(std::string(kManifest) + ".tmp.", 0) == 0 ||
                      name.rfind(std::string(kStateFile) + ".tmp.", 0) == 0 || shard;
    if (!ours || !entry.is_regular_file()) return false;
  }
  return true;
}

// Removes a leftover sibling (DIR.tmp, DIR.old) if it is one of ours.
void remove_leftover(const fs::path& path) {
  if (!fs::exists(fs::symlink_status(path))) return;
  if (!only_checkpoint_files(path)) fail(path.string(), ": exists and is not a qft checkpoint; move it away");
  fs::remove_all(path);
}

// Checks DIR and DIR.old and removes a DIR.tmp that a killed write left.
void prepare(const fs::path& target) {
  const fs::path temporary = sibling(target, ".tmp"), old = sibling(target, ".old");
  if (fs::exists(fs::symlink_status(target)) && !only_checkpoint_files(target)) {
    fail(target.string(), ": exists and is not a qft checkpoint; refusing to replace it");
  }
  fs::create_directories(parent_of(target));
  remove_leftover(temporary);
  // DIR.old is removed only once DIR is complete (put_in_place): when DIR is
  // missing it is the checkpoint.
  if (fs::exists(fs::symlink_status(old)) && !only_checkpoint_files(old)) {
    fail(old.string(), ": exists and is not a qft checkpoint; move it away");
  }
}

void complete_manifest(nlohmann::json& manifest, const StateWriter& state) {
  manifest["format"] = kFormat;
  manifest["version"] = kCheckpointVersion;
  manifest["state"] = {{"file", kStateFile}, {"bytes", state.file_bytes()}, {"checksums", state.checksums()}};
}

// The complete DIR.tmp becomes DIR; from here on, DIR or DIR.old is always a
// complete checkpoint.
void put_in_place(const fs::path& target) {
  const fs::path temporary = sibling(target, ".tmp"), old = sibling(target, ".old"), parent = parent_of(target);
  std::error_code ignored;
  try {
    if (fs::exists(target)) {
      fs::remove_all(old);  // a leftover, and DIR is complete
      fs::rename(target, old);
      sync_directory(parent.string());
      reached("moved-aside");
    }
    fs::rename(temporary, target);
    sync_directory(parent.string());
    reached("renamed");
  } catch (const fs::filesystem_error& error) {
    if (!fs::exists(target) && fs::exists(old)) fs::rename(old, target, ignored);
    fs::remove_all(temporary, ignored);
    fail(target.string(), ": cannot put the checkpoint in place: ", error.code().message());
  }
  fs::remove_all(old, ignored);
  reached("done");
}

void write_directory(const fs::path& target, nlohmann::json manifest, const StateWriter& state) {
  const fs::path temporary = sibling(target, ".tmp");
  prepare(target);
  complete_manifest(manifest, state);
  const std::string text = manifest.dump(2) + "\n";
  // The previous checkpoint stays until this one is complete.
  require_free_space(parent_of(target).string(), state.file_bytes() + text.size(), "the checkpoint " + target.string());
  fs::create_directory(temporary);
  try {
    state.write((temporary / kStateFile).string(), [] { reached("tensor"); });
    reached("state");
    write_file_atomically((temporary / kManifest).string(), text);
    sync_directory(temporary.string());
    reached("manifest");
  } catch (...) {
    fs::remove_all(temporary);
    throw;
  }
  put_in_place(target);
}

// Runs `phase` on every rank, then fails on every rank when it failed on any
// (naming the rank), so no rank waits for another that gave up.
void on_every_rank(const std::function<void()>& phase) {
  std::string error;
  try {
    phase();
  } catch (const Error& failure) {
    error = failure.what();
  } catch (const fs::filesystem_error& failure) {
    error = failure.what();
  }
  const dist::World& world = dist::world();
  const std::vector<std::string> errors = world.all_strings(error);
  for (size_t r = 0; r < errors.size(); ++r) {
    if (errors[r].empty()) continue;
    if (static_cast<int>(r) == world.rank()) throw Error(errors[r]);
    fail("rank ", r, ": ", errors[r]);
  }
}

std::string shard_file(int rank) { return "shard-" + std::to_string(rank) + ".safetensors"; }

// The data-parallel write (write_checkpoint's comment).
void write_sharded(const fs::path& target, nlohmann::json manifest, const StateWriter& state, const StateWriter& shard) {
  const dist::World& world = dist::world();
  const fs::path temporary = sibling(target, ".tmp");
  const uint64_t shard_bytes = static_cast<uint64_t>(world.sum(static_cast<int64_t>(shard.file_bytes())));
  on_every_rank([&] {
    if (!world.is_root()) return;
    prepare(target);
    // The manifest is small: a page per rank is room enough.
    require_free_space(parent_of(target).string(), state.file_bytes() + shard_bytes + 4096 * (world.size() + 1),
                       "the checkpoint " + target.string());
    fs::create_directory(temporary);
  });
  try {
    on_every_rank([&] { shard.write((temporary / shard_file(world.rank())).string()); });
    const std::vector<std::string> checksums = world.all_strings(shard.checksums().dump());
    const std::vector<std::string> sizes = world.all_strings(std::to_string(shard.file_bytes()));
    on_every_rank([&] {
      if (!world.is_root()) return;
      complete_manifest(manifest, state);
      manifest["ranks"] = world.size();
      manifest["shards"] = nlohmann::json::array();
      for (int r = 0; r < world.size(); ++r) {
        manifest["shards"].push_back({{"file", shard_file(r)},
                                      {"bytes", std::stoull(sizes[r])},
                                      {"checksums", nlohmann::json::parse(checksums[r])}});
      }
      state.write((temporary / kStateFile).string(), [] { reached("tensor"); });
      reached("state");
      write_file_atomically((temporary / kManifest).string(), manifest.dump(2) + "\n");
      sync_directory(temporary.string());
      reached("manifest");
    });
  } catch (...) {
    std::error_code ignored;
    if (world.is_root()) fs::remove_all(temporary, ignored);
    throw;
  }
  on_every_rank([&] {
    if (world.is_root()) put_in_place(target);
  });
}

// A state file of the checkpoint, its size checked against the manifest's record.
std::unique_ptr<StateReader> open_state_file(const std::string& directory, const nlohmann::json& record,
                                             const std::string& expected_name, const std::string& manifest_path) {
  if (record.at("file").get<std::string>() != expected_name) fail(manifest_path, ": unexpected state file name");
  const std::string path = directory + "/" + expected_name;
  if (!fs::is_regular_file(path)) fail(path, ": missing");
  const uint64_t bytes = json_integer<uint64_t>(record.at("bytes"), manifest_path + ": 'bytes' of " + expected_name);
  const uint64_t found = fs::file_size(path);
  if (found != bytes) fail(path, ": ", found, " bytes, but the manifest records ", bytes, " (truncated or replaced?)");
  return std::make_unique<StateReader>(path, record.at("checksums"));
}

CheckpointFiles open_directory(const fs::path& target) {
  CheckpointFiles files;
  if (fs::exists(target)) {
    files.directory = target.string();
  } else if (fs::exists(sibling(target, ".old") / kManifest)) {
    files.directory = sibling(target, ".old").string();  // the write of a newer one stopped between its renames
  } else {
    fail(target.string(), ": no checkpoint there");
  }
  const std::string manifest_path = files.directory + "/" + kManifest;
  if (!fs::is_regular_file(manifest_path)) fail(manifest_path, ": missing (not a qft checkpoint directory?)");
  try {
    std::ifstream stream(manifest_path);
    files.manifest = nlohmann::json::parse(stream);
  } catch (const nlohmann::json::exception& error) {
    fail(manifest_path, ": malformed JSON: ", error.what());
  }
  const nlohmann::json& manifest = files.manifest;
  try {
    if (!manifest.is_object() || manifest.value("format", "") != kFormat) fail(manifest_path, ": not a qft checkpoint manifest");
    const int version = json_integer<int>(manifest.at("version"), manifest_path + ": 'version'");
    if (version != kCheckpointVersion) {
      fail(manifest_path, ": checkpoint format version ", version, ", this qft reads version ", kCheckpointVersion);
    }
    if (!manifest.at("step").is_number_integer() || manifest.at("step").get<int64_t>() < 0) {
      fail(manifest_path, ": 'step' must be a non-negative integer");
    }
    files.state = open_state_file(files.directory, manifest.at("state"), kStateFile, manifest_path);
    if (manifest.contains("ranks")) {
      const int ranks = json_integer<int>(manifest.at("ranks"), manifest_path + ": 'ranks'", 2, 1 << 20);
      const nlohmann::json& shards = manifest.at("shards");
      if (!shards.is_array() || static_cast<int>(shards.size()) != ranks) {
        fail(manifest_path, ": 'shards' must list one file for each of the ", ranks, " ranks");
      }
      for (int r = 0; r < ranks; ++r) {
        files.shard_files.push_back(open_state_file(files.directory, shards[r], shard_file(r), manifest_path));
      }
    }
  } catch (const nlohmann::json::exception& error) {
    fail(manifest_path, ": malformed manifest: ", error.what());
  }
  return files;
}

// A quantized matrix's ranges as a tensor: 8 bits, `.ranges` (rows, 2)
// FP32; 4 bits, `.blocks` (rows, 2 × blocks) BF16.
struct RangeTensor {
  std::string suffix;
  DType dtype;
  int64_t values_per_row;
  uint8_t* data;
};

RangeTensor range_tensor(const QuantizedRows& rows) {
  QuantizedRows& owner = const_cast<QuantizedRows&>(rows);  // read or written by the caller's choice
  if (rows.layout().bits == 8) return {".ranges", DType::F32, 2, reinterpret_cast<uint8_t*>(owner.ranges())};
  return {".blocks", DType::BF16, 2 * rows.ranges_per_row(), reinterpret_cast<uint8_t*>(owner.blocks())};
}

// Every range finite with a scale ≥ 0 (a corrupt or hand-made file is refused by name).
void check_ranges(const std::string& path, const std::string& name, const QuantizedRows& rows) {
  const int per_row = rows.layout().bits == 8 ? 1 : rows.ranges_per_row();
  for (int64_t i = 0; i < static_cast<int64_t>(rows.rows()) * per_row; ++i) {
    const RowRange range = rows.layout().bits == 8 ? rows.ranges()[i] : rows.blocks()[i].values();
    if (!std::isfinite(range.offset) || !std::isfinite(range.scale) || range.scale < 0.0f) {
      fail(path, ": tensor '", name, "': row ", i / per_row, " has an invalid range");
    }
  }
}

}  // namespace

ShardReaders CheckpointFiles::shards() const {
  ShardReaders readers;
  if (shard_files.empty()) {
    readers.files = {state.get()};
    return readers;
  }
  readers.ranks = static_cast<int>(shard_files.size());
  for (const auto& file : shard_files) readers.files.push_back(file.get());
  return readers;
}

void set_checkpoint_write_hook(std::function<void(const std::string& stage)> hook) { write_hook() = std::move(hook); }

// File-system errors (permissions, a full disk) become qft::Error naming the path.
void write_checkpoint(const std::string& directory, nlohmann::json manifest, const StateWriter& state,
                      const StateWriter* shard) {
  const fs::path target = target_path(directory);
  try {
    if (shard) return write_sharded(target, std::move(manifest), state, *shard);
    write_directory(target, std::move(manifest), state);
  } catch (const fs::filesystem_error& error) {
    fail(target.string(), ": cannot write the checkpoint: ", error.what());
  }
}

CheckpointFiles open_checkpoint(const std::string& directory) {
  const fs::path target = target_path(directory);
  try {
    return open_directory(target);
  } catch (const fs::filesystem_error& error) {
    fail(target.string(), ": cannot read the checkpoint: ", error.what());
  }
}

// A quantized matrix's tensors: codes (rows, bytes a row) and its ranges
// (range_tensor). The 8-bit layout's are (rows, cols) and (rows, 2).
void save_rows(StateWriter& writer, const std::string& name, const QuantizedRows& rows) {
  static_assert(sizeof(RowRange) == 2 * sizeof(float) && sizeof(BlockRange) == 2 * sizeof(uint16_t));
  writer.add(name + ".codes", DType::U8, {rows.rows(), static_cast<int64_t>(rows.row_bytes())}, rows.codes());
  const RangeTensor ranges = range_tensor(rows);
  writer.add(name + ranges.suffix, ranges.dtype, {rows.rows(), ranges.values_per_row}, ranges.data);
}

void load_rows(const StateReader& reader, const std::string& name, QuantizedRows& rows) {
  reader.read(name + ".codes", DType::U8, {rows.rows(), static_cast<int64_t>(rows.row_bytes())}, rows.codes());
  const RangeTensor ranges = range_tensor(rows);
  reader.read(name + ranges.suffix, ranges.dtype, {rows.rows(), ranges.values_per_row}, ranges.data);
  check_ranges(reader.path(), name + ranges.suffix, rows);
}

void load_row_share(const ShardReaders& shards, const std::string& name, int total_rows, int64_t owned_begin,
                    QuantizedRows& rows) {
  const int64_t owned_end = owned_begin + rows.rows(), row_bytes = static_cast<int64_t>(rows.row_bytes());
  const RangeTensor ranges = range_tensor(rows);
  const int64_t range_bytes = static_cast<int64_t>(rows.layout().range_bytes(rows.cols()));
  for (int s = 0; s < shards.ranks; ++s) {
    const dist::Range held = dist::share(total_rows, shards.ranks, s);
    const int64_t begin = std::max(held.begin, owned_begin), end = std::min(held.end, owned_end);
    // A single state file is read whole (its every tensor is checked), shards only where they overlap.
    if (begin >= end && shards.ranks > 1) continue;
    const StateReader& reader = *shards.files.at(s);
    const uint8_t* codes = reader.get(name + ".codes", DType::U8, {held.size(), row_bytes});
    const uint8_t* stored = reader.get(name + ranges.suffix, ranges.dtype, {held.size(), ranges.values_per_row});
    if (begin >= end) continue;
    std::memcpy(rows.row_codes(static_cast<int>(begin - owned_begin)), codes + (begin - held.begin) * row_bytes,
                static_cast<size_t>((end - begin) * row_bytes));
    std::memcpy(ranges.data + (begin - owned_begin) * range_bytes, stored + (begin - held.begin) * range_bytes,
                static_cast<size_t>((end - begin) * range_bytes));
  }
  check_ranges(shards.files.at(0)->path(), name + ranges.suffix, rows);
}

void save_hybrid(StateWriter& writer, const std::string& name, const HybridMatrix& matrix) {
  save_rows(writer, name, matrix.dense());
  writer.add(name + ".outliers.row_start", DType::I32, {matrix.rows() + 1}, matrix.outlier_row_start());
  writer.add(name + ".outliers.columns", DType::U16, {matrix.outlier_count()}, matrix.outlier_columns());
  writer.add(name + ".outliers.values", DType::F32, {matrix.outlier_count()}, matrix.outlier_values());
  const float thresholds[2] = {matrix.threshold_min(), matrix.threshold_max()};
  writer.add_copy(name + ".thresholds", DType::F32, {2}, thresholds);
}

void load_hybrid(const StateReader& reader, const std::string& name, HybridMatrix& matrix) {
  load_rows(reader, name, matrix.dense());
  // Copied out first: the mapped file gives no alignment guarantee.
  std::vector<int32_t> starts(static_cast<size_t>(matrix.rows()) + 1);
  reader.read(name + ".outliers.row_start", DType::I32, {matrix.rows() + 1}, starts.data());
  const int64_t outliers = reader.get_vector(name + ".outliers.columns", DType::U16).shape[0];
  std::vector<uint16_t> column_values(static_cast<size_t>(outliers));
  std::vector<float> outlier_values(static_cast<size_t>(outliers));
  reader.read(name + ".outliers.columns", DType::U16, {outliers}, column_values.data());
  reader.read(name + ".outliers.values", DType::F32, {outliers}, outlier_values.data());
  float thresholds[2];
  reader.read(name + ".thresholds", DType::F32, {2}, thresholds);
  try {
    matrix.restore_outliers(starts.data(), column_values.data(), outlier_values.data(), outliers, thresholds[0],
                            thresholds[1]);
  } catch (const Error& error) {
    fail(reader.path(), ": ", error.what());
  }
}

void expect_same_settings(const nlohmann::json& stored, const nlohmann::json& current, const std::string& what,
                          const std::string& manifest) {
  if (!stored.is_object()) fail(manifest, ": '", what, "' is missing or not an object");
  for (const auto& [key, value] : current.items()) {
    if (!stored.contains(key)) fail(manifest, ": ", what, " lacks '", key, "'");
    if (stored.at(key) != value) {
      fail(manifest, ": the checkpoint has ", what, " ", key, " = ", stored.at(key).dump(), ", this run has ", value.dump());
    }
  }
  for (const auto& [key, value] : stored.items()) {
    if (!current.contains(key)) fail(manifest, ": the checkpoint has ", what, " ", key, " = ", value.dump(), ", which this run lacks");
  }
}

}  // namespace qft
