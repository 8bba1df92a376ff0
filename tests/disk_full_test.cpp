// A full disk during a checkpoint or an export: refused before writing when
// the plan does not fit, and when the disk fills up while writing, the error
// names the file and the bytes still needed, no temporary file is left, the
// previous checkpoint stays loadable and training resumes from it. Each test
// mounts a small tmpfs (root only; skipped with a message elsewhere).
#include <gtest/gtest.h>

#include <filesystem>
#include <functional>
#include <nlohmann/json.hpp>

#include "core/error.h"
#include "io/atomic_file.h"
#include "model/gguf_export.h"
#include "model/hf_export.h"
#include "test_util.h"
#include "train/checkpoint.h"
#include "train/training.h"

namespace qft {
namespace {

namespace fs = std::filesystem;
using test::SmallDisk;
using test::error_of;
using test::TempDir;

#define EXPECT_MENTIONS(text, part) EXPECT_NE((text).find(part), std::string::npos) << (text)

// A tiny untied LLaMA trained with QLion.
struct TinyRun {
  TempDir dir;
  std::string config = dir.file("config.json");
  std::vector<TokenSequence> lines;
  TrainingSettings settings;

  TinyRun() {
    test::write_text(config, nlohmann::json{{"architectures", {"LlamaForCausalLM"}}, {"vocab_size", 48},
                                            {"hidden_size", 64}, {"intermediate_size", 96}, {"num_hidden_layers", 2},
                                            {"num_attention_heads", 4}, {"num_key_value_heads", 2}}
                                 .dump());
    for (int line = 0; line < 8; ++line) {
      TokenSequence tokens;
      for (int i = 0; i < 12; ++i) tokens.push_back((line * 5 + i * 3) % 48);
      lines.push_back(tokens);
    }
    settings.seed = 5;
  }
  ModelSource source() const { return ModelSource::random(config, 3); }
  std::unique_ptr<Training> training() const { return make_training(source(), settings); }
  double step(Training& training, int step) const {
    return training.step(step, 1e-3f, {make_batch({lines[step % 8], lines[(step + 3) % 8]})});
  }
};

// The bytes a checkpoint of `training` takes, measured on an ordinary disk.
uint64_t checkpoint_bytes(const Training& training) {
  TempDir dir;
  training.save_checkpoint(dir.file("ckpt"));
  uint64_t bytes = 0;
  for (const auto& entry : fs::directory_iterator(dir.file("ckpt"))) bytes += entry.file_size();
  return bytes;
}

TEST(FullDisk, CheckpointThatCannotFitIsRefusedBeforeWriting) {
  const TinyRun run;
  auto training = run.training();
  run.step(*training, 1);
  const uint64_t bytes = checkpoint_bytes(*training);
  // Room for one checkpoint, not for a second beside it while it replaces the first.
  const SmallDisk disk(bytes * 3 / 2);
  MOUNT_OR_SKIP(disk);
  const std::string path = disk.file("ckpt");
  training->save_checkpoint(path);
  run.step(*training, 2);
  const std::string error = error_of([&] { training->save_checkpoint(path); });
  EXPECT_MENTIONS(error, disk.path() + ": the checkpoint " + path + " needs ");
  EXPECT_MENTIONS(error, " more bytes or choose another directory");
  EXPECT_TRUE(disk.others({"ckpt"}).empty());
  EXPECT_EQ(run.training()->load_checkpoint(path).step, 1);
}

TEST(FullDisk, DiskFillingDuringACheckpointKeepsThePreviousOneAndTrainingResumes) {
  const TinyRun run;
  auto training = run.training();
  run.step(*training, 1);
  const uint64_t bytes = checkpoint_bytes(*training);
  const SmallDisk disk(bytes * 4);
  MOUNT_OR_SKIP(disk);
  const std::string path = disk.file("ckpt");
  training->save_checkpoint(path);
  const double step2 = run.step(*training, 2);

  bool filled = false;
  set_checkpoint_write_hook([&](const std::string& stage) {
    if (stage == "tensor" && !filled) disk.fill(), filled = true;
  });
  const std::string error = error_of([&] { training->save_checkpoint(path); });
  set_checkpoint_write_hook({});
  EXPECT_MENTIONS(error, path + ".tmp/state.safetensors: No space left on device after ");
  EXPECT_MENTIONS(error, " more are needed");
  EXPECT_TRUE(disk.others({"ckpt", "filler"}).empty());

  // Space freed, a new process resumes from the intact checkpoint.
  disk.unfill();
  auto resumed = make_training(ModelSource::random(run.config, 77), run.settings);
  EXPECT_EQ(resumed->load_checkpoint(path).step, 1);
  EXPECT_EQ(run.step(*resumed, 2), step2);
  EXPECT_NO_THROW(resumed->save_checkpoint(path));
  EXPECT_EQ(run.training()->load_checkpoint(path).step, 2);
}

TEST(FullDisk, ExportThatCannotFitIsRefusedBeforeWriting) {
  const TinyRun run;
  const ModelSource source = run.source();
  const auto fill = [&](size_t i, float* out) { source.fill(i, out); };
  HfExport hf;
  hf.dtype = DType::F32;
  GgufExport gguf;
  gguf.matrix_type = GgmlType::F32;
  const uint64_t hf_bytes = export_hf_bytes(source.config(), hf), gguf_bytes = export_gguf_bytes(source.config(), gguf);
  const SmallDisk disk(std::min(hf_bytes, gguf_bytes) / 2);
  MOUNT_OR_SKIP(disk);
  EXPECT_MENTIONS(error_of([&] { export_hf_model(disk.file("hf"), source.config(), fill, hf); }),
                  ": the export " + disk.file("hf") + " needs " + std::to_string(hf_bytes) + " bytes");
  EXPECT_MENTIONS(error_of([&] { export_gguf_model(disk.file("m.gguf"), source.config(), fill, gguf); }),
                  ": the export " + disk.file("m.gguf") + " needs " + std::to_string(gguf_bytes) + " bytes");
  EXPECT_TRUE(disk.others({}).empty());
}

TEST(FullDisk, DiskFillingDuringAnExportLeavesNothing) {
  const TinyRun run;
  const ModelSource source = run.source();
  HfExport hf;
  hf.dtype = DType::F32;
  hf.files = {{"tokenizer.json", "{}"}};
  GgufExport gguf;
  gguf.matrix_type = GgmlType::F32;
  const SmallDisk disk(4 * (export_hf_bytes(source.config(), hf) + export_gguf_bytes(source.config(), gguf)));
  MOUNT_OR_SKIP(disk);
  // Another program takes the space while the third tensor is written.
  const auto fill = [&](size_t i, float* out) {
    if (i == 3) disk.fill();
    source.fill(i, out);
  };
  const std::string hf_error = error_of([&] { export_hf_model(disk.file("hf"), source.config(), fill, hf); });
  EXPECT_MENTIONS(hf_error, "/model.safetensors: No space left on device after ");
  EXPECT_MENTIONS(hf_error, " more are needed");
  disk.unfill();
  const std::string gguf_error = error_of([&] { export_gguf_model(disk.file("m.gguf"), source.config(), fill, gguf); });
  EXPECT_MENTIONS(gguf_error, disk.file("m.gguf") + ": No space left on device after ");
  EXPECT_TRUE(disk.others({"filler"}).empty());
  // With the space back, the same export succeeds and reads back.
  disk.unfill();
  export_hf_model(disk.file("hf"), source.config(), [&](size_t i, float* out) { source.fill(i, out); }, hf);
  EXPECT_EQ(ModelSource::open(disk.file("hf")).config().hidden_size, 64);
}

// qft train checks before its first step that a checkpoint and the saved
// model fit, and refuses, creating nothing.
TEST(FullDisk, TrainRefusesBeforeTrainingWhenTheCheckpointAndModelCannotFit) {
  const TinyRun run;
  test::write_text(run.dir.file("tokens.txt"), "1 2 3 4 5 6 7 8\n9 10 11 12 13 14\n");
  const SmallDisk disk(64 << 10);
  MOUNT_OR_SKIP(disk);
  const auto result = test::run_command(std::string(QFT_BINARY) + " train --config " + run.config +
                                        " --init random --tokens " + run.dir.file("tokens.txt") +
                                        " --steps 2 --lr 1e-3 --json --checkpoint " + disk.file("ckpt") + " --out " +
                                        disk.file("model") + " 2>&1");
  EXPECT_EQ(result.exit_code, 1) << result.output;
  EXPECT_MENTIONS(result.output, "qft train: error: " + disk.path() + ": a checkpoint (");
  EXPECT_MENTIONS(result.output, " bytes) and the model (--out) (");
  EXPECT_EQ(result.output.find("\"step\""), std::string::npos) << "it trained first";
  EXPECT_EQ(disk.others({"ckpt.lock"}), std::vector<std::string>{});  // the lock file stays, empty, as after every run
}

TEST(FullDisk, FailedAppendLeavesNoHalfLine) {
  const SmallDisk disk(1 << 16);
  MOUNT_OR_SKIP(disk);
  const std::string path = disk.file("metrics.jsonl");
  AppendFile log(path);
  log.append("{\"step\": 1}\n");
  disk.fill(100);
  EXPECT_MENTIONS(error_of([&] { log.append(std::string(8192, 'y') + "\n"); }), path + ": append failed: No space left");
  EXPECT_EQ(test::read_text(path), "{\"step\": 1}\n");
}

TEST(AtomicFile, WritesOnlyWhatItPlannedAndLeavesNoTemporaryFile) {
  TempDir dir;
  const std::string path = dir.file("a.txt");
  {
    AtomicFileWriter writer(path, 5);
    writer.write("abc", 3);
    EXPECT_MENTIONS(error_of([&] { writer.commit(); }), path + ": wrote 3 bytes where 5 were planned");
  }
  EXPECT_FALSE(fs::exists(path));
  EXPECT_EQ(std::distance(fs::directory_iterator(dir.path()), fs::directory_iterator()), 0);
  write_file_atomically(path, "hello");
  EXPECT_EQ(test::read_text(path), "hello");
  EXPECT_MENTIONS(error_of([&] { write_file_atomically(dir.file("missing/b.txt"), "x"); }),
                  dir.file("missing/b.txt") + ": cannot create: No such file or directory");
}

}  // namespace
}  // namespace qft
