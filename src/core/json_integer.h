#pragma once
// Integers read from JSON files. nlohmann's get<int>() converts a float or an
// out-of-range number with a plain cast, which is undefined behaviour for
// values like 1e30 (found by fuzzing tokenizer.json); every integer a file
// supplies goes through json_integer instead.
#include <cstdint>
#include <limits>
#include <optional>
#include <string>
#include <utility>

#include <nlohmann/json.hpp>

#include "core/error.h"

namespace qft {

// `value` as T when it is an integer within T's range (and [low, high]);
// throws qft::Error naming `what` otherwise.
template <class T>
T json_integer(const nlohmann::json& value, const std::string& what, T low = std::numeric_limits<T>::min(),
               T high = std::numeric_limits<T>::max()) {
  std::optional<T> number;
  if (value.is_number_unsigned()) {
    if (const uint64_t got = value.get<uint64_t>(); std::in_range<T>(got)) number = static_cast<T>(got);
  } else if (value.is_number_integer()) {
    if (const int64_t got = value.get<int64_t>(); std::in_range<T>(got)) number = static_cast<T>(got);
  }
  if (!number || *number < low || *number > high) {
    fail(what, " must be an integer in [", +low, ", ", +high, "], got ", value.dump());
  }
  return *number;
}

}  // namespace qft
