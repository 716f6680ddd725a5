// --precision bf16 keeps the activations the backward needs in bfloat16 (layers/
// activation_storage.h) on the CPU backend:
// - the saved tensors are bfloat16 after the forward and again after the backward, while
//   statistics (LayerNorm's, the attention's lse), the log-probabilities and the caches stay
//   float32; an exact float32 model stores nothing in bfloat16;
// - every golden file within the bf16 bounds (kGoldenBf16, derived below);
// - two runs are bit-identical (losses and parameters);
// - the peak host tensor memory per token of a training step is at most 0.6 of float32's where
//   activations dominate (measured through AllocationOnlyOps, which this test also checks
//   against the CPU backend's own peak in bf16).
//
// The bounds. bfloat16 keeps 8 significant bits: one rounding moves a value by at most
// u = 2^-9 relative (half a unit in the last place), and a bf16 GEMM rounds both operands, so
// each product term moves by up to 2u. Log-probabilities and the loss see only the forward,
// whose activations are float32 (storage rounds the copies the backward keeps): along the golden
// models' chain of GEMMs (per layer q/k/v, the dynamic projection, proj_out, fc1, fc2; then the
// logits) about 16 roundings of 2u each add up to 32u ~ 0.06 in the worst case and to about
// sqrt(16) 2u = 8u as independent errors; LayerNorm does not grow relative errors. Their bound
// is 16u = 2^-5 of the largest log-probability. The gradients pass the same GEMMs again (about
// twice the roundings) and every stored activation once more (u each): independent errors give
// about 12u, the worst case 64u + the storage; and a ReLU whose pre-activation is within a
// rounding of 0 flips its mask (postln_relu_bias_clamp: 0.047 = 24u with float32 storage too,
// so that is the GEMMs'). Their bound is 32u = 2^-4 of the largest golden gradient. A wrong saved
// tensor (a layer's activations restored from another tensor, a stale or missing one) moves
// gradients by O(1) of their scale. The storage alone is checked more tightly below
// (StorageRoundsOnlyWhatTheBackwardReads: 4u).
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <string>
#include <vector>

#include "kernels/allocation_only_ops.h"
#include "kernels/error.h"
#include "layers/activation_storage.h"
#include "layers/init.h"
#include "support/bf16_step.h"
#include "support/golden_case.h"
#include "support/tiny_model.h"

namespace tls::testing {
namespace {

std::unique_ptr<Ops> bf16_cpu_ops() {
  auto ops = make_cpu_ops();
  ops->set_gemm_inputs(GemmInputs::bf16);
  return ops;
}

bool shares_bytes_with(const Tensor& t, const std::vector<Tensor>& others) {
  for (const Tensor& o : others)
    if (o.defined() && o.raw() == t.raw()) return true;
  return false;
}

// One training forward; checks where each saved tensor lives, runs the backward, checks again.
void check_storage(Ops& ops, bool checkpointing, DType want) {
  const ModelConfig cfg = tiny_training_model(0.1, 0.1);
  TransformerLSModel model(ops, cfg, DType::f32);
  initialize_parameters(ops, model, 1);
  ASSERT_EQ(model.activation_storage(), want);
  ModelState state = model.initial_state(2);
  Tensor tokens = ops.zeros({2, cfg.tokens_per_sample}, DType::i32);
  PassContext ctx;
  ctx.training = true;
  ctx.dropout = ctx.emb_dropout = 0.1;
  ctx.activation_checkpointing = checkpointing;
  ModelSaved saved;
  model.zero_grad();
  model.forward(tokens, tokens, state, saved, ctx);
  auto check = [&](const char* when) {
    SCOPED_TRACE(std::string(when) + (checkpointing ? ", checkpointed" : ", kept"));
    int stored = 0;
    for (TransformerLayerSaved& layer : saved.layers) {
      for (Tensor* t : stored_activations(layer)) {
        if (!t->defined()) continue;
        // A layer input that is also the next block's cache stays float32 (held there anyway).
        if (shares_bytes_with(*t, state.caches)) {
          EXPECT_EQ(t->dtype(), DType::f32);
          continue;
        }
        EXPECT_EQ(t->dtype(), want) << t->shape_string();
        ++stored;
      }
      const std::vector<QueryRun>& runs = layer.attn.kept.runs;
      Tensor lse = runs.empty() ? Tensor() : runs[0].lse;
      EXPECT_EQ(lse.defined(), !checkpointing);
      for (const Tensor* stat :
           {&lse, &layer.piece.ln2.mean, &layer.piece.ln2.rstd, &layer.attn.slots.khat_ln.rstd})
        if (stat->defined()) {
          EXPECT_EQ(stat->dtype(), DType::f32);
        }
    }
    EXPECT_GE(stored, checkpointing ? 8 : 30);
    EXPECT_EQ(saved.final_hidden.dtype(), want);
    EXPECT_EQ(saved.logprobs.dtype(), DType::f32);
    for (const Tensor& c : state.caches) EXPECT_EQ(c.dtype(), DType::f32);
  };
  check("after the forward");
  model.backward(saved, 1.0, ctx);
  check("after the backward");
  for (Parameter* p : model.parameters()) EXPECT_TRUE(ops.all_finite(p->grad)) << p->name;
}

TEST(Bf16Activations, SavedInBf16AndStatisticsInFloat32) {
  auto ops = bf16_cpu_ops();
  check_storage(*ops, false, DType::bf16);
  check_storage(*ops, true, DType::bf16);
}

TEST(Bf16Activations, ExactFloat32StoresFloat32) {
  auto ops = make_cpu_ops();
  check_storage(*ops, false, DType::f32);
}

// One training forward and backward with bf16 GEMMs and the given storage: the loss and every
// gradient.
std::vector<double> bf16_gradients(const ModelConfig& cfg, DType storage, bool checkpointing,
                                   double& loss) {
  auto ops = bf16_cpu_ops();
  TransformerLSModel model(*ops, cfg, DType::f32);
  model.set_activation_storage(storage);
  initialize_parameters(*ops, model, 2);
  ModelState state = model.initial_state(2);
  std::vector<double> ids(static_cast<size_t>(2 * cfg.tokens_per_sample));
  for (size_t i = 0; i < ids.size(); ++i) ids[i] = static_cast<double>((i * 53 + 5) % 251);
  Tensor tokens = ops->empty({2, cfg.tokens_per_sample}, DType::i32);
  ops->from_host(tokens, ids);
  PassContext ctx;
  ctx.training = true;
  ctx.dropout = ctx.emb_dropout = 0.1;
  ctx.activation_checkpointing = checkpointing;
  ModelSaved saved;
  model.zero_grad();
  loss = model.forward(tokens, tokens, state, saved, ctx);
  model.backward(saved, 1.0 / static_cast<double>(saved.n_targets), ctx);
  std::vector<double> grads;
  for (Parameter* p : model.parameters()) {
    const std::vector<double> g = ops->to_host(p->grad);
    grads.insert(grads.end(), g.begin(), g.end());
  }
  return grads;
}

// The storage alone (same bf16 GEMMs): the forward is untouched (it computes in float32 and
// rounds only the copies the backward keeps), and the gradients move by the rounding of the
// stored activations: each moves a term of a gradient sum by at most u = 2^-9 relative, and a
// gradient meets a few of them in a row (LayerNorm, GELU, attention and GEMM backward each read
// saved tensors), so a few u of the largest gradient (measured: about 1u); the bound is
// 4u = 2^-7. That it moves at all shows the backward reads the stored tensors.
TEST(Bf16Activations, StorageRoundsOnlyWhatTheBackwardReads) {
  ModelConfig cfg = tiny_training_model(0.1, 0.1);
  cfg.n_layer = 3;
  for (bool checkpointing : {false, true}) {
    SCOPED_TRACE(checkpointing ? "checkpointed" : "kept");
    double loss_f32 = 0, loss_bf16 = 0;
    const std::vector<double> f32 = bf16_gradients(cfg, DType::f32, checkpointing, loss_f32);
    const std::vector<double> bf16 = bf16_gradients(cfg, DType::bf16, checkpointing, loss_bf16);
    EXPECT_EQ(loss_bf16, loss_f32);
    ASSERT_EQ(f32.size(), bf16.size());
    double scale = 0, diff = 0;
    for (size_t i = 0; i < f32.size(); ++i) {
      scale = std::max(scale, std::abs(f32[i]));
      diff = std::max(diff, std::abs(bf16[i] - f32[i]));
    }
    std::printf("  storage rounding: largest gradient change %.3g of the largest gradient\n",
                diff / scale);
    EXPECT_GT(diff, 0.0);
    EXPECT_LE(diff / scale, 0x1p-7);
  }
}

TEST(Bf16Activations, StorageOnlyForFloat32Models) {
  auto ops = make_cpu_ops();
  TransformerLSModel model(*ops, tiny_training_model(0.0), DType::f64);
  EXPECT_THROW(model.set_activation_storage(DType::bf16), Error);
}

class Bf16GoldenModel : public ::testing::TestWithParam<std::string> {};

TEST_P(Bf16GoldenModel, MatchesGoldenWithinBf16Bounds) {
  auto ops = bf16_cpu_ops();
  check_golden(*ops, GetParam(), DType::f32, kGoldenBf16);
}

INSTANTIATE_TEST_SUITE_P(AllFiles, Bf16GoldenModel, ::testing::ValuesIn(golden_files()),
                         [](const auto& info) {
                           return info.param.substr(0, info.param.find('.'));
                         });

TEST(Bf16Activations, TwoRunsAreBitIdentical) {
  const ModelConfig cfg = tiny_training_model(0.1, 0.1);
  for (bool checkpointing : {false, true}) {
    std::vector<double> params_a, params_b;
    auto ops = bf16_cpu_ops();
    const std::vector<double> a = bf16_test_steps(*ops, cfg, 3, checkpointing, &params_a);
    const std::vector<double> b = bf16_test_steps(*ops, cfg, 3, checkpointing, &params_b);
    EXPECT_EQ(a, b);
    EXPECT_EQ(params_a, params_b);
  }
}

// Activations dominate: many layers, long blocks, a small vocabulary and width. (The peak holds
// every layer's activations in bfloat16 plus the layer whose backward runs in float32, so the
// ratio tends to (L/2 + 1/2) / L: 0.61 with 8 layers, 0.57 with 12, before the float32 caches,
// log-probabilities, parameters and gradients.)
ModelConfig activation_heavy(int64_t tokens) {
  ModelConfig cfg = tiny_training_model(0.1);
  cfg.n_layer = 12;
  cfg.d_model = 64;
  cfg.d_inner = 256;
  cfg.window_len = 32;
  cfg.chunk_size = 16;
  cfg.tokens_per_sample = tokens;
  cfg.mem_len = tokens;
  return cfg;
}

// Peak host tensor bytes of two training steps on ops in the given GEMM mode.
int64_t step_peak(Ops& ops, GemmInputs mode, const ModelConfig& cfg, bool checkpointing) {
  ops.set_gemm_inputs(mode);
  int64_t base = 0, peak = 0;
  bf16_test_steps(ops, cfg, 2, checkpointing, nullptr, [&](bool before) {
    if (before) {
      reset_host_tensor_peak();
      base = host_tensor_memory().live;
    } else {
      peak = host_tensor_memory().peak - base;
    }
  });
  return peak;
}

TEST(Bf16Activations, AllocationOnlyPeakEqualsTheCpuBackendsInBf16) {
  const ModelConfig cfg = activation_heavy(64);
  auto cpu = make_cpu_ops();
  AllocationOnlyOps sized;
  for (bool checkpointing : {false, true})
    EXPECT_EQ(step_peak(sized, GemmInputs::bf16, cfg, checkpointing),
              step_peak(*cpu, GemmInputs::bf16, cfg, checkpointing));
}

TEST(Bf16Activations, PeakMemoryPerTokenAtMostSixTenthsOfFloat32) {
  const ModelConfig cfg = activation_heavy(2048);
  AllocationOnlyOps ops;
  const double tokens = 2.0 * static_cast<double>(cfg.tokens_per_sample);
  for (bool checkpointing : {false, true}) {
    const double f32 = static_cast<double>(step_peak(ops, GemmInputs::exact, cfg, checkpointing));
    const double bf16 = static_cast<double>(step_peak(ops, GemmInputs::bf16, cfg, checkpointing));
    std::printf(
        "  host tensor peak per token, %s: float32 %.1f KiB, bf16 activations %.1f KiB "
        "(%.3f)\n",
        checkpointing ? "checkpointed" : "kept", f32 / tokens / 1024, bf16 / tokens / 1024,
        bf16 / f32);
    if (!checkpointing) {
      EXPECT_LE(bf16 / f32, 0.6);
    }
    EXPECT_LT(bf16, f32);
  }
}

}  // namespace
}  // namespace tls::testing
