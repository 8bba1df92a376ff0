// A full disk during a checkpoint or an export: refused before writing when
// the plan does not fit, and when the disk fills up while writing, the error
// names the file and the bytes still needed, no temporary file is left, the
// previous checkpoint stays loadable and training resumes from it. Each test
// mounts a small tmpfs (root only; skipped with a message elsewhere).
#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/mount.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
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
using test::TempDir;

#define EXPECT_MENTIONS(text, part) EXPECT_NE((text).find(part), std::string::npos) << (text)

std::string error_of(const std::function<void()>& action) {
  try {
    action();
  } catch (const Error& error) {
    return error.what();
  }
  return "";
}

// A tmpfs of `bytes` mounted on a fresh directory for the test's lifetime.
class SmallDisk {
 public:
  explicit SmallDisk(uint64_t bytes) {
    const std::string options = "size=" + std::to_string(bytes);
    if (::mount("qft-test", dir_.path().c_str(), "tmpfs", 0, options.c_str()) == 0) {
      mounted_ = true;
    } else {
      why_ = std::strerror(errno);
    }
  }
  ~SmallDisk() {
    if (mounted_) ::umount2(dir_.path().c_str(), MNT_DETACH);
  }
  bool mounted() const { return mounted_; }
  const std::string& why() const { return why_; }
  std::string file(const std::string& name) const { return dir_.file(name); }
  const std::string& path() const { return dir_.path(); }

  // Takes every free byte but `leave`, as another program would.
  void fill(uint64_t leave = 0) const {
    const int fd = ::open(file("filler").c_str(), O_WRONLY | O_CREAT | O_APPEND, 0644);
    ASSERT_GE(fd, 0);
    const std::vector<char> chunk(4096, 'x');
    while (free_bytes(path()) > leave + chunk.size()) {
      if (::write(fd, chunk.data(), chunk.size()) < 0) break;
    }
    ::close(fd);
  }
  void unfill() const { fs::remove(file("filler")); }

  // Names left on the disk besides `expected` (temporary files, half exports).
  std::vector<std::string> others(const std::vector<std::string>& expected) const {
    std::vector<std::string> found;
    for (const auto& entry : fs::directory_iterator(path())) {
      const std::string name = entry.path().filename().string();
      if (std::find(expected.begin(), expected.end(), name) == expected.end()) found.push_back(name);
    }
    return found;
  }

 private:
  TempDir dir_;
  bool mounted_ = false;
  std::string why_;
};

#define MOUNT_OR_SKIP(disk)                                                                        \
  if (!(disk).mounted()) GTEST_SKIP() << "cannot mount a tmpfs here (" << (disk).why() << "); " \
                                      << "these tests need root, as CI has"

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
    settings.qft.seed = 5;
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
