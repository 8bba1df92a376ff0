#include "test_util.h"

#include <gtest/gtest.h>

#include <fcntl.h>
#include <spawn.h>
#include <sys/mount.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstring>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <random>
#include <sstream>

#include "core/error.h"
#include "core/shape.h"
#include "io/atomic_file.h"
#include "io/safetensors.h"

extern char** environ;

namespace qft::test {

TempDir::TempDir() {
  std::random_device device;
  path_ = (std::filesystem::temp_directory_path() / ("qft-test-" + std::to_string(device()))).string();
  std::filesystem::create_directories(path_);
}

TempDir::~TempDir() { std::filesystem::remove_all(path_); }

SmallDisk::SmallDisk(uint64_t bytes) {
  const std::string options = "size=" + std::to_string(bytes);
  if (::mount("qft-test", dir_.path().c_str(), "tmpfs", 0, options.c_str()) == 0) {
    mounted_ = true;
  } else {
    why_ = std::strerror(errno);
  }
}

SmallDisk::~SmallDisk() {
  if (mounted_) ::umount2(dir_.path().c_str(), MNT_DETACH);
}

void SmallDisk::fill(uint64_t leave) const {
  const int fd = ::open(file("filler").c_str(), O_WRONLY | O_CREAT | O_APPEND, 0644);
  if (fd < 0) return;
  const std::vector<char> chunk(4096, 'x');
  while (free_bytes(path()) > leave + chunk.size()) {
    if (::write(fd, chunk.data(), chunk.size()) < 0) break;
  }
  ::close(fd);
}

void SmallDisk::unfill() const { std::filesystem::remove(file("filler")); }

std::vector<std::string> SmallDisk::others(const std::vector<std::string>& expected) const {
  std::vector<std::string> found;
  for (const auto& entry : std::filesystem::directory_iterator(path())) {
    const std::string name = entry.path().filename().string();
    if (std::find(expected.begin(), expected.end(), name) == expected.end()) found.push_back(name);
  }
  return found;
}

std::map<std::string, std::vector<float>> read_tensors(const std::string& path) {
  const SafetensorsFile file(path);
  std::map<std::string, std::vector<float>> tensors;
  for (const auto& [name, record] : file.tensors()) {
    std::vector<float> values(shape_numel(record.shape));
    convert_to_f32(values.data(), record);
    tensors.emplace(name, std::move(values));
  }
  return tensors;
}

double relative_error(const float* got, const float* want, size_t n) {
  double difference = 0.0, norm = 0.0;
  for (size_t i = 0; i < n; ++i) {
    difference += (static_cast<double>(got[i]) - want[i]) * (static_cast<double>(got[i]) - want[i]);
    norm += static_cast<double>(want[i]) * want[i];
  }
  return std::sqrt(difference) / std::max(std::sqrt(norm), 1e-30);
}

double relative_error(const std::vector<float>& got, const std::vector<float>& want) {
  if (got.size() != want.size()) return INFINITY;
  return relative_error(got.data(), want.data(), got.size());
}

CommandResult run_command(const std::string& command) {
  FILE* pipe = popen((command + " 2>&1").c_str(), "r");
  if (!pipe) return {-1, "popen failed"};
  std::string output;
  char chunk[4096];
  while (size_t read = fread(chunk, 1, sizeof chunk, pipe)) output.append(chunk, read);
  const int status = pclose(pipe);
  return {WIFEXITED(status) ? WEXITSTATUS(status) : -1, output};
}

std::string reference_case(const std::string& name) { return std::string(QFT_REFERENCE_DIR) + "/" + name; }

std::string read_text(const std::string& path) {
  std::ifstream file(path);
  std::stringstream text;
  text << file.rdbuf();
  return text.str();
}

void write_text(const std::string& path, const std::string& text) { std::ofstream(path) << text; }

std::string error_of(const std::function<void()>& action) {
  try {
    action();
  } catch (const Error& error) {
    return error.what();
  }
  return "";
}

pid_t spawn(const std::vector<std::string>& arguments, const std::vector<std::string>& extra_environment,
            const std::string& output) {
  std::vector<char*> argv, envp;
  for (const std::string& argument : arguments) argv.push_back(const_cast<char*>(argument.c_str()));
  argv.push_back(nullptr);
  std::vector<std::string> environment(extra_environment);
  for (char** entry = environ; *entry; ++entry) environment.push_back(*entry);
  for (const std::string& entry : environment) envp.push_back(const_cast<char*>(entry.c_str()));
  envp.push_back(nullptr);
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_addopen(&actions, STDOUT_FILENO, output.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
  posix_spawn_file_actions_adddup2(&actions, STDOUT_FILENO, STDERR_FILENO);
  pid_t pid = 0;
  const int result = posix_spawn(&pid, argv[0], &actions, nullptr, argv.data(), envp.data());
  posix_spawn_file_actions_destroy(&actions);
  return result == 0 ? pid : -1;
}

int wait_status(pid_t pid) {
  int status = 0;
  waitpid(pid, &status, 0);
  return status;
}

void expect_plan_equals_accounting(const MemoryPlan& plan) {
  const MemoryStats stats = memory_stats();
  const auto peak = [&](MemCategory category) { return stats.peak[static_cast<int>(category)]; };
  EXPECT_EQ(plan.weights + plan.adapters, peak(MemCategory::Weights));
  EXPECT_EQ(plan.grads, peak(MemCategory::Gradients));
  EXPECT_EQ(plan.momentum + plan.variances, peak(MemCategory::OptimizerState));
  EXPECT_EQ(plan.activations, peak(MemCategory::Activations));
  EXPECT_EQ(plan.workspace, peak(MemCategory::Workspace));
  EXPECT_EQ(plan.peak, stats.total_peak);
}

}  // namespace qft::test
