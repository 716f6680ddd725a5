// Sequence and tensor parallel scaling of one training step on a long block:
// step time, per-rank peak memory, and the bytes each rank sends per step next to what the
// design predicts (halo: 2 w d/tp per layer per direction, in K and V; chunks: the block's
// compressed vectors, T/c r d/tp per layer for K and V, gathered forward and scattered back).
// Every rank's compute time per step (the CPU time of all its threads outside communication
// calls) and the max/mean ratio over the ranks show how evenly the layout splits the work: with
// sp > 1 the same binary runs the contiguous and the zigzag sp layout (parallel/sequence_layout.h;
// zigzag where its half-slices fit) and prints both ratios side by side (--sp-layout X: one).
// Launch with mpirun; the layout comes from --tp/--sp, dp = world / (tp sp).
//   mpirun -n 4 bench/parallel_bench --sp 4 [--tp 1] [--tokens 16384] [--d-model 256] [--layers 4]
//                                    [--heads 4] [--window 256] [--chunk 16]
//                                    [--steps 1] [--activation-checkpointing] [--no-warmup]
//                                    [--no-exchange | --interleave]
//                                    [--sp-layout zigzag|contiguous]
// --interleave builds the model twice, with the real groups and with the --no-exchange stand-ins,
// and alternates their steps, so both see the same drift of a shared machine's speed.
#include <mpi.h>
#include <sys/resource.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <memory>
#include <string>
#include <vector>

#include "bench/arguments.h"
#include "bench/model_flops.h"
#include "kernels/cpu/blas_core.h"
#include "kernels/error.h"
#include "layers/init.h"
#include "parallel/mpi_comm.h"
#include "parallel/sequence_layout.h"
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

// CPU time of the whole process, every thread (OpenMP's included).
double process_cpu_seconds() {
  timespec t{};
  clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &t);
  return static_cast<double>(t.tv_sec) + 1e-9 * static_cast<double>(t.tv_nsec);
}

// The CPU time spent inside communication calls, which is not the rank's own work: Open MPI
// polls while it waits, so a rank waiting for a slower peer burns CPU time. Process CPU time
// minus this is the rank's compute, whatever else shares its cores (an oversubscribed rank is
// charged only while it runs).
double& comm_cpu_seconds() {
  static double seconds = 0;
  return seconds;
}
// The wall-clock time inside communication calls: what the step waits for its exchanges (and
// for its slowest peer), the part overlap did not hide.
double& comm_wall_seconds() {
  static double seconds = 0;
  return seconds;
}

class CommTimer {
 public:
  CommTimer() : start_(process_cpu_seconds()), wall_(std::chrono::steady_clock::now()) {}
  ~CommTimer() {
    comm_cpu_seconds() += process_cpu_seconds() - start_;
    comm_wall_seconds() +=
        std::chrono::duration<double>(std::chrono::steady_clock::now() - wall_).count();
  }
  CommTimer(const CommTimer&) = delete;
  CommTimer& operator=(const CommTimer&) = delete;

 private:
  double start_;
  std::chrono::steady_clock::time_point wall_;
};

// Forwards every call to the real Comm, timing it (and its requests' waits) as communication.
class TimedComm final : public Comm {
 public:
  explicit TimedComm(std::shared_ptr<Comm> inner) : inner_(std::move(inner)) {}
  int rank() const override { return inner_->rank(); }
  int size() const override { return inner_->size(); }
  std::string name() const override { return inner_->name(); }
  void allreduce_sum(Tensor& x) override {
    CommTimer t;
    inner_->allreduce_sum(x);
  }
  double allreduce_sum(double x) override {
    CommTimer t;
    return inner_->allreduce_sum(x);
  }
  double allreduce_max(double x) override {
    CommTimer t;
    return inner_->allreduce_max(x);
  }
  void allgather(Tensor& out, const Tensor& in) override {
    CommTimer t;
    inner_->allgather(out, in);
  }
  void reduce_scatter_sum(Tensor& out, const Tensor& in) override {
    CommTimer t;
    inner_->reduce_scatter_sum(out, in);
  }
  void broadcast(Tensor& x, int root) override {
    CommTimer t;
    inner_->broadcast(x, root);
  }
  void barrier() override {
    CommTimer t;
    inner_->barrier();
  }
  std::unique_ptr<Request> isend(const Tensor& x, int dest, int tag) override {
    CommTimer t;
    return wrap(inner_->isend(x, dest, tag));
  }
  std::unique_ptr<Request> irecv(Tensor& x, int source, int tag) override {
    CommTimer t;
    return wrap(inner_->irecv(x, source, tag));
  }
  void start_posted() override {
    CommTimer t;
    inner_->start_posted();
  }
  std::unique_ptr<Request> start_allgather(Tensor& out, const Tensor& in) override {
    CommTimer t;
    return wrap(inner_->start_allgather(out, in));
  }
  std::unique_ptr<Request> start_reduce_scatter_sum(Tensor& out, const Tensor& in) override {
    CommTimer t;
    return wrap(inner_->start_reduce_scatter_sum(out, in));
  }
  std::unique_ptr<Request> start_allreduce_sum(Tensor& x) override {
    CommTimer t;
    return wrap(inner_->start_allreduce_sum(x));
  }

 private:
  struct Timed final : Request {
    explicit Timed(std::unique_ptr<Request> r) : inner(std::move(r)) {}
    void wait() override {
      CommTimer t;
      inner->wait();
    }
    void progress() override {
      CommTimer t;
      inner->progress();
    }
    std::unique_ptr<Request> inner;
  };
  static std::unique_ptr<Request> wrap(std::unique_ptr<Request> r) {
    return std::make_unique<Timed>(std::move(r));
  }
  std::shared_ptr<Comm> inner_;
};

// The model and its optimizer on one set of groups.
struct Run {
  SpOrder order = SpOrder::contiguous;
  bool exchanges = true;
  TrafficCounters sent;  // summed over the measured steps
  Topology topo;
  std::unique_ptr<TransformerLSModel> model;
  std::unique_ptr<AdamW> adam;
  ModelState state;
  std::vector<double> seconds, compute, waits;  // per measured step
};

}  // namespace

int main(int argc, char** argv) {
  tls::cpu::ensure_fitting_blas_core(argv);  // may re-execute: first
  mpi_initialize(&argc, &argv);
  int tp = 1, sp = 1, steps = 1;
  bool checkpointing = false, no_exchange = false, interleave = false, warmup = true;
  std::string only_layout;
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
    else if (a == "--interleave")
      interleave = true;
    else if (a == "--no-warmup")
      warmup = false;
    else if (a == "--sp-layout")
      only_layout = args.text();
    else
      args.unknown();
  }
  cfg.mem_len = cfg.tokens_per_sample;
  try {
    cfg.validate();
    cfg.validate_layout(tp, sp);
    std::vector<SpOrder> orders;
    for (SpOrder o : {SpOrder::contiguous, SpOrder::zigzag})
      if ((only_layout.empty() && (o == SpOrder::contiguous || cfg.zigzag_fits(sp))) ||
          only_layout == sp_order_name(o))
        orders.push_back(o);
    if (orders.empty()) throw Error("--sp-layout " + only_layout + ": zigzag or contiguous");
    for (SpOrder o : orders) cfg.validate_layout(tp, sp, o);
    auto ops = make_cpu_ops();
    auto make_run = [&](bool stand_ins, SpOrder order) {
      auto r = std::make_unique<Run>();
      r->order = order;
      r->exchanges = !stand_ins;
      r->topo = make_mpi_topology(tp, sp);
      r->topo.layout.sp_order = order;
      if (stand_ins) {
        r->topo.sp = std::make_shared<NoExchangeComm>(*r->topo.sp);
        r->topo.dp_sp = std::make_shared<NoExchangeComm>(*r->topo.dp_sp);
      }
      for (auto* c : {&r->topo.tp, &r->topo.sp, &r->topo.dp, &r->topo.dp_sp})
        *c = std::make_shared<TimedComm>(*c);
      r->model = std::make_unique<TransformerLSModel>(*ops, cfg, DType::f32, r->topo);
      initialize_parameters(*ops, *r->model, 1);
      r->adam = std::make_unique<AdamW>(*ops, r->model->parameters(), OptimizerSettings());
      r->state = r->model->initial_state(1);
      return r;
    };
    std::vector<std::unique_ptr<Run>> runs;
    for (SpOrder o : orders) {
      if (interleave || !no_exchange) runs.push_back(make_run(false, o));
      if (interleave || no_exchange) runs.push_back(make_run(true, o));
    }
    const Topology& topo = runs.front()->topo;
    const int64_t T = runs.front()->model->local_tokens();
    std::vector<double> tok(static_cast<size_t>(T));
    for (int64_t i = 0; i < T; ++i)
      tok[static_cast<size_t>(i)] = static_cast<double>((i * 131 + topo.sp_rank * 7) % 256);
    Tensor tokens = ops->empty({1, T}, DType::i32);
    ops->from_host(tokens, tok);
    PassContext ctx;
    ctx.training = true;
    ctx.activation_checkpointing = checkpointing;
    auto step = [&](Run& r, int64_t u) {
      r.model->zero_grad();
      ModelSaved saved;
      r.model->forward(tokens, tokens, r.state, saved, ctx);
      backward_and_reduce_gradients(*r.model, saved,
                                    1.0 / static_cast<double>(cfg.tokens_per_sample), ctx);
      saved = ModelSaved();
      r.adam->step(u);
    };
    // Warm-up, and a full cache for the measured steps (the work is the same with an empty one).
    if (warmup)
      for (auto& r : runs) step(*r, 1);
    for (int s = 0; s < steps; ++s)
      for (size_t i = 0; i < runs.size(); ++i) {
        Run& r = *runs[i];
        topo.world->barrier();
        traffic() = TrafficCounters();
        const double cpu0 = process_cpu_seconds(), comm0 = comm_cpu_seconds(),
                     wall0 = comm_wall_seconds();
        const auto t0 = std::chrono::steady_clock::now();
        step(r, 2 + s);
        r.compute.push_back(process_cpu_seconds() - cpu0 - (comm_cpu_seconds() - comm0));
        r.waits.push_back(comm_wall_seconds() - wall0);
        topo.world->barrier();
        r.seconds.push_back(
            std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
        const TrafficCounters& t = traffic();
        r.sent.halo += t.halo;
        r.sent.chunks += t.chunks;
        r.sent.tensor += t.tensor;
        r.sent.gradients += t.gradients;
      }
    rusage u{};
    getrusage(RUSAGE_SELF, &u);
    const double rss = static_cast<double>(u.ru_maxrss) / (1024.0 * 1024.0);
    const double max_rss = topo.world->allreduce_max(rss);
    // One value per rank, in world rank order.
    auto every_rank = [&](double v) {
      Tensor mine = Tensor::empty({1}, DType::f64),
             every = Tensor::empty({topo.world->size()}, DType::f64);
      mine.data<double>()[0] = v;
      topo.world->allgather(every, mine);
      return std::vector<double>(every.data<double>(), every.data<double>() + every.numel());
    };
    const std::vector<double> rss_every = every_rank(rss);
    // Predictions per rank per step, float32 (docs/DESIGN.md section 3).
    const double dl = static_cast<double>(cfg.d_model) / tp, L = static_cast<double>(cfg.n_layer);
    const double halo_pred =
        sp > 1 ? 2 * 2 * cfg.window_len * dl * 4 * L : 0;  // K and V, forward + backward
    const double local_slots = static_cast<double>(cfg.mem_len + cfg.tokens_per_sample) / sp /
                               cfg.chunk_size * cfg.chunk_rank;
    const double chunk_pred =
        sp > 1 ? 2 * 2 * local_slots * dl * 4 * (sp - 1) * L : 0;  // K, V; gather + scatter
    std::vector<std::vector<double>> compute_every;
    for (auto& r : runs) {
      // The fastest step of each rank: the least disturbed by what else runs on the machine.
      compute_every.push_back(every_rank(*std::min_element(r->compute.begin(), r->compute.end())));
    }
    if (topo.world_rank == 0) {
      if (no_exchange && !interleave)
        std::printf("# --no-exchange: the sp groups move no data (same computation)\n");
      std::printf(
          "| T | tp | sp | dp | sp layout | exchanges | step (s), fastest | steps (s) | compute "
          "max/mean | peak RSS max rank (GiB) | halo MB sent (pred.) | chunks MB sent (pred.) | tp "
          "all-reduce MB | grad MB |\n");
      std::printf("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|\n");
      for (size_t i = 0; i < runs.size(); ++i) {
        const Run& r = *runs[i];
        std::string all;
        for (double v : r.seconds) {
          char buf[32];
          std::snprintf(buf, sizeof buf, "%s%.3f", all.empty() ? "" : " ", v);
          all += buf;
        }
        const std::vector<double>& c = compute_every[i];
        double mean = 0, most = 0;
        for (double v : c) mean += v / static_cast<double>(c.size()), most = std::max(most, v);
        const TrafficCounters& t = r.sent;
        char bytes[160];  // the stand-ins send nothing
        std::snprintf(bytes, sizeof bytes, "%.3f (%.3f) | %.3f (%.3f) | %.2f | %.2f",
                      t.halo / steps / 1e6, halo_pred / 1e6, t.chunks / steps / 1e6,
                      chunk_pred / 1e6, t.tensor / steps / 1e6, t.gradients / steps / 1e6);
        std::printf("| %lld | %d | %d | %d | %s | %s | %.3f | %s | %.3f | %.3f | %s |\n",
                    static_cast<long long>(cfg.tokens_per_sample), tp, sp, topo.layout.dp,
                    sp_order_name(r.order), r.exchanges ? "real" : "none",
                    *std::min_element(r.seconds.begin(), r.seconds.end()), all.c_str(), most / mean,
                    max_rss, r.exchanges ? bytes : "- | - | - | -");
      }
      auto fastest = [&](size_t i) {
        return *std::min_element(runs[i]->seconds.begin(), runs[i]->seconds.end());
      };
      if (interleave)
        for (size_t i = 0; i + 1 < runs.size(); i += 2)
          std::printf("# %s: exchanges cost %+.1f%% of the step (fastest real / none - 1)\n",
                      sp_order_name(runs[i]->order), 100 * (fastest(i) / fastest(i + 1) - 1));
      // The balance of the layouts side by side (their first run each).
      std::printf("# compute max/mean:");
      for (size_t i = 0; i < runs.size(); ++i) {
        if (i > 0 && runs[i]->order == runs[i - 1]->order) continue;
        const std::vector<double>& c = compute_every[i];
        double mean = 0, most = 0;
        for (double v : c) mean += v / static_cast<double>(c.size()), most = std::max(most, v);
        std::printf(" %s %.3f", sp_order_name(runs[i]->order), most / mean);
      }
      std::printf("\n");
      for (size_t i = 0; i < runs.size(); ++i) {
        std::printf("# %s %s: waits in communication calls per step, rank 0 (s, wall):",
                    sp_order_name(runs[i]->order), runs[i]->exchanges ? "real" : "none");
        for (double v : runs[i]->waits) std::printf(" %.4f", v);
        std::printf("\n");
      }
      for (size_t i = 0; i < runs.size(); ++i) {
        std::printf("# %s %s: compute per rank (s, CPU time outside communication, fastest step):",
                    sp_order_name(runs[i]->order), runs[i]->exchanges ? "real" : "none");
        for (double v : compute_every[i]) std::printf(" %.3f", v);
        std::printf("\n");
      }
      std::printf("# peak RSS per rank (GiB):");
      for (double v : rss_every) std::printf(" %.3f", v);
      std::printf("\n");
    }
  } catch (const std::exception& e) {
    std::fprintf(stderr, "parallel_bench: %s\n", e.what());
    MPI_Abort(MPI_COMM_WORLD, 1);
  }
  return 0;
}
