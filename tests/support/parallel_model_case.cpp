#include "support/parallel_model_case.h"

#include <gtest/gtest.h>
#include <mpi.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <memory>
#include <random>

#include "kernels/device.h"
#include "kernels/error.h"
#include "layers/init.h"
#include "layers/model.h"
#include "parallel/device_topology.h"
#include "parallel/mpi_comm.h"
#include "runtime/run_setup.h"
#include "support/golden_case.h"
#include "support/gradcheck.h"
#include "training/gradient_reduction.h"
#include "training/optimizer.h"

namespace tls::testing {

Scenario golden_scenario(const std::string& file) {
  GoldenCase g(golden_path(file));
  Scenario s;
  s.name = file;
  s.cfg = g.config;
  s.batch = g.batch;
  s.n_blocks = g.n_blocks;
  s.tokens = g.tokens;
  s.golden = file;
  return s;
}

Scenario random_scenario(bool post_ln, double dropout) {
  Scenario s;
  s.name =
      std::string(post_ln ? "random post-LN" : "random pre-LN") + (dropout > 0 ? " dropout" : "");
  ModelConfig& c = s.cfg;
  c.n_layer = 2;
  c.d_model = 32;
  c.n_head = 4;
  c.d_inner = 48;
  c.tokens_per_sample = 32;
  c.mem_len = 32;
  c.window_len = 8;
  c.chunk_size = 4;
  c.chunk_rank = 2;
  c.pre_ln = !post_ln;
  c.use_gelu = !post_ln;
  c.use_bias = post_ln;
  c.clamp_len = post_ln ? 5 : -1;
  c.cpos_clamp_len = post_ln ? 6 : -1;
  c.dropout = dropout;
  c.emb_dropout = dropout;
  s.batch = 4;
  std::mt19937 rng(3);
  for (int64_t i = 0; i < s.batch * (s.n_blocks * c.tokens_per_sample + 1); ++i)
    s.tokens.push_back(static_cast<int32_t>(rng() % 256));
  return s;
}

std::pair<Tensor, Tensor> slice(Ops& ops, const Scenario& s, int64_t block, int64_t b0, int64_t nb,
                                const std::vector<Segment>& segments) {
  const int64_t T = s.cfg.tokens_per_sample, row = s.n_blocks * T + 1;
  std::vector<double> in, tg;
  int64_t nt = 0;
  for (const Segment& seg : segments) nt += seg.n;
  for (int64_t b = b0; b < b0 + nb; ++b)
    for (const Segment& seg : segments)
      for (int64_t t = seg.t0; t < seg.t0 + seg.n; ++t) {
        in.push_back(s.tokens[static_cast<size_t>(b * row + block * T + t)]);
        tg.push_back(s.tokens[static_cast<size_t>(b * row + block * T + t + 1)]);
      }
  Tensor a = ops.empty({nb, nt}, DType::i32), b = ops.empty({nb, nt}, DType::i32);
  ops.from_host(a, in);
  ops.from_host(b, tg);
  return {a, b};
}

namespace {

// The CUDA device of this rank, as `tls_dist --device cuda` picks it (runtime/run_setup.cpp):
// one GPU per rank of a node, device 0 where there is one device.
int rank_device_index() {
  const int count = cuda_device_count();
  if (count == 0) throw Error("--device cuda: " + cuda_unavailable_reason());
  return local_rank() % count;
}

}  // namespace

Run run(const Scenario& s, DType dtype, Topology topo,
        const std::map<std::string, std::vector<double>>& weights, Device device) {
  const int device_index = device == Device::cuda ? rank_device_index() : 0;
  auto ops = device == Device::cpu ? make_cpu_ops() : make_ops(device, device_index);
  // Unchanged for Device::cpu; NCCL for the multi-process groups for Device::cuda. Declared after
  // the backend, so the communicators go before it.
  const Topology grid = with_device_comms(std::move(topo), device, device_index);
  TransformerLSModel model(*ops, s.cfg, dtype, grid);
  for (Parameter* p : model.parameters())
    ops->from_host(p->value, shard_of(*p, weights.at(p->name)));
  const int64_t B = s.batch / grid.layout.dp, T = model.local_tokens();
  const int64_t b0 = grid.dp_rank * B;
  const std::vector<Segment> segments =
      SequenceLayout::of(grid.layout, s.cfg.tokens_per_sample).segments(grid.sp_rank);
  if (segments.size() * static_cast<size_t>(segments[0].n) != static_cast<size_t>(T))
    throw Error("test: the segments do not cover the rank's block slice");
  PassContext ctx;
  ctx.training = s.cfg.dropout > 0;
  ctx.dropout = s.cfg.dropout;
  ctx.emb_dropout = s.cfg.emb_dropout;
  ctx.seed = 5;
  ctx.activation_checkpointing = s.checkpointing;
  ctx.recompute_piece = s.recompute_piece;
  Run out;
  auto step = [&](int64_t block, ModelState& state) {
    auto [tokens, targets] = slice(*ops, s, block, b0, B, segments);
    model.zero_grad();
    ModelSaved saved;
    const double nll = grid.dp_sp->allreduce_sum(model.forward(tokens, targets, state, saved, ctx));
    const double count = grid.dp_sp->allreduce_sum(static_cast<double>(saved.n_targets));
    backward_and_reduce_gradients(model, saved, 1.0 / count, ctx);
    return nll / count;
  };
  ModelState state = model.initial_state(B);
  for (int64_t i = 0; i < s.n_blocks; ++i) {
    ctx.step = static_cast<uint64_t>(i);
    out.losses.push_back(step(i, state));
    for (Parameter* p : model.parameters()) out.grads[p->name].push_back(ops->to_host(p->grad));
  }
  OptimizerSettings opt;
  opt.lr = 1e-2;
  opt.weight_decay = 0.01;
  opt.clip_norm = 0.5;
  AdamW adam(*ops, model.parameters(), opt);
  state = model.initial_state(B);
  for (int64_t u = 1; u <= s.updates; ++u) {
    ctx.step = static_cast<uint64_t>(100 + u);
    out.losses.push_back(step((u - 1) % s.n_blocks, state));
    adam.clip(global_gradient_norm(*ops, grid, model.parameters()));
    adam.step(u);
  }
  for (Parameter* p : model.parameters()) out.params_after[p->name] = ops->to_host(p->value);
  return out;
}

std::map<std::string, std::vector<double>> full_weights(const Scenario& s) {
  auto ops = make_cpu_ops();
  TransformerLSModel model(*ops, s.cfg, DType::f64);
  if (s.golden.empty())
    initialize_parameters(*ops, model, 9);
  else
    GoldenCase(golden_path(s.golden)).load_weights(*ops, model);
  std::map<std::string, std::vector<double>> w;
  for (Parameter* p : model.parameters()) w[p->name] = ops->to_host(p->value);
  // Non-trivial norms and biases, so every path carries signal.
  std::mt19937_64 rng(1);
  std::normal_distribution<double> noise(0.0, 0.1);
  if (s.golden.empty())
    for (auto& [name, values] : w)
      for (double& v : values) v += noise(rng);
  return w;
}

bool layout_fits(const ModelConfig& cfg, int64_t batch, int tp, int sp, int dp) {
  try {
    cfg.validate_layout(tp, sp);
    validate_batch(batch, dp);
    return true;
  } catch (const Error&) {
    return false;
  }
}

void compare(const Scenario& s, DType dtype, double tol, Device device) {
  int world = 0;
  MPI_Comm_size(MPI_COMM_WORLD, &world);
  const auto weights = full_weights(s);
  const Run single = run(s, dtype, Topology::single(), weights, Device::cpu);
  // The CPU suite's lines and traces as they were; the backend named only when it is another.
  const std::string on = device == Device::cpu ? "" : " on cuda";
  struct L {
    int tp, sp;
    SpOrder order;
  };
  std::vector<L> layouts;
  for (int tp = 1; tp <= world; tp *= 2)
    for (int sp = 1; tp * sp <= world; sp *= 2)
      if (world % (tp * sp) == 0) {
        layouts.push_back({tp, sp, SpOrder::contiguous});
        if (s.cfg.zigzag_fits(sp)) layouts.push_back({tp, sp, SpOrder::zigzag});
      }
  int tested = 0;
  for (L l : layouts) {
    const int dp = world / (l.tp * l.sp);
    if (!layout_fits(s.cfg, s.batch, l.tp, l.sp, dp)) continue;
    const std::string order = l.order == SpOrder::zigzag ? " zigzag" : "";
    ++tested;
    int rank = 0;
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    if (rank == 0)
      std::printf("  %s %s: layout tp=%d sp=%d%s dp=%d%s\n", s.name.c_str(), dtype_name(dtype),
                  l.tp, l.sp, order.c_str(), dp, on.c_str());
    SCOPED_TRACE(s.name + " " + dtype_name(dtype) + " tp=" + std::to_string(l.tp) +
                 " sp=" + std::to_string(l.sp) + order + " dp=" + std::to_string(dp) + on);
    Topology topo = make_mpi_topology(l.tp, l.sp);
    topo.layout.sp_order = l.order;
    const Run par = run(s, dtype, topo, weights, device);
    ASSERT_EQ(par.losses.size(), single.losses.size());
    for (size_t i = 0; i < par.losses.size(); ++i)
      EXPECT_LE(std::abs(par.losses[i] - single.losses[i]) / std::abs(single.losses[i]), tol)
          << "loss " << i;
    // Gradients relative to the block's largest gradient; this rank's shard of the reference.
    auto ops = make_cpu_ops();
    TransformerLSModel shape_model(*ops, s.cfg, dtype, topo);
    for (int64_t blk = 0; blk < s.n_blocks; ++blk) {
      double scale = 0;
      for (auto& [name, g] : single.grads)
        for (double v : g[static_cast<size_t>(blk)]) scale = std::max(scale, std::abs(v));
      for (Parameter* p : shape_model.parameters()) {
        const std::vector<double> want =
            shard_of(*p, single.grads.at(p->name)[static_cast<size_t>(blk)]);
        const std::vector<double>& got = par.grads.at(p->name)[static_cast<size_t>(blk)];
        double err = 0;
        for (size_t k = 0; k < got.size(); ++k) err = std::max(err, std::abs(got[k] - want[k]));
        EXPECT_LE(err / scale, tol) << p->name << " block " << blk;
      }
    }
    // AdamW divides by sqrt(v): where a gradient is rounding noise its update is not, so
    // parameters are compared at a looser bound in float32, and dconv_1.bias (whose gradient
    // is exactly zero in exact arithmetic, docs/DESIGN.md 1.1) only in float64.
    const double param_tol = dtype == DType::f32 ? 10 * tol : tol;
    for (Parameter* p : shape_model.parameters()) {
      if (dtype == DType::f32 && p->name.find("dconv_1.bias") != std::string::npos) continue;
      EXPECT_LE(relative_error(par.params_after.at(p->name),
                               shard_of(*p, single.params_after.at(p->name))),
                param_tol)
          << p->name << " after " << s.updates << " AdamW steps";
    }
  }
  EXPECT_GT(tested, 0) << "no layout of this world fits " << s.name;
}

}  // namespace tls::testing
