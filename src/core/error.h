#pragma once
// Library code throws qft::Error; only the CLI turns it into an exit code.
#include <sstream>
#include <stdexcept>
#include <string>

namespace qft {

struct Error : std::runtime_error {
  using std::runtime_error::runtime_error;
};

template <class... Parts>
[[noreturn]] void fail(const Parts&... parts) {
  std::ostringstream message;
  (message << ... << parts);
  throw Error(message.str());
}

}  // namespace qft
