// AllocationOnlyOps (kernels/allocation_only_ops.h) stands in for the CPU backend when
// bench/longest_sequence_bench sizes memory: a training step through it must reach exactly the
// host tensor peak of the same step through CpuOps, plain and with activation checkpointing
// (pieces that divide the block and one that leaves a shorter last piece).
#include "kernels/allocation_only_ops.h"

#include <gtest/gtest.h>

#include <functional>
#include <tuple>

#include "layers/init.h"
#include "layers/model.h"
#include "training/optimizer.h"

namespace tls {
namespace {

ModelConfig config(int64_t tokens) {
  ModelConfig cfg;
  cfg.n_layer = 2;
  cfg.d_model = 32;
  cfg.n_head = 2;
  cfg.d_inner = 64;
  cfg.tokens_per_sample = tokens;
  cfg.mem_len = tokens;
  cfg.window_len = 16;
  cfg.chunk_size = 4;
  cfg.chunk_rank = 1;
  cfg.dropout = 0.1;
  return cfg;
}

// Host tensor bytes at the peak of two training steps (model, optimizer and steps together).
int64_t peak_of_two_steps(Ops& ops, const ModelConfig& cfg, bool checkpointing, int64_t piece) {
  reset_host_tensor_peak();
  const int64_t live_before = host_tensor_memory().live;
  {
    TransformerLSModel model(ops, cfg, DType::f32);
    initialize_parameters(ops, model, 1);
    AdamW adam(ops, model.parameters(), OptimizerSettings());
    ModelState state = model.initial_state(2);
    Tensor tokens = ops.zeros({2, cfg.tokens_per_sample}, DType::i32);
    PassContext ctx;
    ctx.training = true;
    ctx.dropout = cfg.dropout;
    ctx.activation_checkpointing = checkpointing;
    ctx.recompute_piece = piece;
    for (int64_t update = 1; update <= 2; ++update) {
      model.zero_grad();
      ModelSaved saved;
      model.forward(tokens, tokens, state, saved, ctx);
      model.backward(saved, 1.0, ctx);
      saved = ModelSaved();
      adam.step(update);
    }
  }
  EXPECT_EQ(host_tensor_memory().live, live_before) << "every tensor of the steps was freed";
  return host_tensor_memory().peak - live_before;
}

class AllocationOnlyPeak : public ::testing::TestWithParam<std::tuple<int64_t, bool, int64_t>> {};

TEST_P(AllocationOnlyPeak, EqualsTheCpuBackendsPeak) {
  const auto [tokens, checkpointing, piece] = GetParam();
  const ModelConfig cfg = config(tokens);
  auto cpu = make_cpu_ops();
  AllocationOnlyOps allocation_only;
  const int64_t real = peak_of_two_steps(*cpu, cfg, checkpointing, piece);
  const int64_t sized = peak_of_two_steps(allocation_only, cfg, checkpointing, piece);
  EXPECT_GT(real, 0);
  EXPECT_EQ(sized, real) << "T = " << tokens << (checkpointing ? ", checkpointed" : "");
}

INSTANTIATE_TEST_SUITE_P(Steps, AllocationOnlyPeak,
                         ::testing::Values(std::make_tuple(int64_t{64}, false, int64_t{0}),
                                           std::make_tuple(int64_t{256}, false, int64_t{0}),
                                           std::make_tuple(int64_t{256}, true, int64_t{64}),
                                           std::make_tuple(int64_t{256}, true, int64_t{96})));

// The kernels that allocate scratch of their own (kernels/cpu/kernel_scratch.h): one call each,
// its peak above what was live before, through both Ops. In a whole step these transients need
// not reach the step's peak at small sizes, so they are checked call by call.
int64_t peak_of_call(const std::function<void()>& call) {
  reset_host_tensor_peak();
  const int64_t live = host_tensor_memory().live;
  call();
  return host_tensor_memory().peak - live;
}

TEST(AllocationOnlyOps, KernelScratchMatchesTheCpuBackend) {
  AttentionShape s;
  s.batch = 1;
  s.tokens = 64;
  s.n_head = 2;
  s.d_head = 8;
  s.window = 16;
  s.chunk_size = 4;
  s.chunk_rank = 1;
  s.first_query_chunk = 16;
  const int64_t dl = s.n_head * s.d_head, n_slots = 32, n_pos = 40, rows = 300, cols = 24;
  auto cpu = make_cpu_ops();
  AllocationOnlyOps sizing;
  for (DType dt : {DType::f32, DType::f64}) {
    auto peaks = [&](Ops& ops) {
      auto t = [&](std::vector<int64_t> shape, DType d = DType::f32) {
        return ops.zeros(shape, d == DType::f32 ? dt : d);
      };
      Tensor q = t({1, s.tokens, dl}), keys = t({1, s.window + s.tokens, dl});
      Tensor values = t({1, s.window + s.tokens, dl}), rel = t({s.window, dl});
      Tensor rw = t({dl}), rr = t({dl}), out = t({1, s.tokens, dl}),
             lse = t({1, s.n_head, s.tokens});
      Tensor dq = t({1, s.tokens, dl}), dk = t({1, s.window + s.tokens, dl});
      Tensor dv = t({1, s.window + s.tokens, dl}), drel = t({s.window, dl}), drw = t({dl});
      Tensor drr = t({dl}), khat = t({1, n_slots, dl}), vhat = t({1, n_slots, dl});
      Tensor pos = t({n_pos, dl}), dkhat = t({1, n_slots, dl}), dvhat = t({1, n_slots, dl});
      Tensor dpos = t({n_pos, dl});
      Tensor x = t({rows, cols}), dx = t({rows, cols}), g = t({cols}), dg = t({cols});
      Tensor db = t({cols}), mean = t({rows}), rstd = t({rows});
      ops.fill(rstd, 1.0);
      std::vector<int64_t> p;
      p.push_back(peak_of_call(
          [&] { ops.window_attention_forward(out, lse, q, keys, values, rel, rw, rr, s); }));
      p.push_back(peak_of_call([&] {
        ops.window_attention_backward(dq, dk, dv, drel, drw, drr, out, lse, lse, q, keys, values,
                                      rel, rw, rr, s);
      }));
      p.push_back(
          peak_of_call([&] { ops.chunk_attention_forward(out, lse, q, khat, vhat, pos, s); }));
      p.push_back(peak_of_call([&] {
        ops.chunk_attention_backward(dq, dkhat, dvhat, dpos, out, lse, lse, q, khat, vhat, pos, s);
      }));
      p.push_back(peak_of_call([&] { ops.layernorm_backward(dx, dg, db, x, x, g, mean, rstd); }));
      return p;
    };
    const auto real = peaks(*cpu), sized = peaks(sizing);
    const char* names[] = {"window forward", "window backward", "chunk forward", "chunk backward",
                           "layernorm backward"};
    for (size_t k = 0; k < real.size(); ++k) {
      if (k < 4 || dt == DType::f32) {  // the float64 LayerNorm backward needs no scratch
        EXPECT_GT(real[k], 0) << names[k];
      }
      EXPECT_EQ(sized[k], real[k]) << names[k] << (dt == DType::f32 ? ", float32" : ", float64");
    }
  }
}

TEST(AllocationOnlyOps, ValuesReadBackAreZeroAndFinite) {
  AllocationOnlyOps ops;
  Tensor x = ops.zeros({3, 4}, DType::f32);
  EXPECT_EQ(ops.to_host(x), std::vector<double>(12, 0.0));
  EXPECT_EQ(ops.sum(x), 0.0);
  EXPECT_EQ(ops.sum_squares(x), 0.0);
  EXPECT_TRUE(ops.all_finite(x));
  EXPECT_EQ(ops.device(), Device::cpu);
}

}  // namespace
}  // namespace tls
