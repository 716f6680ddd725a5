// Activation checkpointing recomputes each layer in the backward, one half at a time (the
// feed-forward half from the saved h2, then the attention half from the saved input and cache),
// with the same dropout keys, so the loss and every gradient are bitwise those of the plain
// pass, in both layer orders.
#include <gtest/gtest.h>

#include <random>

#include "layers/init.h"
#include "layers/model.h"

namespace tls {
namespace {

class ActivationCheckpointing : public ::testing::TestWithParam<bool> {};

TEST_P(ActivationCheckpointing, GradientsAreBitwiseTheSame) {
  ModelConfig cfg;
  cfg.pre_ln = GetParam();
  cfg.n_layer = 3;
  cfg.d_model = 16;
  cfg.n_head = 2;
  cfg.d_inner = 24;
  cfg.tokens_per_sample = 16;
  cfg.mem_len = 16;
  cfg.window_len = 8;
  cfg.chunk_size = 4;
  cfg.chunk_rank = 2;
  cfg.dropout = 0.1;
  cfg.emb_dropout = 0.1;
  auto ops = make_cpu_ops();
  TransformerLSModel model(*ops, cfg, DType::f32);
  initialize_parameters(*ops, model, 3);
  std::mt19937 rng(1);
  std::vector<double> tok(32), tgt(32);
  for (size_t i = 0; i < tok.size(); ++i) tok[i] = rng() % 256, tgt[i] = rng() % 256;
  Tensor tokens = ops->empty({2, 16}, DType::i32), targets = ops->empty({2, 16}, DType::i32);
  ops->from_host(tokens, tok);
  ops->from_host(targets, tgt);
  auto run = [&](bool checkpointing) {
    PassContext ctx;
    ctx.training = true;
    ctx.dropout = cfg.dropout;
    ctx.emb_dropout = cfg.emb_dropout;
    ctx.seed = 7;
    ctx.activation_checkpointing = checkpointing;
    ModelState state = model.initial_state(2);
    ModelSaved saved;
    model.forward(tokens, targets, state, saved, ctx);  // a non-zero cache for the second block
    model.zero_grad();
    const double nll = model.forward(tokens, targets, state, saved, ctx);
    model.backward(saved, 1.0 / 32, ctx);
    std::vector<std::vector<double>> grads;
    for (Parameter* p : model.parameters()) grads.push_back(ops->to_host(p->grad));
    return std::make_pair(nll, grads);
  };
  const auto plain = run(false), recomputed = run(true);
  EXPECT_EQ(plain.first, recomputed.first);
  ASSERT_EQ(plain.second.size(), recomputed.second.size());
  for (size_t i = 0; i < plain.second.size(); ++i)
    EXPECT_TRUE(plain.second[i] == recomputed.second[i]) << model.parameters()[i]->name;
}

INSTANTIATE_TEST_SUITE_P(LayerOrders, ActivationCheckpointing, ::testing::Values(true, false),
                         [](const ::testing::TestParamInfo<bool>& info) {
                           return info.param ? "PreLN" : "PostLN";
                         });

}  // namespace
}  // namespace tls
