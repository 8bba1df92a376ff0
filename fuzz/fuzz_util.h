#pragma once
// What every fuzz target shares. The parsers read files (they memory-map
// them), so each input is written to a file in a directory of this process
// first. A qft::Error is the expected answer to bad input; any other
// exception escaping a parser is a defect (the CLI would report an
// "internal error" instead of naming the file and what is wrong), so it
// aborts and libFuzzer keeps the input.
#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <filesystem>
#include <fstream>
#include <string>

#include "core/error.h"

namespace qft::fuzz {

// A directory of this process (under TMPDIR, default /dev/shm where it
// exists, so writes stay in memory), made once.
inline const std::string& scratch_directory() {
  static const std::string directory = [] {
    const char* base = std::getenv("TMPDIR");
    std::string root = base ? base : std::filesystem::exists("/dev/shm") ? "/dev/shm" : "/tmp";
    const std::string path = root + "/qft-fuzz-" + std::to_string(::getpid());
    std::filesystem::create_directories(path);
    return path;
  }();
  return directory;
}

inline std::string write_input(const std::string& name, const uint8_t* data, size_t size) {
  const std::string path = scratch_directory() + "/" + name;
  std::ofstream(path, std::ios::binary | std::ios::trunc).write(reinterpret_cast<const char*>(data), size);
  return path;
}

// Runs `parse`; qft::Error is fine, anything else aborts with its message.
template <class Parse>
void expect_only_qft_errors(Parse&& parse) {
  try {
    parse();
  } catch (const qft::Error&) {
  } catch (const std::exception& error) {
    std::fprintf(stderr, "fuzz: a parser let a non-qft exception escape: %s\n", error.what());
    std::abort();
  }
}

}  // namespace qft::fuzz
