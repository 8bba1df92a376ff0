#pragma once
// One run per output: an exclusive flock(2) on a lock file, held for the
// life of the object. The file records the holder's PID so a second run is
// refused by name; the kernel drops the lock when the holder exits or is
// killed, so a stale file never blocks.
#include <string>
#include <vector>

namespace qft {

class RunLock {
 public:
  // Locks `lock_file` (created, with its directory, if needed); throws
  // naming `what` and the holder's PID when another process holds it.
  RunLock(const std::string& lock_file, const std::string& what);
  ~RunLock();
  RunLock(const RunLock&) = delete;
  RunLock& operator=(const RunLock&) = delete;

 private:
  int fd_ = -1;
};

// The lock file of a directory that is replaced as a whole (a checkpoint:
// DIR.tmp renamed to DIR): a sibling "DIR.lock", which survives the rename.
std::string sibling_lock_file(const std::string& directory);

}  // namespace qft
