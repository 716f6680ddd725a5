// Whether the ranks of one node have the cores their threads need: the start-up check of
// placement_check.h, as a pure function of the ranks' CPU affinity masks and thread counts.
// Open MPI binds each rank to one core when it starts two ranks or fewer, so a rank with
// OMP_NUM_THREADS=2 silently runs both threads on one core; ranks left unbound share the node's
// CPUs, which is only fine while they together need no more threads than those CPUs.
#pragma once

#include <string>
#include <vector>

namespace tls {

struct RankPlacement {
  int rank = 0;           // world rank
  std::vector<int> cpus;  // the CPUs it may run on (sched_getaffinity)
  int threads = 1;        // the threads it will run (OpenMP)
};

// One line naming the node, its ranks and the fix when some rank has fewer CPUs than threads, or
// when ranks' masks overlap and the CPUs they cover are fewer than their threads together;
// empty when the placement is fine. `node_cpus` is the node's online CPU count (it decides
// whether a binding or fewer threads is the fix).
std::string placement_warning(const std::string& node, const std::vector<RankPlacement>& ranks,
                              int node_cpus);

// "0-3,6" for {0, 1, 2, 3, 6}.
std::string cpu_list(std::vector<int> cpus);

}  // namespace tls
