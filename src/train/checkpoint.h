#pragma once
// Training checkpoints on disk. A checkpoint is a directory:
//   manifest.json      {"format": "qft-checkpoint", "version": 1, "step": N,
//                       "model_config": {HF config.json}, "training": {settings that
//                       change the arithmetic}, "trainer_state": {the caller's},
//                       "state": {"file": "state.safetensors", "bytes": B,
//                                 "checksums": {tensor: XXH64 hex}}}
//   state.safetensors  every tensor of the training state (io/state_file.h):
//                      weights, optimizer state and step counts, raw (INT8 codes
//                      as U8, per-row ranges as F32 (rows, 2), CSR as I32/U16/F32).
// It is written atomically: everything goes into DIR.tmp (fsynced, manifest
// last), DIR is moved aside to DIR.old, DIR.tmp renamed to DIR, DIR.old
// removed. A crash at any point leaves a complete checkpoint at DIR, or — only
// between the two renames — at DIR.old, which open_checkpoint falls back to.
// The write is refused before it starts when the file system has less free
// space than the new checkpoint's exact size (the old one stays until the new
// one is in place); a disk that fills up meanwhile fails the write naming the
// file and the bytes still needed, and DIR.tmp is removed.
// One writer per directory at a time.
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "io/state_file.h"
#include "quant/hybrid.h"

namespace qft {

inline constexpr int kCheckpointVersion = 1;

// Writes `manifest` (completed with format, version and the state file's
// size and checksums) and `state` as the checkpoint DIR, replacing one there.
// Data-parallel, every rank calls it: rank 0 writes `state` (the same on
// every rank) and each rank its `shard` as shard-R.safetensors, the manifest
// ("ranks": N, "shards": [{file, bytes, checksums}]) is written once every
// shard is durable, then DIR is put in place; an error on any rank fails the
// write on every rank, leaving the previous checkpoint.
void write_checkpoint(const std::string& directory, nlohmann::json manifest, const StateWriter& state,
                      const StateWriter* shard = nullptr);

struct CheckpointFiles {
  std::string directory;  // the one read: DIR, or DIR.old after an interrupted write
  nlohmann::json manifest;
  std::unique_ptr<StateReader> state;
  std::vector<std::unique_ptr<StateReader>> shard_files;  // a data-parallel run's, one per rank
  // The writing ranks' shares: the shard files, or the state file alone.
  ShardReaders shards() const;
};
// Opens DIR (DIR.old when DIR is missing) and validates the manifest and the
// state file's size and tensor list; tensors are checksummed as they are read.
// Errors name the file.
CheckpointFiles open_checkpoint(const std::string& directory);

// Fails, naming `manifest`, at the first key whose value differs between the
// checkpoint's settings object `stored` and this run's `current` (`what`
// names the kind of setting in the message).
void expect_same_settings(const nlohmann::json& stored, const nlohmann::json& current, const std::string& what,
                          const std::string& manifest);

// Tests only: called at each stage of write_checkpoint ("tensor" after each
// tensor of the state file, "state", "manifest", "moved-aside", "renamed",
// "done"), so a test can kill the process there.
void set_checkpoint_write_hook(std::function<void(const std::string& stage)> hook);

// The state of INT8 rows (codes, ranges) and of a hybrid matrix (D, S in CSR,
// thresholds) under `name`; load checks shapes and that ranges, outliers and
// thresholds are well-formed.
void save_rows(StateWriter& writer, const std::string& name, const QuantizedRows& rows);
void load_rows(const StateReader& reader, const std::string& name, QuantizedRows& rows);
// Rows [owned.begin, owned.end) of a (total_rows, cols) INT8 tensor saved
// in shares by the ranks of `shards` (each share under `name` with
// save_rows), into `rows` (owned rows, cols).
void load_row_share(const ShardReaders& shards, const std::string& name, int total_rows, int64_t owned_begin,
                    QuantizedRows& rows);
void save_hybrid(StateWriter& writer, const std::string& name, const HybridMatrix& matrix);
void load_hybrid(const StateReader& reader, const std::string& name, HybridMatrix& matrix);

}  // namespace qft
