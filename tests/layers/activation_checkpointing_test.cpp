// Activation checkpointing runs each layer in sequence pieces: the forward keeps x, the cache,
// h2 and the compressed slots, and the backward recomputes one piece at a time (the feed-forward
// half from h2, the attention half from x with its window reaching into the previous piece),
// with the same dropout masks. Every row is the same arithmetic as the plain pass; only sums over
// pieces run in another order, so in float64 the loss and every gradient agree to rounding, in
// both layer orders and for pieces that divide the block or leave a shorter last one.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <random>
#include <tuple>

#include "kernels/error.h"
#include "layers/init.h"
#include "layers/model.h"

namespace tls {
namespace {

ModelConfig small_config(bool pre_ln) {
  ModelConfig cfg;
  cfg.pre_ln = pre_ln;
  cfg.n_layer = 3;
  cfg.d_model = 16;
  cfg.n_head = 2;
  cfg.d_inner = 24;
  cfg.tokens_per_sample = 32;
  cfg.mem_len = 32;
  cfg.window_len = 8;
  cfg.chunk_size = 4;
  cfg.chunk_rank = 2;
  cfg.dropout = 0.1;
  cfg.emb_dropout = 0.1;
  return cfg;
}

struct Result {
  double nll = 0;
  std::vector<std::vector<double>> grads;
};

// Two blocks (the second attends to a non-zero cache); the second block's loss and gradients.
Result train_two_blocks(Ops& ops, TransformerLSModel& model, const ModelConfig& cfg,
                        bool checkpointing, int64_t piece) {
  const int64_t B = 2, T = cfg.tokens_per_sample;
  std::mt19937 rng(1);
  std::vector<double> tok(static_cast<size_t>(B * T)), tgt(tok.size());
  for (size_t i = 0; i < tok.size(); ++i) tok[i] = rng() % 256, tgt[i] = rng() % 256;
  Tensor tokens = ops.empty({B, T}, DType::i32), targets = ops.empty({B, T}, DType::i32);
  ops.from_host(tokens, tok);
  ops.from_host(targets, tgt);
  PassContext ctx;
  ctx.training = true;
  ctx.dropout = cfg.dropout;
  ctx.emb_dropout = cfg.emb_dropout;
  ctx.seed = 7;
  ctx.activation_checkpointing = checkpointing;
  ctx.recompute_piece = piece;
  ModelState state = model.initial_state(B);
  ModelSaved saved;
  model.forward(tokens, targets, state, saved, ctx);
  model.zero_grad();
  Result r;
  r.nll = model.forward(tokens, targets, state, saved, ctx);
  model.backward(saved, 1.0 / static_cast<double>(B * T), ctx);
  for (Parameter* p : model.parameters()) r.grads.push_back(ops.to_host(p->grad));
  return r;
}

// (pre-LN, piece, cache length M)
class ActivationCheckpointing
    : public ::testing::TestWithParam<std::tuple<bool, int64_t, int64_t>> {};

TEST_P(ActivationCheckpointing, MatchesThePlainPassInFloat64) {
  const auto [pre_ln, piece, mem] = GetParam();
  ModelConfig cfg = small_config(pre_ln);
  cfg.mem_len = mem;
  auto ops = make_cpu_ops();
  TransformerLSModel model(*ops, cfg, DType::f64);
  initialize_parameters(*ops, model, 3);
  const Result plain = train_two_blocks(*ops, model, cfg, false, 0);
  const Result pieces = train_two_blocks(*ops, model, cfg, true, piece);
  EXPECT_NEAR(plain.nll, pieces.nll, 1e-12 * std::abs(plain.nll));
  ASSERT_EQ(plain.grads.size(), pieces.grads.size());
  // dconv_1's bias gets a gradient of zero up to rounding (the chunk softmax cancels a constant
  // per column), so each parameter's tolerance also has a floor from the largest gradient.
  double overall = 0;
  for (const auto& g : plain.grads)
    for (double v : g) overall = std::max(overall, std::abs(v));
  for (size_t i = 0; i < plain.grads.size(); ++i) {
    double scale = 0, worst = 0;
    for (size_t j = 0; j < plain.grads[i].size(); ++j) {
      scale = std::max(scale, std::abs(plain.grads[i][j]));
      worst = std::max(worst, std::abs(plain.grads[i][j] - pieces.grads[i][j]));
    }
    EXPECT_GT(scale, 0) << model.parameters()[i]->name << " has no gradient";
    EXPECT_LE(worst, 1e-12 * scale + 1e-15 * overall) << model.parameters()[i]->name;
  }
}

// Pieces of 8 divide the block of 32 (four pieces, each window reaching into the previous one);
// 12 leaves a last piece of 8; 0 is the automatic size (one piece here). The cache is as long
// as the block, shorter or longer.
INSTANTIATE_TEST_SUITE_P(
    LayerOrdersPiecesAndCaches, ActivationCheckpointing,
    ::testing::Combine(::testing::Values(true, false),
                       ::testing::Values(int64_t{8}, int64_t{12}, int64_t{0}),
                       ::testing::Values(int64_t{32}, int64_t{16}, int64_t{48})),
    [](const ::testing::TestParamInfo<std::tuple<bool, int64_t, int64_t>>& info) {
      return std::string(std::get<0>(info.param) ? "PreLN" : "PostLN") + "_piece" +
             std::to_string(std::get<1>(info.param)) + "_mem" +
             std::to_string(std::get<2>(info.param));
    });

TEST(ActivationCheckpointingPieces, APieceThatIsNotChunkAlignedOrShorterThanTheWindowIsRefused) {
  const ModelConfig cfg = small_config(true);
  auto ops = make_cpu_ops();
  TransformerLSModel model(*ops, cfg, DType::f64);
  initialize_parameters(*ops, model, 3);
  for (int64_t piece : {6, 4}) {  // 6: not a multiple of c = 4; 4: shorter than w = 8
    try {
      train_two_blocks(*ops, model, cfg, true, piece);
      ADD_FAILURE() << "piece " << piece << " was accepted";
    } catch (const Error& e) {
      EXPECT_NE(
          std::string(e.what()).find("multiple of the chunk size 4 and at least the window 8"),
          std::string::npos)
          << e.what();
    }
  }
}

// A background save holds the caches it saves by reference (checkpoint/checkpoint_writer.h):
// the forward must replace a layer's cache with a new tensor and nothing may write into one.
// Two blocks (forward and backward each), every cache length, plain and checkpointed, float32
// and bfloat16 storage of the activations (which converts saved tensors, the cache's own input
// among them when M = T).
TEST(CarriedCaches, AreNeverWrittenInPlace) {
  for (int64_t mem : {16, 32, 48}) {
    for (bool checkpointing : {false, true}) {
      for (DType storage : {DType::f32, DType::bf16}) {
        ModelConfig cfg = small_config(true);
        cfg.mem_len = mem;
        auto ops = make_cpu_ops();
        TransformerLSModel model(*ops, cfg, DType::f32);
        model.set_activation_storage(storage);
        initialize_parameters(*ops, model, 3);
        const int64_t B = 2, T = cfg.tokens_per_sample;
        std::vector<double> tok(static_cast<size_t>(B * T));
        for (size_t i = 0; i < tok.size(); ++i) tok[i] = static_cast<double>((i * 37) % 256);
        Tensor tokens = ops->empty({B, T}, DType::i32);
        ops->from_host(tokens, tok);
        PassContext ctx;
        ctx.training = true;
        ctx.dropout = cfg.dropout;
        ctx.emb_dropout = cfg.emb_dropout;
        ctx.activation_checkpointing = checkpointing;
        ModelState state = model.initial_state(B);
        std::vector<Tensor> held;              // every cache the state ever held
        std::vector<std::vector<double>> was;  // its values when it was replaced
        for (int block = 0; block < 2; ++block) {
          for (const Tensor& c : state.caches) {
            held.push_back(c);
            was.push_back(ops->to_host(c));
          }
          ModelSaved saved;
          ctx.step = static_cast<uint64_t>(block + 1);
          model.forward(tokens, tokens, state, saved, ctx);
          model.zero_grad();
          model.backward(saved, 1.0 / static_cast<double>(B * T), ctx);
          for (size_t l = 0; l < state.caches.size(); ++l)
            EXPECT_NE(state.caches[l].raw(), held[held.size() - state.caches.size() + l].raw())
                << "the forward wrote a cache in place";
        }
        for (size_t i = 0; i < held.size(); ++i)
          EXPECT_EQ(ops->to_host(held[i]), was[i])
              << "cache " << i << " changed after it was replaced: M " << mem
              << (checkpointing ? " checkpointed " : " plain ") << dtype_name(storage);
      }
    }
  }
}

}  // namespace
}  // namespace tls
