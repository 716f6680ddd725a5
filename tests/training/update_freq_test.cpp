// --update-freq N (docs/DESIGN.md section 4): one update sums the gradients of N consecutive
// blocks of the same rows, the caches carried from block to block, scaled by 1 / (all N blocks'
// targets); the loss is their mean; the schedule and the update counter advance once per N
// blocks; an epoch ends when fewer than N blocks remain and restarts the caches. Checked in
// float64 against the same computation written out block by block with the model and AdamW.
#include <gtest/gtest.h>

#include <cmath>
#include <string>

#include "kernels/error.h"
#include "layers/init.h"
#include "support/process.h"
#include "support/temp_files.h"
#include "support/tiny_model.h"
#include "training/gradient_reduction.h"
#include "training/trainer.h"

namespace tls {
namespace {

// English text long enough for rows of `blocks` blocks of 32 tokens (plus the final target).
std::string english_for(int64_t rows, int64_t blocks) {
  const std::string text = testing::read_file(std::string(TLS_TEST_DATA_DIR) + "/english.txt");
  return text.substr(0, static_cast<size_t>(rows * (blocks * 32 + 1)));
}

TrainSettings settings_with(int64_t update_freq) {
  TrainSettings s;
  s.batch_size = 2;
  s.seed = 9;
  s.update_freq = update_freq;
  s.optimizer.lr = 3e-3;
  s.optimizer.warmup_updates = 2;
  s.optimizer.weight_decay = 0.01;
  s.optimizer.clip_norm = 0.5;
  return s;
}

// Rows [0, B) of block `block` as int32 tensors.
void block_tensors(Ops& ops, const ByteCorpus& corpus, int64_t block, Tensor& tokens,
                   Tensor& targets) {
  std::vector<int32_t> in, tg;
  const int64_t B = corpus.rows(), T = corpus.tokens_per_sample();
  corpus.batch(block, 0, B, 0, T, in, tg);
  tokens = ops.empty({B, T}, DType::i32);
  targets = ops.empty({B, T}, DType::i32);
  ops.from_host(tokens, std::vector<double>(in.begin(), in.end()));
  ops.from_host(targets, std::vector<double>(tg.begin(), tg.end()));
}

// 3 updates of 3 blocks on a corpus of 7 blocks per epoch: updates 1 and 2 read blocks 0-2 and
// 3-5, block 6 is left over, update 3 starts the next epoch at block 0 with fresh caches.
TEST(UpdateFreq, EqualsTheBlocksWrittenOutOneByOneInFloat64) {
  auto ops = make_cpu_ops();
  const ModelConfig cfg = testing::tiny_training_model(0.1, 0.05);
  const testing::TempFile text(english_for(2, 7));
  const ByteCorpus corpus(text.path(), 2, cfg.tokens_per_sample);
  ASSERT_EQ(corpus.blocks_per_epoch(), 7);
  const TrainSettings settings = settings_with(3);

  TransformerLSModel model(*ops, cfg, DType::f64);
  initialize_parameters(*ops, model, 4);
  Trainer trainer(*ops, model, corpus, settings);
  std::vector<double> losses;
  for (int u = 0; u < 3; ++u) {
    const StepMetrics m = trainer.train_step();
    EXPECT_EQ(m.step, u + 1);
    EXPECT_DOUBLE_EQ(m.lr, learning_rate(settings.optimizer, u + 1));
    losses.push_back(m.loss);
  }

  // The same by hand.
  TransformerLSModel by_hand(*ops, cfg, DType::f64);
  initialize_parameters(*ops, by_hand, 4);
  AdamW adamw(*ops, by_hand.parameters(), settings.optimizer);
  const Topology single = Topology::single();
  const int64_t first_block[3] = {0, 3, 0};
  ModelState state;
  for (int u = 0; u < 3; ++u) {
    if (first_block[u] == 0) state = by_hand.initial_state(2);
    by_hand.zero_grad();
    double nll = 0, n = 0;
    for (int k = 0; k < 3; ++k) {
      Tensor tokens, targets;
      block_tensors(*ops, corpus, first_block[u] + k, tokens, targets);
      PassContext ctx;
      ctx.training = true;
      ctx.seed = settings.seed;
      ctx.step = static_cast<uint64_t>(3 * u + k + 1);  // every block its own dropout masks
      ctx.dropout = cfg.dropout;
      ctx.emb_dropout = cfg.emb_dropout;
      ModelSaved saved;
      nll += by_hand.forward(tokens, targets, state, saved, ctx);
      n += static_cast<double>(saved.n_targets);
      EXPECT_EQ(saved.n_targets, 2 * 32);
      by_hand.backward(saved, 1.0 / (3.0 * 64.0), ctx);
    }
    EXPECT_NEAR(losses[static_cast<size_t>(u)], nll / n, 1e-12 * nll / n) << "update " << u + 1;
    adamw.clip(global_gradient_norm(*ops, single, by_hand.parameters()));
    adamw.step(u + 1);
  }
  const std::vector<Parameter*> a = model.parameters(), b = by_hand.parameters();
  ASSERT_EQ(a.size(), b.size());
  for (size_t i = 0; i < a.size(); ++i) {
    const std::vector<double> x = ops->to_host(a[i]->value), y = ops->to_host(b[i]->value);
    double err = 0, scale = 0;
    for (size_t j = 0; j < x.size(); ++j) {
      err = std::max(err, std::abs(x[j] - y[j]));
      scale = std::max(scale, std::abs(y[j]));
    }
    EXPECT_LE(err, 1e-12 * std::max(scale, 1.0)) << a[i]->name;
  }
}

// With N = 1 an update is one block: the run is the one without the option.
TEST(UpdateFreq, OneIsTheDefault) { EXPECT_EQ(TrainSettings().update_freq, 1); }

TEST(UpdateFreq, BadValuesAreRefusedNamingTheOption) {
  auto ops = make_cpu_ops();
  const ModelConfig cfg = testing::tiny_training_model(0.0);
  const testing::TempFile text(english_for(2, 7));
  const ByteCorpus corpus(text.path(), 2, cfg.tokens_per_sample);
  TransformerLSModel model(*ops, cfg, DType::f32);
  for (int64_t bad : {0, -2}) {
    try {
      Trainer t(*ops, model, corpus, settings_with(bad));
      ADD_FAILURE() << "--update-freq " << bad << " accepted";
    } catch (const Error& e) {
      EXPECT_EQ(std::string(e.what()),
                "--update-freq " + std::to_string(bad) + " must be at least 1");
    }
  }
  try {
    Trainer t(*ops, model, corpus, settings_with(8));
    ADD_FAILURE() << "--update-freq 8 accepted on a corpus of 7 blocks per epoch";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("--update-freq 8 exceeds the 7 blocks of an epoch"),
              std::string::npos)
        << e.what();
  }
  EXPECT_NO_THROW(Trainer(*ops, model, corpus, settings_with(7)));
}

}  // namespace
}  // namespace tls
