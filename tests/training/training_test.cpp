// The single-process training loop on real English text: a few dozen AdamW steps of a small
// model lower the loss well below its start (uniform bytes: ln 256 = 5.55 nats); the schedule,
// clipping and AdamW match their definitions.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>

#include "kernels/cpu/bf16.h"
#include "layers/init.h"
#include "support/tiny_model.h"
#include "training/gradient_reduction.h"
#include "training/trainer.h"

namespace tls {
namespace {

ModelConfig tiny_model() { return testing::tiny_training_model(0.05); }

TEST(Training, LossFallsOnRealText) {
  auto ops = make_cpu_ops();
  ModelConfig cfg = tiny_model();
  TransformerLSModel model(*ops, cfg, DType::f32);
  initialize_parameters(*ops, model, 1);
  ByteCorpus corpus(std::string(TLS_TEST_DATA_DIR) + "/english.txt", 4, cfg.tokens_per_sample);
  TrainSettings settings;
  settings.batch_size = 4;
  settings.optimizer.lr = 3e-3;
  settings.optimizer.warmup_updates = 5;
  settings.optimizer.clip_norm = 1.0;
  Trainer trainer(*ops, model, corpus, settings);
  double first = 0, last = 0;
  const int steps = 60;
  for (int i = 0; i < steps; ++i) {
    StepMetrics m = trainer.train_step();
    ASSERT_TRUE(std::isfinite(m.loss));
    EXPECT_EQ(m.step, i + 1);
    if (i < 5) first += m.loss / 5;
    if (i >= steps - 5) last += m.loss / 5;
  }
  std::printf("mean loss of the first 5 steps %.4f, of the last 5 %.4f nats\n", first, last);
  EXPECT_GT(first, 5.0);  // an untrained model is close to uniform over bytes
  EXPECT_LT(last, 3.6) << "mean loss of the last 5 steps; first 5: " << first;
}

// --precision bf16 on the CPU backend: the same run with every GEMM on bf16-rounded operands
// follows the float32 run (bf16 keeps 8 mantissa bits, so per-step losses drift by well under
// a percent here), and the weights stay float32 (they move by updates far below bf16's spacing).
TEST(Training, Bf16GemmsFollowTheFloat32Run) {
  ByteCorpus corpus(std::string(TLS_TEST_DATA_DIR) + "/english.txt", 4, 32);
  auto run = [&](GemmInputs mode, std::vector<double>& losses, double& weight) {
    auto ops = make_cpu_ops();
    ops->set_gemm_inputs(mode);
    ModelConfig cfg = tiny_model();
    TransformerLSModel model(*ops, cfg, DType::f32);
    initialize_parameters(*ops, model, 1);
    TrainSettings settings;
    settings.batch_size = 4;
    settings.optimizer.lr = 3e-3;
    settings.optimizer.warmup_updates = 5;
    Trainer trainer(*ops, model, corpus, settings);
    for (int i = 0; i < 30; ++i) losses.push_back(trainer.train_step().loss);
    weight = ops->to_host(model.parameters().front()->value)[0];
  };
  std::vector<double> exact, bf16;
  double w_exact = 0, w_bf16 = 0;
  run(GemmInputs::exact, exact, w_exact);
  run(GemmInputs::bf16, bf16, w_bf16);
  double worst = 0;
  for (size_t i = 0; i < exact.size(); ++i) {
    ASSERT_TRUE(std::isfinite(bf16[i])) << "update " << i + 1;
    worst = std::max(worst, std::abs(bf16[i] - exact[i]) / exact[i]);
  }
  std::printf(
      "bf16 GEMMs: largest relative loss difference over 30 updates %.2e; last loss %.4f "
      "(float32 %.4f)\n",
      worst, bf16.back(), exact.back());
  EXPECT_GT(worst, 0.0) << "bf16 GEMM operands changed nothing: is the mode applied?";
  EXPECT_LT(worst, 1e-2);
  EXPECT_LT(bf16.back(), bf16.front() - 1.0) << "the bf16 run did not learn";
  // float32 master weights: the bf16 run's weight is not on bf16's grid.
  EXPECT_NE(static_cast<float>(w_bf16), cpu::round_to_bf16(static_cast<float>(w_bf16)));
}

TEST(Training, ScheduleWarmsUpLinearlyThenStaysFixed) {
  OptimizerSettings s;
  s.lr = 0.01;
  s.warmup_updates = 4;
  EXPECT_DOUBLE_EQ(learning_rate(s, 1), 0.0025);
  EXPECT_DOUBLE_EQ(learning_rate(s, 2), 0.005);
  EXPECT_DOUBLE_EQ(learning_rate(s, 4), 0.01);
  EXPECT_DOUBLE_EQ(learning_rate(s, 100), 0.01);
  s.warmup_updates = 0;
  EXPECT_DOUBLE_EQ(learning_rate(s, 1), 0.01);
}

TEST(Training, ClippingBoundsTheGlobalNorm) {
  auto ops = make_cpu_ops();
  Parameter a, b;
  a.allocate(*ops, "a", {3}, {}, DType::f64);
  b.allocate(*ops, "b", {2}, {}, DType::f64);
  ops->from_host(a.grad, {3, 0, 0});
  ops->from_host(b.grad, {0, 4});
  OptimizerSettings s;
  s.clip_norm = 1.0;
  AdamW opt(*ops, {&a, &b}, s);
  const Topology single = Topology::single();
  auto norm = [&] { return global_gradient_norm(*ops, single, {&a, &b}); };
  EXPECT_DOUBLE_EQ(norm(), 5.0);
  opt.clip(norm());
  EXPECT_NEAR(norm(), 1.0, 1e-6);
  s.clip_norm = 0;  // off: untouched
  AdamW off(*ops, {&a, &b}, s);
  const double before = norm();
  off.clip(before);
  EXPECT_DOUBLE_EQ(norm(), before);
}

TEST(Training, AdamWStepFollowsTorchDefinition) {
  auto ops = make_cpu_ops();
  Parameter p;
  p.allocate(*ops, "p", {2}, {}, DType::f64);
  ops->from_host(p.value, {1.0, -2.0});
  OptimizerSettings s;
  s.lr = 0.1;
  s.weight_decay = 0.01;
  AdamW opt(*ops, {&p}, s);
  double x = 1.0, m = 0, v = 0;
  const double g[3] = {0.5, -0.25, 1.0};
  for (int step = 1; step <= 3; ++step) {
    ops->from_host(p.grad, {g[step - 1], 0.0});
    opt.step(step);
    x *= 1 - s.lr * s.weight_decay;
    m = 0.9 * m + 0.1 * g[step - 1];
    v = 0.999 * v + 0.001 * g[step - 1] * g[step - 1];
    const double mh = m / (1 - std::pow(0.9, step)), vh = v / (1 - std::pow(0.999, step));
    x -= s.lr * mh / (std::sqrt(vh) + s.eps);
  }
  EXPECT_NEAR(ops->to_host(p.value)[0], x, 1e-14);
}

}  // namespace
}  // namespace tls
