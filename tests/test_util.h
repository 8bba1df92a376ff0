#pragma once
// Helpers shared by the tests.
#include <sys/types.h>

#include <cstdint>
#include <functional>
#include <map>
#include <string>
#include <vector>

#include "train/memory_plan.h"

namespace qft::test {

// A fresh directory under the system temp dir, removed by the destructor.
class TempDir {
 public:
  TempDir();
  ~TempDir();
  const std::string& path() const { return path_; }
  std::string file(const std::string& name) const { return path_ + "/" + name; }

 private:
  std::string path_;
};

// Every floating tensor of a safetensors file, as float32.
std::map<std::string, std::vector<float>> read_tensors(const std::string& path);

// ‖got − want‖ / ‖want‖ in double.
double relative_error(const float* got, const float* want, size_t n);
double relative_error(const std::vector<float>& got, const std::vector<float>& want);

struct CommandResult {
  int exit_code;
  std::string output;  // stdout and stderr together
};
CommandResult run_command(const std::string& command);

// Starts `arguments` (argv[0] a path) with extra environment entries, stdout
// and stderr into the file `output`; returns the pid, or -1.
pid_t spawn(const std::vector<std::string>& arguments, const std::vector<std::string>& extra_environment,
            const std::string& output);
int wait_status(pid_t pid);  // waitpid's status

// A tmpfs of `bytes` mounted on a fresh directory while the object lives
// (root only: mounted() says whether it worked, why() why not).
class SmallDisk {
 public:
  explicit SmallDisk(uint64_t bytes);
  ~SmallDisk();
  bool mounted() const { return mounted_; }
  const std::string& why() const { return why_; }
  std::string file(const std::string& name) const { return dir_.file(name); }
  const std::string& path() const { return dir_.path(); }
  // Takes every free byte but `leave` (about), as another program would.
  void fill(uint64_t leave = 0) const;
  void unfill() const;
  // Names on the disk other than `expected` (temporary files, half exports).
  std::vector<std::string> others(const std::vector<std::string>& expected) const;

 private:
  TempDir dir_;
  bool mounted_ = false;
  std::string why_;
};
#define MOUNT_OR_SKIP(disk)                                                                        \
  if (!(disk).mounted()) GTEST_SKIP() << "cannot mount a tmpfs here (" << (disk).why() << "); " \
                                      << "these tests need root, as CI has"

std::string reference_case(const std::string& name);  // QFT_REFERENCE_DIR/name
std::string read_text(const std::string& path);  // any bytes
// The message of the qft::Error that action throws, or "" when it throws none.
std::string error_of(const std::function<void()>& action);
// Every category of `plan` equals the accounting's peak since the last
// reset_memory_peaks(), to the byte (gtest expectations).
void expect_plan_equals_accounting(const MemoryPlan& plan);
void write_text(const std::string& path, const std::string& text);

}  // namespace qft::test
