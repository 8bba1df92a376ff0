#pragma once
// The ranks of a data-parallel run. Under mpirun or srun (Open MPI, any MPI
// launcher that sets the PMI/PMIx environment) the world is MPI's
// MPI_COMM_WORLD; started alone, qft is a world of one rank and never
// initialises MPI, so it runs exactly as a single-process program.
//
// Only the main thread calls in here (MPI_THREAD_FUNNELED). Non-blocking
// collectives return a Request that must be waited on before the buffers are
// touched again; a Request waits in its destructor.
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace qft::dist {

class Request {
 public:
  Request();
  Request(Request&& other) noexcept;
  Request& operator=(Request&& other) noexcept;
  ~Request();
  // Blocks until the operation completed; afterwards the request is empty.
  void wait();
  bool pending() const;

 private:
  friend class World;
  struct State;
  std::unique_ptr<State> state_;
};

// Bytes this rank handed to collectives, and the seconds it spent blocked in waits.
struct TrafficStats {
  uint64_t bytes_sent = 0;
  double wait_seconds = 0.0;
};

class World {
 public:
  // The process's world, set up on first use.
  static World& get();
  World(const World&) = delete;
  World& operator=(const World&) = delete;

  int rank() const { return rank_; }
  int size() const { return size_; }
  bool distributed() const { return size_ > 1; }
  bool is_root() const { return rank_ == 0; }

  // Sums over every rank (the same result on each).
  double sum(double value) const;
  int64_t sum(int64_t value) const;
  // True on every rank when it is true on any (false for none).
  bool any(bool value) const;
  int64_t max(int64_t value) const;
  // Element-wise sums of `values` (every rank the same sizes), in place; an
  // element that one rank set and the others left 0 comes out exactly.
  void sum(std::vector<std::vector<double>>& values) const;
  void barrier() const;
  // Every rank's string, on every rank, in rank order.
  std::vector<std::string> all_strings(const std::string& mine) const;

  // Sums `send` (sum of counts floats, every rank) over the ranks; this rank's
  // part — elements [offsets[rank], + counts[rank]) — arrives in `receive`.
  Request reduce_scatter(const float* send, float* receive, const std::vector<int64_t>& counts) const;
  // As above in place: this rank's part of the sum arrives at buffer's start.
  Request reduce_scatter(float* buffer, const std::vector<int64_t>& counts) const;
  // Every rank's part of `buffer` to every rank, in place: rank r's part is
  // bytes [offsets[r], offsets[r] + counts[r]).
  Request all_gather(void* buffer, const std::vector<int64_t>& counts, const std::vector<int64_t>& offsets) const;
  // As all_gather, rank r's part read from `mine` instead (counts[rank] bytes).
  Request all_gather(const void* mine, void* buffer, const std::vector<int64_t>& counts,
                     const std::vector<int64_t>& offsets) const;

  // Ends every rank of the job with `code` (an error on one rank cannot be
  // recovered by the others, who may be waiting in a collective).
  [[noreturn]] void abort(int code) const;

  const TrafficStats& traffic() const { return traffic_; }
  TrafficStats& traffic() { return traffic_; }

  ~World();

 private:
  World();
  // MPI_Ireduce_scatter (sum); `send` may be MPI_IN_PLACE.
  Request start_sum(const void* send, float* receive, const std::vector<int64_t>& counts) const;
  int rank_ = 0, size_ = 1;
  bool initialised_ = false;
  mutable TrafficStats traffic_;
};

inline World& world() { return World::get(); }

}  // namespace qft::dist
