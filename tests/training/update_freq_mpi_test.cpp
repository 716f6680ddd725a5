// --update-freq on every parallel layout (docs/DESIGN.md sections 3 and 4): two updates of two
// blocks each, dropout on, in float64 on (tp, sp, dp), give the losses and parameters of one
// process (this rank's shard of them).
// mpi-ranks: 2 4
#include <gtest/gtest.h>
#include <mpi.h>

#include <algorithm>
#include <cmath>

#include "layers/init.h"
#include "parallel/mpi_comm.h"
#include "support/tiny_model.h"
#include "training/trainer.h"

namespace tls {
namespace {

struct Result {
  std::vector<double> losses;
  std::vector<std::vector<double>> params;  // this rank's values, in parameter order
};

Result train(const ModelConfig& cfg, const Topology& topo, const ByteCorpus& corpus) {
  auto ops = make_cpu_ops();
  TransformerLSModel model(*ops, cfg, DType::f64, topo);
  initialize_parameters(*ops, model, 8);
  TrainSettings settings;
  settings.batch_size = corpus.rows();
  settings.seed = 6;
  settings.update_freq = 2;
  settings.optimizer.lr = 3e-3;
  settings.optimizer.warmup_updates = 1;
  settings.optimizer.clip_norm = 0.5;
  Trainer trainer(*ops, model, corpus, settings);
  Result r;
  for (int u = 0; u < 2; ++u) r.losses.push_back(trainer.train_step().loss);
  for (Parameter* p : model.parameters()) r.params.push_back(ops->to_host(p->value));
  return r;
}

TEST(UpdateFreqLayouts, EveryLayoutEqualsOneProcess) {
  int world = 0;
  MPI_Comm_size(MPI_COMM_WORLD, &world);
  ModelConfig cfg = testing::tiny_training_model(0.1, 0.05);
  cfg.window_len = 8;  // sp = 4 slices of 8 positions
  const ByteCorpus corpus(std::string(TLS_TEST_DATA_DIR) + "/english.txt", 4,
                          cfg.tokens_per_sample);
  const Result single = train(cfg, Topology::single(), corpus);
  int tested = 0;
  for (int tp = 1; tp <= world; tp *= 2)
    for (int sp = 1; tp * sp <= world; sp *= 2) {
      if (world % (tp * sp) != 0 || 4 % (world / (tp * sp)) != 0) continue;
      SCOPED_TRACE("tp " + std::to_string(tp) + " sp " + std::to_string(sp));
      const Topology topo = make_mpi_topology(tp, sp);
      const Result got = train(cfg, topo, corpus);
      for (size_t u = 0; u < got.losses.size(); ++u)
        EXPECT_NEAR(got.losses[u], single.losses[u], 1e-10 * single.losses[u]) << "update " << u;
      auto ops = make_cpu_ops();
      TransformerLSModel shapes(*ops, cfg, DType::f64, topo);
      const std::vector<Parameter*> params = shapes.parameters();
      ASSERT_EQ(params.size(), got.params.size());
      for (size_t i = 0; i < params.size(); ++i) {
        const std::vector<double> want = shard_of(*params[i], single.params[i]);
        ASSERT_EQ(want.size(), got.params[i].size()) << params[i]->name;
        double err = 0;
        for (size_t j = 0; j < want.size(); ++j)
          err = std::max(err, std::abs(want[j] - got.params[i][j]));
        EXPECT_LE(err, 1e-10) << params[i]->name;
      }
      ++tested;
    }
  EXPECT_GE(tested, 2);
}

}  // namespace
}  // namespace tls
