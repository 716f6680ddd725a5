// Exact resume (docs/DESIGN.md sections 4 and 5): training 6 updates straight and training 3,
// saving, loading into a fresh model and trainer, and training 3 more give the same losses and the
// same parameters and AdamW moments, bit for bit, in float32 and float64 (dropout on, clipping on,
// warm-up spanning the save), with one block per update and with --update-freq 2 (the save in
// the middle of an epoch, between updates of two blocks each).
#include <gtest/gtest.h>

#include <cstring>
#include <tuple>

#include "checkpoint/checkpoint_reader.h"
#include "checkpoint/checkpoint_test_util.h"
#include "checkpoint/checkpoint_writer.h"
#include "layers/init.h"

namespace tls {
namespace {

using testing::same_bits;

ModelConfig resume_model() {
  ModelConfig cfg = testing::tiny_checkpoint_model();
  cfg.dropout = 0.1;
  cfg.emb_dropout = 0.05;
  return cfg;
}

TrainSettings resume_settings(int64_t update_freq) {
  TrainSettings s;
  s.update_freq = update_freq;
  s.batch_size = 2;
  s.seed = 5;
  s.optimizer.lr = 3e-3;
  s.optimizer.warmup_updates = 4;
  s.optimizer.weight_decay = 0.01;
  s.optimizer.clip_norm = 0.5;
  return s;
}

bool same_double(double a, double b) { return std::memcmp(&a, &b, sizeof(double)) == 0; }

class Resume : public ::testing::TestWithParam<std::tuple<DType, int64_t>> {};

TEST_P(Resume, SixStepsEqualThreeSaveLoadThree) {
  auto ops = make_cpu_ops();
  const ModelConfig cfg = resume_model();
  const DType dtype = std::get<0>(GetParam());
  const TrainSettings settings = resume_settings(std::get<1>(GetParam()));
  ByteCorpus corpus(std::string(TLS_TEST_DATA_DIR) + "/english.txt", settings.batch_size,
                    cfg.tokens_per_sample);

  TransformerLSModel straight(*ops, cfg, dtype);
  initialize_parameters(*ops, straight, 11);
  Trainer straight_trainer(*ops, straight, corpus, settings);
  std::vector<double> losses;
  for (int i = 0; i < 6; ++i) losses.push_back(straight_trainer.train_step().loss);

  testing::TempDir dir;
  const std::string path = dir.file("checkpoint_3.h5");
  {
    TransformerLSModel first(*ops, cfg, dtype);
    initialize_parameters(*ops, first, 11);
    Trainer trainer(*ops, first, corpus, settings);
    for (int i = 0; i < 3; ++i) ASSERT_TRUE(same_double(trainer.train_step().loss, losses[i]));
    save_checkpoint(path,
                    checkpoint_contents(first, &trainer.optimizer(), &trainer.state(),
                                        trainer.update(), settings),
                    Topology::single(), *ops);
  }
  TransformerLSModel resumed(*ops, cfg, dtype);
  initialize_parameters(*ops, resumed, 99);  // different weights: the load must replace them
  Trainer trainer(*ops, resumed, corpus, settings);
  CheckpointContents c =
      checkpoint_contents(resumed, &trainer.optimizer(), &trainer.state(), 0, settings);
  load_checkpoint(path, c, Topology::single(), *ops);
  ASSERT_EQ(c.step, 3);
  trainer.set_update(c.step);
  for (int i = 3; i < 6; ++i) {
    StepMetrics m = trainer.train_step();
    EXPECT_EQ(m.step, i + 1);
    EXPECT_TRUE(same_double(m.loss, losses[static_cast<size_t>(i)]))
        << "update " << i + 1 << ": " << m.loss << " vs " << losses[static_cast<size_t>(i)];
  }
  std::vector<Parameter*> a = straight.parameters(), b = resumed.parameters();
  for (size_t i = 0; i < a.size(); ++i) {
    EXPECT_TRUE(same_bits(a[i]->value, b[i]->value)) << a[i]->name;
    EXPECT_TRUE(
        same_bits(straight_trainer.optimizer().exp_avg()[i], trainer.optimizer().exp_avg()[i]))
        << a[i]->name;
    EXPECT_TRUE(same_bits(straight_trainer.optimizer().exp_avg_sq()[i],
                          trainer.optimizer().exp_avg_sq()[i]))
        << a[i]->name;
  }
  for (size_t l = 0; l < straight_trainer.state().caches.size(); ++l)
    EXPECT_TRUE(same_bits(straight_trainer.state().caches[l], trainer.state().caches[l]));
}

INSTANTIATE_TEST_SUITE_P(PrecisionsAndUpdateFreqs, Resume,
                         ::testing::Combine(::testing::Values(DType::f32, DType::f64),
                                            ::testing::Values(int64_t{1}, int64_t{2})),
                         [](const auto& info) {
                           return std::string(dtype_name(std::get<0>(info.param))) +
                                  "_update_freq" + std::to_string(std::get<1>(info.param));
                         });

}  // namespace
}  // namespace tls
