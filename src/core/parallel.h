#pragma once
// An OpenMP loop whose body may throw: the first exception is carried out of
// the parallel region and rethrown (an exception escaping a region aborts).
#include <cstdint>
#include <exception>

namespace qft {

template <class Body>
void parallel_for(int64_t count, Body&& body) {
  std::exception_ptr error;
#pragma omp parallel for schedule(static)
  for (int64_t i = 0; i < count; ++i) {
    try {
      body(i);
    } catch (...) {
#pragma omp critical(qft_parallel_for_error)
      if (!error) error = std::current_exception();
    }
  }
  if (error) std::rethrow_exception(error);
}

}  // namespace qft
