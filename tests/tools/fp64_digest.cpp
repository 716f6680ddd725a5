// fp64_digest: a fingerprint of every float64 result the golden and layout suites compare, so a
// refactoring can show that it changed no bit. For each scenario (the golden files and the two
// random models, plain and activation-checkpointed) and each (tp, sp, dp) layout of this world
// that fits it (both sp layouts: contiguous, and zigzag where its half-slices fit), runs the
// per-block forward/backward and the AdamW steps in float64 and prints an FNV-1a digest of the bit
// patterns of the losses, this rank's gradients and its parameters after the updates. Run before
// and after a change and diff the outputs:
//   mpiexec -n 1 build/cpu/tests/fp64_digest; mpiexec -n 2 ...; mpiexec -n 4 ...
#include <mpi.h>

#include <cstdint>
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include "kernels/cpu/blas_core.h"
#include "parallel/mpi_comm.h"
#include "support/golden_case.h"
#include "support/parallel_model_case.h"

namespace {

struct Fnv {
  uint64_t h = 1469598103934665603ull;
  void add(double v) {
    uint64_t bits = 0;
    std::memcpy(&bits, &v, sizeof bits);
    for (int i = 0; i < 8; ++i) h = (h ^ ((bits >> (8 * i)) & 0xff)) * 1099511628211ull;
  }
  void add(const std::vector<double>& v) {
    for (double x : v) add(x);
  }
};

}  // namespace

int main(int argc, char** argv) {
  using namespace tls;
  using namespace tls::testing;
  cpu::ensure_fitting_blas_core(argv);
  mpi_initialize(&argc, &argv);
  int world = 0, rank = 0;
  MPI_Comm_size(MPI_COMM_WORLD, &world);
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  std::vector<Scenario> scenarios;
  for (const std::string& f : golden_files()) scenarios.push_back(golden_scenario(f));
  scenarios.push_back(random_scenario(true, 0.1));
  scenarios.push_back(random_scenario(false, 0.1));
  const size_t plain = scenarios.size();
  for (size_t i = 0; i < plain; ++i) {
    Scenario s = scenarios[i];
    s.checkpointing = true;
    s.name += "+ckpt";
    scenarios.push_back(s);
  }
  for (const Scenario& s : scenarios) {
    const auto weights = full_weights(s);
    for (int tp = 1; tp <= world; tp *= 2)
      for (int sp = 1; tp * sp <= world; sp *= 2) {
        if (world % (tp * sp) != 0) continue;
        const int dp = world / (tp * sp);
        if (!layout_fits(s.cfg, s.batch, tp, sp, dp)) continue;
        for (SpOrder order : {SpOrder::contiguous, SpOrder::zigzag}) {
          if (order == SpOrder::zigzag && !s.cfg.zigzag_fits(sp)) continue;
          Topology topo = make_mpi_topology(tp, sp);
          topo.layout.sp_order = order;
          const Run r = run(s, DType::f64, topo, weights, Device::cpu);
          Fnv h;
          h.add(r.losses);
          for (const auto& [name, per_block] : r.grads)
            for (const auto& g : per_block) h.add(g);
          for (const auto& [name, p] : r.params_after) h.add(p);
          for (int q = 0; q < world; ++q) {
            if (q == rank)
              std::printf("%s tp=%d sp=%d%s dp=%d rank=%d loss0=%.17g digest=%016llx\n",
                          s.name.c_str(), tp, sp, order == SpOrder::zigzag ? " zigzag" : "", dp,
                          rank, r.losses.empty() ? 0.0 : r.losses[0],
                          static_cast<unsigned long long>(h.h));
            std::fflush(stdout);
            MPI_Barrier(MPI_COMM_WORLD);
          }
        }
      }
  }
  MPI_Finalize();
  return 0;
}
