// AllocationOnlyOps (kernels/allocation_only_ops.h) stands in for the CPU backend when
// bench/longest_sequence_bench sizes memory: a training step through it must reach exactly the
// host tensor peak of the same step through CpuOps, plain and with activation checkpointing
// (pieces that divide the block and one that leaves a shorter last piece).
#include <gtest/gtest.h>

#include <tuple>

#include "kernels/allocation_only_ops.h"
#include "layers/init.h"
#include "layers/model.h"
#include "runtime/optimizer.h"

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

class AllocationOnlyPeak
    : public ::testing::TestWithParam<std::tuple<int64_t, bool, int64_t>> {};

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
