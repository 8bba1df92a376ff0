#include "io/run_lock.h"

#include <fcntl.h>
#include <sys/file.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <string>

#include "core/error.h"

namespace qft {

RunLock::RunLock(const std::string& lock_file, const std::string& what) {
  const std::filesystem::path parent = std::filesystem::path(lock_file).parent_path();
  std::error_code ignored;  // a missing parent that cannot be made fails at open, with its reason
  if (!parent.empty()) std::filesystem::create_directories(parent, ignored);
  fd_ = ::open(lock_file.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
  if (fd_ < 0) fail(lock_file, ": cannot create the lock file: ", std::strerror(errno));
  if (::flock(fd_, LOCK_EX | LOCK_NB) != 0) {
    const int error = errno;
    char holder[32] = {};
    const ssize_t got = ::pread(fd_, holder, sizeof holder - 1, 0);
    ::close(fd_);
    fd_ = -1;
    if (error != EWOULDBLOCK) fail(lock_file, ": cannot lock: ", std::strerror(error));
    const std::string pid = got > 0 ? std::string(holder, std::strcspn(holder, "\n")) : "unknown";
    fail(what, " is in use by another qft run (pid ", pid, "; lock ", lock_file, ")");
  }
  const std::string pid = std::to_string(::getpid()) + "\n";
  if (::ftruncate(fd_, 0) != 0 || ::pwrite(fd_, pid.data(), pid.size(), 0) != static_cast<ssize_t>(pid.size())) {
    const std::string reason = std::strerror(errno);
    ::close(fd_);
    fail(lock_file, ": cannot write the lock file: ", reason);
  }
}

RunLock::~RunLock() {
  if (fd_ >= 0) ::close(fd_);  // releases the lock; the file stays, harmless
}

std::string sibling_lock_file(const std::string& directory) {
  std::string path = directory;
  while (path.size() > 1 && path.back() == '/') path.pop_back();
  return path + ".lock";
}

}  // namespace qft
