#pragma once
// Helpers shared by the tests.
#include <sys/types.h>

#include <map>
#include <string>
#include <vector>

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

std::string reference_case(const std::string& name);  // QFT_REFERENCE_DIR/name
std::string read_text(const std::string& path);
void write_text(const std::string& path, const std::string& text);

}  // namespace qft::test
