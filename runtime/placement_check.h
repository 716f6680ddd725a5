// The start-up check of every rank's CPU placement against its threads and its node's other
// ranks (runtime/placement.h decides; this gathers and prints).
#pragma once

namespace tls {

// Collective over MPI_COMM_WORLD: each node's ranks gather their affinity masks and `threads`
// (the compute threads each will run) on the node's first rank, which prints
// placement_warning's line to stderr if any.
void warn_about_placement(int threads);

}  // namespace tls
