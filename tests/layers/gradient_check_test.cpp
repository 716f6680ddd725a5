// Finite-difference gradient checks, in float64, of each layer on its own: the long-short
// attention, the feed-forward block, LayerNorm, the transformer layer (pre- and post-LN, with
// dropout on) and the whole model. The shapes exercise the edge cases of docs/DESIGN.md 1.1: a
// single chunk, T = w, T < w, M > T, r > 1, clamp_len and cpos_clamp_len.
#include <gtest/gtest.h>

#include <cmath>

#include "layers/model.h"
#include "support/gradcheck.h"

namespace tls::testing {
namespace {

constexpr double kTolerance = 1e-6;

ModelConfig small_config(int64_t T, int64_t M, int64_t w, int64_t c, int64_t r) {
  ModelConfig cfg;
  cfg.vocab_size = 11;
  cfg.n_layer = 2;
  cfg.d_model = 8;
  cfg.n_head = 2;
  cfg.d_inner = 12;
  cfg.tokens_per_sample = T;
  cfg.mem_len = M;
  cfg.window_len = w;
  cfg.chunk_size = c;
  cfg.chunk_rank = r;
  return cfg;
}

void randomize(std::vector<Parameter*> params, std::mt19937_64& rng) {
  for (Parameter* p : params) {
    const bool is_norm_weight =
        p->name.find("norm") != std::string::npos || p->name.find("dual_ln") != std::string::npos;
    const bool is_weight = p->name.size() > 7 && p->name.substr(p->name.size() - 7) == ".weight";
    fill_normal(p->value, rng, is_norm_weight && is_weight ? 1.0 : 0.0, is_norm_weight ? 0.2 : 0.5);
  }
}

struct AttentionCase {
  const char* name;
  ModelConfig cfg;
};
void PrintTo(const AttentionCase& c, std::ostream* os) { *os << c.name; }

std::vector<AttentionCase> attention_cases() {
  std::vector<AttentionCase> cases;
  cases.push_back({"basic", small_config(8, 8, 4, 4, 1)});
  cases.push_back({"single_chunk_T_equals_w", small_config(4, 4, 4, 4, 1)});
  cases.push_back({"T_less_than_w", small_config(4, 8, 8, 4, 2)});
  cases.push_back({"M_greater_than_T_rank3", small_config(4, 12, 4, 2, 3)});
  ModelConfig clamp = small_config(16, 8, 8, 4, 2);
  clamp.clamp_len = 2;
  clamp.cpos_clamp_len = 3;
  cases.push_back({"clamped", clamp});
  ModelConfig bias = small_config(8, 8, 4, 4, 2);
  bias.use_bias = true;
  cases.push_back({"with_bias", bias});
  return cases;
}

class AttentionGradient : public ::testing::TestWithParam<AttentionCase> {};

TEST_P(AttentionGradient, MatchesFiniteDifferences) {
  const ModelConfig cfg = GetParam().cfg;
  cfg.validate();
  auto ops = make_cpu_ops();
  std::mt19937_64 rng(7);
  const int64_t B = 2, T = cfg.tokens_per_sample, M = cfg.mem_len, d = cfg.d_model;
  const Topology single = Topology::single();
  LSAttention attn;
  ParameterList declared;
  attn.init(*ops, declared, "attn", cfg, DType::f64, single, 0);
  std::vector<Parameter*> params = {&attn.r_w_bias, &attn.r_r_bias};
  for (Linear* l : {&attn.proj_query, &attn.proj_key, &attn.proj_val, &attn.proj_out, &attn.r_net,
                    &attn.r_net_chunk, &attn.dconv_1}) {
    params.push_back(&l->weight);
    if (l->bias.defined()) params.push_back(&l->bias);
  }
  for (LayerNorm* n : {&attn.dual_ln_win, &attn.dual_ln_dproj}) {
    params.push_back(&n->weight);
    params.push_back(&n->bias);
  }
  ASSERT_EQ(params.size(), declared.size());
  randomize(params, rng);

  // Position tables as the model builds them.
  TransformerLSModel helper(*ops, cfg, DType::f64);
  ModelState state = helper.initial_state(B);
  PositionTables pos;
  pos.window = ops->empty({cfg.window_len, d}, DType::f64);
  std::vector<double> deltas;
  for (int64_t i = 0; i < cfg.window_len; ++i)
    deltas.push_back(static_cast<double>(cfg.clamp_len > 0 ? std::min(i, cfg.clamp_len) : i));
  ops->sinusoid_forward(pos.window, deltas);
  int64_t n_pos = (T + M) / cfg.chunk_size * cfg.chunk_rank;
  if (cfg.cpos_clamp_len > 0) n_pos = std::min(n_pos, cfg.cpos_clamp_len + 1);
  pos.chunk_ids = n_pos;

  Tensor h = ops->empty({B, T, d}, DType::f64), cache = ops->empty({B, M, d}, DType::f64);
  Tensor probe = ops->empty({B, T, d}, DType::f64);
  fill_normal(h, rng);
  fill_normal(cache, rng);
  fill_normal(probe, rng);
  auto loss = [&] {
    Tensor out;
    LSAttentionSaved saved;
    attn.forward(*ops, h, cache, pos, out, saved);
    return dot(out, probe);
  };
  Tensor out;
  LSAttentionSaved saved;
  attn.forward(*ops, h, cache, pos, out, saved);
  Tensor dh = ops->zeros(h.shape(), DType::f64), dcache = ops->zeros(cache.shape(), DType::f64);
  attn.backward(*ops, probe, h, cache, pos, saved, dh, dcache);

  EXPECT_LE(max_gradient_error(h, dh, loss, rng), kTolerance) << "d/dh";
  EXPECT_LE(max_gradient_error(cache, dcache, loss, rng), kTolerance) << "d/dcache";
  for (Parameter* p : params)
    EXPECT_LE(max_gradient_error(p->value, p->grad, loss, rng), kTolerance) << p->name;
}

INSTANTIATE_TEST_SUITE_P(Shapes, AttentionGradient, ::testing::ValuesIn(attention_cases()),
                         [](const auto& info) { return std::string(info.param.name); });

TEST(FeedForwardGradient, GeluAndReluMatchFiniteDifferences) {
  for (bool gelu : {true, false}) {
    auto ops = make_cpu_ops();
    std::mt19937_64 rng(3);
    const Topology single = Topology::single();
    FeedForward ff;
    ParameterList declared;
    ff.init(*ops, declared, "ff", 6, 10, gelu, DType::f64, single);
    randomize({&ff.fc1.weight, &ff.fc1.bias, &ff.fc2.weight, &ff.fc2.bias}, rng);
    Tensor h = ops->empty({2, 5, 6}, DType::f64), probe = ops->empty({2, 5, 6}, DType::f64);
    fill_normal(h, rng);
    fill_normal(probe, rng);
    PassContext ctx;
    ctx.training = true;
    ctx.dropout = 0.3;
    ctx.seed = 11;
    auto loss = [&] {
      Tensor out;
      FeedForwardSaved saved;
      ff.forward(*ops, h, out, saved, ctx, 100);
      return dot(out, probe);
    };
    Tensor out;
    FeedForwardSaved saved;
    ff.forward(*ops, h, out, saved, ctx, 100);
    Tensor dh = ops->zeros(h.shape(), DType::f64);
    ff.backward(*ops, probe, h, saved, dh, ctx, 100);
    EXPECT_LE(max_gradient_error(h, dh, loss, rng), kTolerance) << "gelu " << gelu;
    for (Parameter* p : {&ff.fc1.weight, &ff.fc1.bias, &ff.fc2.weight, &ff.fc2.bias})
      EXPECT_LE(max_gradient_error(p->value, p->grad, loss, rng), kTolerance) << p->name;
  }
}

TEST(LayerNormGradient, MatchesFiniteDifferences) {
  auto ops = make_cpu_ops();
  std::mt19937_64 rng(5);
  LayerNorm ln;
  ParameterList declared;
  ln.init(*ops, declared, "ln", 7, DType::f64);
  randomize({&ln.weight, &ln.bias}, rng);
  Tensor x = ops->empty({3, 7}, DType::f64), probe = ops->empty({3, 7}, DType::f64);
  fill_normal(x, rng);
  fill_normal(probe, rng);
  auto loss = [&] {
    Tensor y;
    LayerNormSaved s;
    ln.forward(*ops, x, y, s);
    return dot(y, probe);
  };
  Tensor y;
  LayerNormSaved s;
  ln.forward(*ops, x, y, s);
  Tensor dx = ops->zeros(x.shape(), DType::f64);
  ln.backward(*ops, probe, x, s, dx);
  EXPECT_LE(max_gradient_error(x, dx, loss, rng), kTolerance);
  EXPECT_LE(max_gradient_error(ln.weight.value, ln.weight.grad, loss, rng), kTolerance);
  EXPECT_LE(max_gradient_error(ln.bias.value, ln.bias.grad, loss, rng), kTolerance);
}

class LayerGradient : public ::testing::TestWithParam<bool> {};

TEST_P(LayerGradient, MatchesFiniteDifferencesWithDropout) {
  ModelConfig cfg = small_config(8, 8, 4, 4, 2);
  cfg.pre_ln = GetParam();
  cfg.use_gelu = GetParam();
  auto ops = make_cpu_ops();
  std::mt19937_64 rng(9);
  TransformerLSModel model(*ops, cfg, DType::f64);  // for its position tables' shapes
  TransformerLayer& layer = model.layers[0];
  randomize(layer.parameters(), rng);
  PassContext ctx;
  ctx.training = true;
  ctx.dropout = 0.2;
  ctx.seed = 4;
  ctx.step = 2;
  const int64_t B = 2, T = cfg.tokens_per_sample, d = cfg.d_model;
  PositionTables pos;
  pos.window = ops->empty({cfg.window_len, d}, DType::f64);
  pos.chunk_ids = (T + cfg.mem_len) / cfg.chunk_size * cfg.chunk_rank;
  fill_normal(pos.window, rng);
  Tensor x = ops->empty({B, T, d}, DType::f64), cache = ops->empty({B, cfg.mem_len, d}, DType::f64);
  Tensor probe = ops->empty({B, T, d}, DType::f64);
  fill_normal(x, rng);
  fill_normal(cache, rng);
  fill_normal(probe, rng);
  auto loss = [&] {
    Tensor out;
    TransformerLayerSaved saved;
    layer.forward(*ops, x, cache, pos, out, saved, ctx);
    return dot(out, probe);
  };
  Tensor out;
  TransformerLayerSaved saved;
  layer.forward(*ops, x, cache, pos, out, saved, ctx);
  Tensor dx = ops->zeros(x.shape(), DType::f64);
  layer.backward(*ops, probe, pos, saved, dx, ctx);
  EXPECT_LE(max_gradient_error(x, dx, loss, rng), kTolerance) << "d/dx";
  for (Parameter* p : layer.parameters())
    EXPECT_LE(max_gradient_error(p->value, p->grad, loss, rng), kTolerance) << p->name;
}

INSTANTIATE_TEST_SUITE_P(PreAndPostLN, LayerGradient, ::testing::Values(true, false),
                         [](const auto& info) { return info.param ? "pre_ln" : "post_ln"; });

TEST(ModelGradient, WholeModelWithDropoutMatchesFiniteDifferences) {
  ModelConfig cfg = small_config(8, 12, 4, 4, 1);
  cfg.dropout = 0.1;
  cfg.emb_dropout = 0.2;
  auto ops = make_cpu_ops();
  std::mt19937_64 rng(13);
  TransformerLSModel model(*ops, cfg, DType::f64);
  randomize(model.parameters(), rng);
  const int64_t B = 2, T = cfg.tokens_per_sample;
  std::vector<double> tok, tgt;
  std::uniform_int_distribution<int> byte(0, static_cast<int>(cfg.vocab_size) - 1);
  for (int64_t i = 0; i < B * T; ++i) {
    tok.push_back(byte(rng));
    tgt.push_back(i % 5 == 4 ? -1 : byte(rng));  // some positions not predicted
  }
  Tensor tokens = ops->empty({B, T}, DType::i32), targets = ops->empty({B, T}, DType::i32);
  ops->from_host(tokens, tok);
  ops->from_host(targets, tgt);
  PassContext ctx;
  ctx.training = true;
  ctx.dropout = cfg.dropout;
  ctx.emb_dropout = cfg.emb_dropout;
  ctx.seed = 21;
  // A non-zero cache: run one block first, then differentiate the second.
  ModelState warm = model.initial_state(B);
  ModelSaved saved;
  model.forward(tokens, targets, warm, saved, ctx);
  auto loss = [&] {
    ModelState state = warm;
    for (Tensor& c : state.caches) {
      Tensor copy = ops->empty(c.shape(), c.dtype());
      ops->copy(copy, c);
      c = copy;
    }
    ModelSaved s;
    return model.forward(tokens, targets, state, s, ctx) / static_cast<double>(s.n_targets);
  };
  ModelState state = warm;
  model.zero_grad();
  model.forward(tokens, targets, state, saved, ctx);
  model.backward(saved, 1.0 / static_cast<double>(saved.n_targets), ctx);
  for (Parameter* p : model.parameters())
    EXPECT_LE(max_gradient_error(p->value, p->grad, loss, rng, 8), kTolerance) << p->name;
}

}  // namespace
}  // namespace tls::testing
