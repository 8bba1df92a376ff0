#include "dist/world.h"

#include <mpi.h>

#include <algorithm>
#include <chrono>
#include <climits>
#include <cstdlib>
#include <cstring>

#include "core/error.h"

namespace qft::dist {
namespace {

int checked_int(int64_t value, const char* what) {
  if (value < 0 || value > INT_MAX) fail("a collective of ", value, " ", what, " exceeds MPI's int counts");
  return static_cast<int>(value);
}

std::vector<int> checked_ints(const std::vector<int64_t>& values, const char* what) {
  std::vector<int> ints;
  for (int64_t value : values) ints.push_back(checked_int(value, what));
  return ints;
}

// Whether this process was started by an MPI launcher (mpirun, srun).
bool launched_by_mpi() {
  for (const char* name : {"OMPI_COMM_WORLD_SIZE", "PMIX_RANK", "PMI_RANK"}) {
    if (std::getenv(name)) return true;
  }
  return false;
}

}  // namespace

struct Request::State {
  MPI_Request request = MPI_REQUEST_NULL;
  std::vector<int> counts, offsets;  // must outlive the operation
  TrafficStats* traffic = nullptr;
};

Request::Request() = default;
Request::Request(Request&& other) noexcept = default;
Request& Request::operator=(Request&& other) noexcept {
  if (this != &other) {
    wait();
    state_ = std::move(other.state_);
  }
  return *this;
}
Request::~Request() { wait(); }

bool Request::pending() const { return state_ && state_->request != MPI_REQUEST_NULL; }

void Request::wait() {
  if (!pending()) return;
  const auto start = std::chrono::steady_clock::now();
  MPI_Wait(&state_->request, MPI_STATUS_IGNORE);
  state_->traffic->wait_seconds += std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  state_.reset();
}

World& World::get() {
  static World world;
  return world;
}

World::World() {
  if (!launched_by_mpi()) return;
  int provided = 0;
  MPI_Init_thread(nullptr, nullptr, MPI_THREAD_FUNNELED, &provided);
  initialised_ = true;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank_);
  MPI_Comm_size(MPI_COMM_WORLD, &size_);
}

World::~World() {
  if (initialised_) MPI_Finalize();
}

double World::sum(double value) const {
  if (!distributed()) return value;
  double total = 0.0;
  MPI_Allreduce(&value, &total, 1, MPI_DOUBLE, MPI_SUM, MPI_COMM_WORLD);
  return total;
}

int64_t World::sum(int64_t value) const {
  if (!distributed()) return value;
  int64_t total = 0;
  MPI_Allreduce(&value, &total, 1, MPI_INT64_T, MPI_SUM, MPI_COMM_WORLD);
  return total;
}

bool World::any(bool value) const {
  if (!distributed()) return value;
  int mine = value ? 1 : 0, result = 0;
  MPI_Allreduce(&mine, &result, 1, MPI_INT, MPI_MAX, MPI_COMM_WORLD);
  return result != 0;
}

void World::sum(std::vector<std::vector<double>>& values) const {
  if (!distributed()) return;
  std::vector<double> flat;
  for (const auto& row : values) flat.insert(flat.end(), row.begin(), row.end());
  MPI_Allreduce(MPI_IN_PLACE, flat.data(), checked_int(static_cast<int64_t>(flat.size()), "values"), MPI_DOUBLE, MPI_SUM,
                MPI_COMM_WORLD);
  size_t next = 0;
  for (auto& row : values) {
    std::copy(flat.begin() + next, flat.begin() + next + row.size(), row.begin());
    next += row.size();
  }
}

int64_t World::max(int64_t value) const {
  if (!distributed()) return value;
  int64_t result = 0;
  MPI_Allreduce(&value, &result, 1, MPI_INT64_T, MPI_MAX, MPI_COMM_WORLD);
  return result;
}

void World::barrier() const {
  if (distributed()) MPI_Barrier(MPI_COMM_WORLD);
}

std::vector<std::string> World::all_strings(const std::string& mine) const {
  if (!distributed()) return {mine};
  const int length = checked_int(static_cast<int64_t>(mine.size()), "bytes");
  std::vector<int> lengths(size_), offsets(size_);
  MPI_Allgather(&length, 1, MPI_INT, lengths.data(), 1, MPI_INT, MPI_COMM_WORLD);
  int64_t total = 0;
  for (int r = 0; r < size_; ++r) {
    offsets[r] = checked_int(total, "bytes");
    total += lengths[r];
  }
  std::string all(static_cast<size_t>(total), '\0');
  MPI_Allgatherv(mine.data(), length, MPI_CHAR, all.data(), lengths.data(), offsets.data(), MPI_CHAR, MPI_COMM_WORLD);
  std::vector<std::string> strings;
  for (int r = 0; r < size_; ++r) strings.push_back(all.substr(offsets[r], lengths[r]));
  return strings;
}

Request World::reduce_scatter(const float* send, float* receive, const std::vector<int64_t>& counts) const {
  if (!distributed()) {
    std::memcpy(receive, send, static_cast<size_t>(counts.at(0)) * sizeof(float));
    return Request();
  }
  return start_sum(send, receive, counts);
}

Request World::reduce_scatter(float* buffer, const std::vector<int64_t>& counts) const {
  if (!distributed()) return Request();
  return start_sum(MPI_IN_PLACE, buffer, counts);
}

Request World::start_sum(const void* send, float* receive, const std::vector<int64_t>& counts) const {
  Request request;
  request.state_ = std::make_unique<Request::State>();
  request.state_->counts = checked_ints(counts, "floats");
  request.state_->traffic = &traffic_;
  int64_t total = 0;
  for (int64_t count : counts) total += count;
  traffic_.bytes_sent += static_cast<uint64_t>(total - counts[rank_]) * sizeof(float);
  MPI_Ireduce_scatter(send, receive, request.state_->counts.data(), MPI_FLOAT, MPI_SUM, MPI_COMM_WORLD,
                      &request.state_->request);
  return request;
}

Request World::all_gather(void* buffer, const std::vector<int64_t>& counts, const std::vector<int64_t>& offsets) const {
  Request request;
  if (!distributed()) return request;
  request.state_ = std::make_unique<Request::State>();
  request.state_->counts = checked_ints(counts, "bytes");
  request.state_->offsets = checked_ints(offsets, "bytes");
  request.state_->traffic = &traffic_;
  traffic_.bytes_sent += static_cast<uint64_t>(counts[rank_]) * (size_ - 1);
  MPI_Iallgatherv(MPI_IN_PLACE, 0, MPI_DATATYPE_NULL, buffer, request.state_->counts.data(),
                  request.state_->offsets.data(), MPI_BYTE, MPI_COMM_WORLD, &request.state_->request);
  return request;
}

Request World::all_gather(const void* mine, void* buffer, const std::vector<int64_t>& counts,
                          const std::vector<int64_t>& offsets) const {
  if (!distributed()) {
    std::memmove(static_cast<char*>(buffer) + offsets.at(0), mine, static_cast<size_t>(counts.at(0)));
    return Request();
  }
  std::memmove(static_cast<char*>(buffer) + offsets[rank_], mine, static_cast<size_t>(counts[rank_]));
  return all_gather(buffer, counts, offsets);
}

void World::abort(int code) const {
  if (initialised_) MPI_Abort(MPI_COMM_WORLD, code);
  std::_Exit(code);
}

}  // namespace qft::dist
