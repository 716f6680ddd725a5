// The longest block that trains within a memory budget: the peak host memory
// of a training step at length T is found by stepping through AllocationOnlyOps
// (kernels/allocation_only_ops.h), which allocates every tensor of a real step and computes
// nothing, so lengths whose real step would take hours are sized in seconds. T doubles while the
// step fits and is then bisected to a multiple of sp x 2048.
//
// A real step at --validate-tokens (default 8192 per rank) checks the method on this run: its
// peak tensors must equal the allocation-only peak at that T, and its resident memory beyond the
// tensors (code, MPI and OpenBLAS buffers, the heap's slack) is the per-rank overhead added to
// every probe. A probe fits when the sum over ranks of (peak tensors + overhead) is within the
// budget: --budget-mib, by default MemAvailable of /proc/meminfo at start.
// --tokens T sizes that one length instead of searching (per-token figures of several layouts at
// the same T).
//   [mpirun -n SP] bench/longest_sequence_bench [--sp SP] [--activation-checkpointing]
//       [--budget-mib N] [--validate-tokens T] [--tokens T] [--d-model 256] [--heads 4]
//       [--layers 2] [--window 256] [--chunk 16]
#include <mpi.h>
#include <sys/resource.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <memory>
#include <string>
#include <vector>

#include "bench/arguments.h"
#include "bench/model_flops.h"
#include "kernels/allocation_only_ops.h"
#include "kernels/cpu/blas_core.h"
#include "kernels/error.h"
#include "layers/init.h"
#include "parallel/mpi_comm.h"
#include "training/optimizer.h"

using namespace tls;

namespace {

constexpr double kMiB = 1024.0 * 1024.0;

double mem_available_mib() {
  std::ifstream in("/proc/meminfo");
  std::string key;
  double kib = 0;
  std::string unit;
  while (in >> key >> kib >> unit)
    if (key == "MemAvailable:") return kib / 1024.0;
  return 0;
}

double peak_rss_mib() {
  rusage u{};
  getrusage(RUSAGE_SELF, &u);
  return static_cast<double>(u.ru_maxrss) / 1024.0;
}

// Peak host tensor memory of this rank over two training steps at cfg's length, model and
// optimizer state included (peak), and of that the parameters, their gradients and the AdamW
// moments (fixed): these do not depend on T and are replicated over sp, so at a small share of
// tokens per rank they weigh on the per-token figure whatever the attention does.
struct StepMemory {
  double peak = 0, fixed = 0;  // MiB
};
StepMemory step_memory(Ops& ops, const ModelConfig& cfg, const Topology& topo, bool checkpointing) {
  reset_host_tensor_peak();
  const int64_t live_before = host_tensor_memory().live;
  StepMemory m;
  {
    TransformerLSModel model(ops, cfg, DType::f32, topo);
    initialize_parameters(ops, model, 1);
    AdamW adam(ops, model.parameters(), OptimizerSettings());
    m.fixed = static_cast<double>(host_tensor_memory().live - live_before) / kMiB;
    ModelState state = model.initial_state(1);
    Tensor tokens = ops.zeros({1, model.local_tokens()}, DType::i32);
    PassContext ctx;
    ctx.training = true;
    ctx.activation_checkpointing = checkpointing;
    for (int64_t update = 1; update <= 2; ++update) {
      model.zero_grad();
      ModelSaved saved;
      model.forward(tokens, tokens, state, saved, ctx);
      model.backward(saved, 1.0 / static_cast<double>(cfg.tokens_per_sample), ctx);
      saved = ModelSaved();
      adam.step(update);
    }
  }
  m.peak = static_cast<double>(host_tensor_memory().peak - live_before) / kMiB;
  return m;
}

}  // namespace

int main(int argc, char** argv) {
  tls::cpu::ensure_fitting_blas_core(argv);  // may re-execute: first
  mpi_initialize(&argc, &argv);
  int sp = 1;
  bool checkpointing = false;
  int64_t budget_mib = 0, validate_tokens = 0, only_tokens = 0;
  ModelConfig cfg = bench::long_sequence_config(2);
  bench::Arguments args("longest_sequence_bench", argc, argv);
  for (std::string a; args.next(a);) {
    if (args.model_shape(cfg)) continue;
    if (a == "--sp")
      sp = static_cast<int>(args.value());
    else if (a == "--activation-checkpointing")
      checkpointing = true;
    else if (a == "--budget-mib")
      budget_mib = args.value();
    else if (a == "--validate-tokens")
      validate_tokens = args.value();
    else if (a == "--tokens")
      only_tokens = args.value();
    else
      args.unknown();
  }
  const int64_t step = 2048 * static_cast<int64_t>(sp);  // T granularity
  if (validate_tokens == 0) validate_tokens = 4 * step;
  try {
    Topology topo = make_mpi_topology(1, sp);
    if (topo.layout.dp != 1) throw Error("run with as many ranks as --sp (dp must be 1)");
    auto at_length = [&](int64_t T) {
      ModelConfig c = cfg;
      c.tokens_per_sample = c.mem_len = T;
      c.validate();
      c.validate_layout(1, sp);
      return c;
    };
    // The budget: rank 0's view of the machine, shared.
    const double budget = topo.world->allreduce_max(
        topo.world_rank == 0 ? (budget_mib > 0 ? double(budget_mib) : mem_available_mib()) : 0.0);
    // Validation: a real step against the allocation-only one at the same length.
    const ModelConfig vcfg = at_length(validate_tokens);
    double real_peak = 0, rss = 0;
    {
      auto cpu = make_cpu_ops();
      real_peak = step_memory(*cpu, vcfg, topo, checkpointing).peak;
      rss = peak_rss_mib();
    }
    AllocationOnlyOps sizing;
    const double sized_peak = step_memory(sizing, vcfg, topo, checkpointing).peak;
    const double overhead = topo.world->allreduce_max(std::max(0.0, rss - real_peak));
    const double worst_mismatch = topo.world->allreduce_max(std::abs(sized_peak - real_peak));
    // rank_max: the largest rank's peak; beyond_fixed: the largest rank's peak less its fixed
    // state.
    double beyond_fixed = 0;
    auto probe = [&](int64_t T, double& rank_max) {
      const StepMemory m = step_memory(sizing, at_length(T), topo, checkpointing);
      rank_max = topo.world->allreduce_max(m.peak);
      beyond_fixed = topo.world->allreduce_max(m.peak - m.fixed);
      return topo.world->allreduce_sum(m.peak + overhead);
    };
    if (topo.world_rank == 0) {
      std::printf(
          "# longest_sequence_bench: d_model %lld, %lld heads, %lld layers, window %lld, "
          "chunk %lld, rank %lld, M = T, B = 1, float32, sp = %d%s\n",
          static_cast<long long>(cfg.d_model), static_cast<long long>(cfg.n_head),
          static_cast<long long>(cfg.n_layer), static_cast<long long>(cfg.window_len),
          static_cast<long long>(cfg.chunk_size), static_cast<long long>(cfg.chunk_rank), sp,
          checkpointing ? ", activation checkpointing" : "");
      std::printf(
          "# budget %.0f MiB (%s); per-rank overhead beyond tensors %.0f MiB (real step at "
          "T = %lld: peak RSS - peak tensors)\n",
          budget, budget_mib > 0 ? "--budget-mib" : "MemAvailable", overhead,
          static_cast<long long>(validate_tokens));
      std::printf(
          "# validation at T = %lld: real step peak tensors %.2f MiB, allocation-only "
          "%.2f MiB per rank (largest difference over ranks %.3f MiB)\n",
          static_cast<long long>(validate_tokens), real_peak, sized_peak, worst_mismatch);
      std::printf(
          "| T | peak tensors, largest rank (MiB) | KiB/token per rank | KiB/token beyond "
          "parameters, gradients, moments | all ranks + overhead (MiB) | fits |\n"
          "|---|---|---|---|---|---|\n");
    }
    auto report = [&](int64_t T, double rank_max, double total, bool fits) {
      if (topo.world_rank == 0)
        std::printf("| %lld | %.1f | %.2f | %.2f | %.1f | %s |\n", static_cast<long long>(T),
                    rank_max, rank_max * 1024.0 / (static_cast<double>(T) / sp),
                    beyond_fixed * 1024.0 / (static_cast<double>(T) / sp), total,
                    fits ? "yes" : "no");
      std::fflush(stdout);
    };
    if (only_tokens > 0) {
      double rank_max = 0;
      const double total = probe(only_tokens, rank_max);
      report(only_tokens, rank_max, total, total <= budget);
      return 0;
    }
    int64_t fits = 0, fails = 0;
    for (int64_t T = 4 * step; fails == 0; T *= 2) {
      double rank_max = 0;
      const double total = probe(T, rank_max);
      const bool ok = total <= budget;
      report(T, rank_max, total, ok);
      (ok ? fits : fails) = T;
    }
    while (fails - fits > step) {
      const int64_t T = (fits + fails) / 2 / step * step;
      double rank_max = 0;
      const double total = probe(T, rank_max);
      const bool ok = total <= budget;
      report(T, rank_max, total, ok);
      (ok ? fits : fails) = T;
    }
    if (topo.world_rank == 0)
      std::printf("# longest T within the budget: %lld (%s)\n", static_cast<long long>(fits),
                  fits > 0 ? "a multiple of sp x 2048" : "none: even the first probe does not fit");
  } catch (const std::exception& e) {
    std::fprintf(stderr, "longest_sequence_bench: %s\n", e.what());
    MPI_Abort(MPI_COMM_WORLD, 1);
  }
  return 0;
}
