#pragma once
// The one way qft writes a file: every byte checked, the file synced, renamed
// into place, and the rename synced; a failure at any point removes the
// temporary file and names the path. A full disk also says how many more
// bytes the write needs.
#include <cstdint>
#include <functional>
#include <string>
#include <utility>
#include <vector>

namespace qft {

// Writes `path` through PATH.tmp.PID renamed into place by commit().
// `total_bytes` is what the file will hold (a full disk's error reports what
// is still missing); commit() checks that exactly that much was written.
class AtomicFileWriter {
 public:
  AtomicFileWriter(std::string path, uint64_t total_bytes);
  AtomicFileWriter(const AtomicFileWriter&) = delete;
  AtomicFileWriter& operator=(const AtomicFileWriter&) = delete;
  ~AtomicFileWriter();

  void write(const void* data, size_t bytes);
  void commit();

 private:
  // Removes the temporary file and throws, naming the path and errno's reason.
  [[noreturn]] void abandon(int error, const char* doing);

  std::string path_;
  std::string temporary_;
  int fd_ = -1;
  uint64_t total_bytes_ = 0;
  uint64_t written_ = 0;
};

void write_file_atomically(const std::string& path, const std::string& text);

// Writes DIR, which must not exist, as DIR.tmp.PID: write(temporary) fills it,
// then it is renamed into place and the rename synced. The free space is
// checked against `bytes` (what write() puts there, `what` naming it) first;
// on any failure the temporary directory is removed, so DIR appears whole or not at all.
void write_directory_atomically(const std::string& directory, uint64_t bytes, const std::string& what,
                                const std::function<void(const std::string& temporary)>& write);

// (file name, contents) of small files a directory is made of (configs, tokenizers).
using NamedFiles = std::vector<std::pair<std::string, std::string>>;

// Appends lines to a log (metrics.jsonl): each append is checked, and one that
// fails is cut off again, so the file never ends in half a line.
class AppendFile {
 public:
  explicit AppendFile(std::string path);
  AppendFile(const AppendFile&) = delete;
  AppendFile& operator=(const AppendFile&) = delete;
  ~AppendFile();
  void append(const std::string& text);

 private:
  std::string path_;
  int fd_ = -1;
};

// Makes a rename or a new entry in `directory` durable.
void sync_directory(const std::string& directory);

// Bytes an unprivileged writer may still use on the file system of `path`.
uint64_t free_bytes(const std::string& path);
// Refuses early, naming `directory`, `what` and the shortfall, when the file
// system holding `directory` has less than `bytes` free.
void require_free_space(const std::string& directory, uint64_t bytes, const std::string& what);
// The same for several writes to come; those on one file system add up.
// A directory that does not exist yet counts on its nearest existing parent's.
struct SpaceNeed {
  std::string directory;
  uint64_t bytes = 0;
  std::string what;
};
void require_free_space(const std::vector<SpaceNeed>& needs);

}  // namespace qft
