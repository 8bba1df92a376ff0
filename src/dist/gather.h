#pragma once
// The all-gathers that make a sharded update's result whole again on every
// rank: each rank wrote its own rows (dist/partition.h's share of the rows),
// the others' arrive in place. Between outlier refreshes every replica's CSR
// structure is the same (it is chosen from identical values), so a rank's
// rows' outliers are one contiguous run of values on every rank.
#include <vector>

#include "dist/world.h"
#include "quant/hybrid.h"

namespace qft::dist {

// The INT8 codes, row ranges and outlier values of every rank's rows.
std::vector<Request> gather_rows(HybridMatrix& matrix);
// `count` values split into rank shares of `unit` values each (dist::shares).
Request gather_values(float* values, int64_t count, int64_t unit);

}  // namespace qft::dist
