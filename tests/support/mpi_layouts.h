// What the multi-rank suites share: every process grid of the world, and values any rank can
// regenerate for any other rank, so each rank computes a reference on its own.
#pragma once

#include <cstdint>
#include <vector>

#include "parallel/topology.h"

namespace tls::testing {

// Every (tp, sp) whose product divides the world size, dp taking the rest. Built once, since
// splitting communicators is collective, and in the same order on every rank.
const std::vector<Topology>& every_layout();

// Reproducible values in [-1, 1) named by (what, who).
std::vector<double> regenerable_values(int64_t n, uint64_t what, uint64_t who);

}  // namespace tls::testing
