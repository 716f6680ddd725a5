#include "support/mpi_layouts.h"

#include <mpi.h>

#include <random>

#include "parallel/mpi_comm.h"

namespace tls::testing {

const std::vector<Topology>& every_layout() {
  static const std::vector<Topology> all = [] {
    int world = 0;
    MPI_Comm_size(MPI_COMM_WORLD, &world);
    std::vector<Topology> v;
    for (int tp = 1; tp <= world; ++tp)
      for (int sp = 1; tp * sp <= world; ++sp)
        if (world % (tp * sp) == 0) v.push_back(make_mpi_topology(tp, sp));
    return v;
  }();
  return all;
}

std::vector<double> regenerable_values(int64_t n, uint64_t what, uint64_t who) {
  std::mt19937_64 gen(what * 1000003u + who);
  std::uniform_real_distribution<double> uniform(-1.0, 1.0);
  std::vector<double> v(static_cast<size_t>(n));
  for (double& x : v) x = uniform(gen);
  return v;
}

}  // namespace tls::testing
