// Sequence and tensor parallel scaling of one training step on a long block:
// step time, per-rank peak memory, and the bytes each rank sends per step next to what the
// design predicts (halo: 2 w d/tp per layer per direction, in K and V; chunks: the block's
// compressed vectors, T/c r d/tp per layer for K and V, gathered forward and scattered back).
// Launch with mpirun; the layout comes from --tp/--sp, dp = world / (tp sp).
//   mpirun -n 4 bench/parallel_bench --sp 4 [--tp 1] [--tokens 16384] [--d-model 256] [--layers 4]
//                                    [--heads 4] [--window 256] [--chunk 16]
//                                    [--steps 1] [--activation-checkpointing] [--no-exchange]
#include <mpi.h>
#include <sys/resource.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "bench/arguments.h"
#include "bench/model_flops.h"
#include "kernels/cpu/blas_core.h"
#include "layers/init.h"
#include "parallel/mpi_comm.h"
#include "parallel/traffic.h"
#include "training/gradient_reduction.h"
#include "training/optimizer.h"

using namespace tls;

namespace {

// --no-exchange: stands in for the sp and dp x sp groups with the same rank and size but moves
// no data (gathers copy this rank's part into every slot, received halos are zeros), so every
// rank does exactly the same computation without communicating or waiting for its peers. The
// step time with the real groups minus this one is what the exchanges cost on top of compute
// (what overlap does not hide, plus waiting for the slowest slice).
class NoExchangeComm final : public Comm {
 public:
  explicit NoExchangeComm(const Comm& real) : rank_(real.rank()), size_(real.size()) {}
  int rank() const override { return rank_; }
  int size() const override { return size_; }
  std::string name() const override { return "no-exchange stand-in"; }
  void allreduce_sum(Tensor&) override {}
  double allreduce_sum(double x) override { return x; }
  double allreduce_max(double x) override { return x; }
  void allgather(Tensor& out, const Tensor& in) override {
    for (int r = 0; r < size_; ++r)
      std::memcpy(static_cast<char*>(out.raw()) + r * in.bytes(), in.raw(), in.bytes());
  }
  void reduce_scatter_sum(Tensor& out, const Tensor& in) override {
    std::memcpy(out.raw(), static_cast<const char*>(in.raw()) + rank_ * out.bytes(), out.bytes());
  }
  void broadcast(Tensor&, int) override {}
  void barrier() override {}
  std::unique_ptr<Request> isend(const Tensor&, int, int) override {
    return std::make_unique<Done>();
  }
  std::unique_ptr<Request> irecv(Tensor& x, int, int) override {
    std::memset(x.raw(), 0, x.bytes());
    return std::make_unique<Done>();
  }

 private:
  struct Done final : Request {
    void wait() override {}
  };
  int rank_, size_;
};

}  // namespace

int main(int argc, char** argv) {
  tls::cpu::ensure_fitting_blas_core(argv);  // may re-execute: first
  mpi_initialize(&argc, &argv);
  int tp = 1, sp = 1, steps = 1;
  bool checkpointing = false, no_exchange = false;
  ModelConfig cfg = bench::long_sequence_config(4);
  cfg.tokens_per_sample = 16384;
  bench::Arguments args("parallel_bench", argc, argv);
  for (std::string a; args.next(a);) {
    if (args.model_shape(cfg)) continue;
    if (a == "--tp")
      tp = static_cast<int>(args.value());
    else if (a == "--sp")
      sp = static_cast<int>(args.value());
    else if (a == "--tokens")
      cfg.tokens_per_sample = args.value();
    else if (a == "--steps")
      steps = static_cast<int>(args.value());
    else if (a == "--activation-checkpointing")
      checkpointing = true;
    else if (a == "--no-exchange")
      no_exchange = true;
    else
      args.unknown();
  }
  cfg.mem_len = cfg.tokens_per_sample;
  try {
    cfg.validate();
    cfg.validate_layout(tp, sp);
    Topology topo = make_mpi_topology(tp, sp);
    if (no_exchange) {
      topo.sp = std::make_shared<NoExchangeComm>(*topo.sp);
      topo.dp_sp = std::make_shared<NoExchangeComm>(*topo.dp_sp);
    }
    auto ops = make_cpu_ops();
    TransformerLSModel model(*ops, cfg, DType::f32, topo);
    initialize_parameters(*ops, model, 1);
    AdamW adam(*ops, model.parameters(), OptimizerSettings());
    const int64_t T = model.local_tokens();
    ModelState state = model.initial_state(1);
    std::vector<double> tok(static_cast<size_t>(T));
    for (int64_t i = 0; i < T; ++i)
      tok[static_cast<size_t>(i)] = static_cast<double>((i * 131 + topo.sp_rank * 7) % 256);
    Tensor tokens = ops->empty({1, T}, DType::i32);
    ops->from_host(tokens, tok);
    PassContext ctx;
    ctx.training = true;
    ctx.activation_checkpointing = checkpointing;
    auto step = [&](int64_t u) {
      model.zero_grad();
      ModelSaved saved;
      model.forward(tokens, tokens, state, saved, ctx);
      backward_and_reduce_gradients(model, saved, 1.0 / static_cast<double>(cfg.tokens_per_sample),
                                    ctx);
      saved = ModelSaved();
      adam.step(u);
    };
    step(1);  // warm-up, and a full cache for the measured steps
    topo.world->barrier();
    traffic() = TrafficCounters();
    const auto t0 = std::chrono::steady_clock::now();
    for (int s = 0; s < steps; ++s) step(2 + s);
    topo.world->barrier();
    const double seconds =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count() / steps;
    rusage u{};
    getrusage(RUSAGE_SELF, &u);
    const double rss = static_cast<double>(u.ru_maxrss) / (1024.0 * 1024.0);
    const double max_rss = topo.world->allreduce_max(rss);
    // Every rank's peak, in world rank order.
    Tensor mine = Tensor::empty({1}, DType::f64),
           every = Tensor::empty({topo.world->size()}, DType::f64);
    mine.data<double>()[0] = rss;
    topo.world->allgather(every, mine);
    const TrafficCounters& t = traffic();
    // Predictions per rank per step, float32 (docs/DESIGN.md section 3).
    const double dl = static_cast<double>(cfg.d_model) / tp, L = static_cast<double>(cfg.n_layer);
    const double halo_pred =
        sp > 1 ? 2 * 2 * cfg.window_len * dl * 4 * L : 0;  // K and V, forward + backward
    const double local_slots = static_cast<double>(cfg.mem_len + cfg.tokens_per_sample) / sp /
                               cfg.chunk_size * cfg.chunk_rank;
    const double chunk_pred =
        sp > 1 ? 2 * 2 * local_slots * dl * 4 * (sp - 1) * L : 0;  // K, V; gather + scatter
    if (topo.world_rank == 0) {
      if (no_exchange)
        std::printf("# --no-exchange: the sp groups move no data (same computation)\n");
      std::printf(
          "| T | tp | sp | dp | step (s) | peak RSS max rank (GiB) | halo MB sent (pred.) | chunks "
          "MB sent (pred.) | tp all-reduce MB | grad MB |\n");
      std::printf("|---|---|---|---|---|---|---|---|---|---|\n");
      std::printf(
          "| %lld | %d | %d | %d | %.2f | %.3f | %.3f (%.3f) | %.3f (%.3f) | %.2f | %.2f |\n",
          static_cast<long long>(cfg.tokens_per_sample), tp, sp, topo.layout.dp, seconds, max_rss,
          t.halo / steps / 1e6, halo_pred / 1e6, t.chunks / steps / 1e6, chunk_pred / 1e6,
          t.tensor / steps / 1e6, t.gradients / steps / 1e6);
      std::printf("# peak RSS per rank (GiB):");
      for (int r = 0; r < topo.world->size(); ++r) std::printf(" %.3f", every.data<double>()[r]);
      std::printf("\n");
    }
  } catch (const std::exception& e) {
    std::fprintf(stderr, "parallel_bench: %s\n", e.what());
    MPI_Abort(MPI_COMM_WORLD, 1);
  }
  return 0;
}
