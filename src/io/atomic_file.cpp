#include "io/atomic_file.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include <cerrno>
#include <algorithm>
#include <cstring>
#include <filesystem>
#include <utility>

#include "core/error.h"

namespace qft {
namespace {

std::string parent_directory(const std::string& path) {
  const std::filesystem::path parent = std::filesystem::path(path).parent_path();
  return parent.empty() ? "." : parent.string();
}

bool is_full_disk(int error) { return error == ENOSPC || error == EDQUOT; }

// Writes all of `bytes`, retrying short writes and interruptions; errno on failure.
int write_all(int fd, const void* data, size_t bytes) {
  const char* next = static_cast<const char*>(data);
  while (bytes > 0) {
    const ssize_t done = ::write(fd, next, bytes);
    if (done < 0) {
      if (errno == EINTR) continue;
      return errno;
    }
    next += done;
    bytes -= static_cast<size_t>(done);
  }
  return 0;
}

}  // namespace

AtomicFileWriter::AtomicFileWriter(std::string path, uint64_t total_bytes)
    : path_(std::move(path)), temporary_(path_ + ".tmp." + std::to_string(::getpid())), total_bytes_(total_bytes) {
  fd_ = ::open(temporary_.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd_ < 0) fail(path_, ": cannot create: ", std::strerror(errno));
}

AtomicFileWriter::~AtomicFileWriter() {
  if (fd_ >= 0) {
    ::close(fd_);
    ::unlink(temporary_.c_str());
  }
}

void AtomicFileWriter::abandon(int error, const char* doing) {
  if (fd_ >= 0) ::close(fd_);
  fd_ = -1;
  ::unlink(temporary_.c_str());
  if (!is_full_disk(error)) fail(path_, ": ", doing, " failed: ", std::strerror(error));
  const std::string directory = parent_directory(path_);
  const uint64_t free = free_bytes(directory);
  const uint64_t missing = total_bytes_ > free ? total_bytes_ - free : 0;
  fail(path_, ": ", std::strerror(error), " after ", written_, " of ", total_bytes_, " bytes; ", directory, " has ", free,
       " bytes free, ", missing > 0 ? std::to_string(missing) + " more are needed" : "which the write itself used up");
}

void AtomicFileWriter::write(const void* data, size_t bytes) {
  if (fd_ < 0) fail(path_, ": write after commit");
  if (const int error = write_all(fd_, data, bytes)) abandon(error, "write");
  written_ += bytes;
}

void AtomicFileWriter::commit() {
  if (fd_ < 0) fail(path_, ": committed twice");
  if (written_ != total_bytes_) fail(path_, ": wrote ", written_, " bytes where ", total_bytes_, " were planned");
  if (::fsync(fd_) != 0) abandon(errno, "sync");
  const int closed = ::close(fd_);
  fd_ = -1;
  if (closed != 0) abandon(errno, "close");
  if (std::rename(temporary_.c_str(), path_.c_str()) != 0) abandon(errno, "rename");
  sync_directory(parent_directory(path_));
}

void write_file_atomically(const std::string& path, const std::string& text) {
  AtomicFileWriter writer(path, text.size());
  writer.write(text.data(), text.size());
  writer.commit();
}

AppendFile::AppendFile(std::string path) : path_(std::move(path)) {
  fd_ = ::open(path_.c_str(), O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0644);
  if (fd_ < 0) fail(path_, ": cannot open to append: ", std::strerror(errno));
}

AppendFile::~AppendFile() {
  if (fd_ >= 0) ::close(fd_);
}

void AppendFile::append(const std::string& text) {
  const off_t end = ::lseek(fd_, 0, SEEK_END);
  if (const int error = write_all(fd_, text.data(), text.size())) {
    if (end >= 0) (void)!::ftruncate(fd_, end);
    fail(path_, ": append failed: ", std::strerror(error));
  }
}

void sync_directory(const std::string& directory) {
  const int fd = ::open(directory.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) fail(directory, ": cannot open to sync: ", std::strerror(errno));
  const int result = ::fsync(fd);
  const int error = errno;
  ::close(fd);
  // Some file systems cannot sync directories; their renames are what they are.
  if (result != 0 && error != EINVAL && error != EROFS) fail(directory, ": sync failed: ", std::strerror(error));
}

uint64_t free_bytes(const std::string& path) {
  struct statvfs info {};
  if (::statvfs(path.c_str(), &info) != 0) fail(path, ": cannot read the free space: ", std::strerror(errno));
  return static_cast<uint64_t>(info.f_bavail) * info.f_frsize;
}

// The directory itself or its nearest ancestor that exists.
std::string existing_ancestor(const std::string& directory) {
  std::filesystem::path path = std::filesystem::absolute(directory);
  while (!std::filesystem::exists(path) && path.has_parent_path() && path != path.parent_path()) path = path.parent_path();
  return path.string();
}

void require_free_space(const std::vector<SpaceNeed>& needs) {
  std::vector<SpaceNeed> by_device;  // the first need's directory names each file system
  std::vector<dev_t> devices;
  for (const SpaceNeed& need : needs) {
    const std::string existing = existing_ancestor(need.directory);
    struct stat info {};
    if (::stat(existing.c_str(), &info) != 0) fail(existing, ": cannot stat: ", std::strerror(errno));
    const size_t at = std::find(devices.begin(), devices.end(), info.st_dev) - devices.begin();
    if (at == devices.size()) {
      devices.push_back(info.st_dev);
      by_device.push_back({existing, 0, ""});
    }
    SpaceNeed& total = by_device[at];
    total.bytes += need.bytes;
    total.what += (total.what.empty() ? "" : " and ") + need.what + " (" + std::to_string(need.bytes) + " bytes)";
  }
  for (const SpaceNeed& total : by_device) require_free_space(total.directory, total.bytes, total.what);
}

void require_free_space(const std::string& directory, uint64_t bytes, const std::string& what) {
  const uint64_t free = free_bytes(directory);
  if (free < bytes) {
    fail(directory, ": ", what, " needs ", bytes, " bytes, the file system has ", free, " free; free ", bytes - free,
         " more bytes or choose another directory");
  }
}

void write_directory_atomically(const std::string& directory, uint64_t bytes, const std::string& what,
                                const std::function<void(const std::string& temporary)>& write) {
  namespace fs = std::filesystem;
  if (fs::exists(directory)) fail(directory, ": already exists");
  const fs::path temporary = directory + ".tmp." + std::to_string(::getpid());
  const fs::path parent = fs::absolute(temporary).parent_path();
  fs::create_directories(parent);
  require_free_space(parent.string(), bytes, what);
  fs::create_directories(temporary);
  try {
    write(temporary.string());
    fs::rename(temporary, directory);
    sync_directory(parent.string());
  } catch (const fs::filesystem_error& error) {
    fs::remove_all(temporary);
    fail(directory, ": cannot write: ", error.code().message());
  } catch (...) {
    fs::remove_all(temporary);
    throw;
  }
}

}  // namespace qft
