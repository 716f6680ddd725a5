// Save and load in one process (docs/DESIGN.md section 5): a bitwise round trip of parameters,
// AdamW moments, step and caches in float32 and float64, either precision loading into the
// other, every golden file loading into a model that then reproduces its first block's loss,
// and the save directory's checkpoint_last link and pruning.
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>

#include "checkpoint/checkpoint_dir.h"
#include "checkpoint/checkpoint_reader.h"
#include "checkpoint/checkpoint_test_util.h"
#include "support/golden_case.h"

namespace tls {
namespace {

using testing::fill_contents;
using testing::FullModel;
using testing::same_bits;
using testing::TempDir;

class RoundTrip : public ::testing::TestWithParam<DType> {};

TEST_P(RoundTrip, IsBitwise) {
  auto ops = make_cpu_ops();
  TempDir dir;
  const std::string path = dir.file("checkpoint_7.h5");
  FullModel a(*ops, testing::tiny_checkpoint_model(), GetParam(), 3);
  CheckpointContents saved = a.contents(7);
  fill_contents(*ops, saved, 0.5);
  save_checkpoint(path, saved, Topology::single(), *ops);

  FullModel b(*ops, testing::tiny_checkpoint_model(), GetParam(), 3);
  CheckpointContents loaded = b.contents();
  CheckpointInfo info = load_checkpoint(path, loaded, Topology::single(), *ops);
  EXPECT_EQ(loaded.step, 7);
  EXPECT_EQ(info.step, 7);
  EXPECT_EQ(info.precision, GetParam() == DType::f64 ? "fp64" : "fp32");
  EXPECT_TRUE(info.checksummed);
  EXPECT_EQ(info.training.seed, 17u);
  EXPECT_EQ(info.training.optimizer.clip_norm, 0.5);
  ASSERT_EQ(saved.params.size(), loaded.params.size());
  for (size_t i = 0; i < saved.params.size(); ++i) {
    EXPECT_TRUE(same_bits(saved.params[i]->value, loaded.params[i]->value))
        << saved.params[i]->name;
    EXPECT_TRUE(same_bits((*saved.exp_avg)[i], (*loaded.exp_avg)[i])) << saved.params[i]->name;
    EXPECT_TRUE(same_bits((*saved.exp_avg_sq)[i], (*loaded.exp_avg_sq)[i]))
        << saved.params[i]->name;
  }
  for (size_t l = 0; l < a.state.caches.size(); ++l)
    EXPECT_TRUE(same_bits(a.state.caches[l], b.state.caches[l])) << "cache " << l;
  EXPECT_FALSE(std::filesystem::exists(path + ".tmp-" + std::to_string(::getpid())));
}

INSTANTIATE_TEST_SUITE_P(Precisions, RoundTrip, ::testing::Values(DType::f32, DType::f64),
                         [](const auto& info) { return std::string(dtype_name(info.param)); });

TEST(RoundTrip, EitherPrecisionLoadsIntoTheOther) {
  auto ops = make_cpu_ops();
  TempDir dir;
  for (DType from : {DType::f32, DType::f64}) {
    const DType to = from == DType::f32 ? DType::f64 : DType::f32;
    FullModel a(*ops, testing::tiny_checkpoint_model(), from, 2);
    CheckpointContents saved = a.contents(3);
    fill_contents(*ops, saved, 1.5);
    save_checkpoint(dir.file("x.h5"), saved, Topology::single(), *ops);
    FullModel b(*ops, testing::tiny_checkpoint_model(), to, 2);
    CheckpointContents loaded = b.contents();
    load_checkpoint(dir.file("x.h5"), loaded, Topology::single(), *ops);
    for (size_t i = 0; i < saved.params.size(); ++i) {
      std::vector<double> want = ops->to_host(saved.params[i]->value);
      std::vector<double> got = ops->to_host(loaded.params[i]->value);
      for (size_t k = 0; k < want.size(); ++k) {
        const double expect = to == DType::f32 ? static_cast<float>(want[k]) : want[k];
        ASSERT_EQ(got[k], expect) << saved.params[i]->name << "[" << k << "]";
      }
    }
  }
}

TEST(GoldenFiles, LoadThroughTheReaderAndReproduceTheirLoss) {
  auto ops = make_cpu_ops();
  for (const std::string& name : testing::golden_files()) {
    SCOPED_TRACE(name);
    const std::string path = testing::golden_path(name);
    CheckpointInfo info = read_checkpoint_info(path);
    TransformerLSModel model(*ops, info.config, DType::f64);
    CheckpointContents c = checkpoint_contents(model, nullptr, nullptr, 0, {});
    LoadOptions weights;
    weights.weights_only = true;
    load_checkpoint(path, c, Topology::single(), *ops, weights);  // /golden is ignored

    Hdf5Reader file(path);
    for (Parameter* p : model.parameters())
      ASSERT_EQ(ops->to_host(p->value), file.read_doubles("/model/" + p->name)) << p->name;
    testing::GoldenCase golden(path);
    ModelState state = model.initial_state(golden.batch);
    ModelSaved saved;
    const double nll = model.forward(golden.block_inputs(*ops, 0), golden.block_targets(*ops, 0),
                                     state, saved, PassContext{});
    const double want = golden.expected("/golden/block_0/loss")[0];
    EXPECT_NEAR(nll / static_cast<double>(saved.n_targets), want, 1e-9 * want);
  }
}

TEST(SaveDirectory, LastNamesTheNewestAndPruningKeepsN) {
  auto ops = make_cpu_ops();
  TempDir dir;
  FullModel a(*ops, testing::tiny_checkpoint_model(), DType::f32, 1);
  for (int64_t step : {2, 4, 6, 8}) {
    CheckpointContents c = a.contents(step);
    fill_contents(*ops, c, static_cast<double>(step));
    EXPECT_EQ(save_to_directory(dir.path(), 2, c, Topology::single(), *ops),
              dir.file(checkpoint_file_name(step)));
    EXPECT_EQ(std::filesystem::read_symlink(last_checkpoint_path(dir.path())).string(),
              checkpoint_file_name(step));
  }
  EXPECT_EQ(checkpoint_steps(dir.path()), (std::vector<int64_t>{6, 8}));
  FullModel b(*ops, testing::tiny_checkpoint_model(), DType::f32, 1);
  CheckpointContents c = b.contents();
  load_checkpoint(last_checkpoint_path(dir.path()), c, Topology::single(), *ops);
  EXPECT_EQ(c.step, 8);
  EXPECT_TRUE(same_bits(a.model.in_emb.value, b.model.in_emb.value));
  // keep_last 1 still never deletes the newest; 0 keeps everything.
  prune_checkpoints(dir.path(), 1);
  EXPECT_EQ(checkpoint_steps(dir.path()), (std::vector<int64_t>{8}));
}

// checkpoint_best.h5 names the save made with `best`, keeps its validation loss, survives
// pruning of its numbered file (--keep-last 1) and is never overwritten by later saves.
TEST(SaveDirectory, BestSurvivesPruningAndLaterSaves) {
  auto ops = make_cpu_ops();
  TempDir dir;
  FullModel a(*ops, testing::tiny_checkpoint_model(), DType::f32, 1);
  for (int64_t step : {2, 4, 6, 8}) {
    CheckpointContents c = a.contents(step);
    fill_contents(*ops, c, static_cast<double>(step));
    c.valid_loss = step == 4 ? 1.25 : 2.0;
    save_to_directory(dir.path(), 1, c, Topology::single(), *ops, step == 4);
  }
  EXPECT_EQ(checkpoint_steps(dir.path()), (std::vector<int64_t>{8}));
  ASSERT_TRUE(std::filesystem::exists(best_checkpoint_path(dir.path())));
  const CheckpointInfo best = read_checkpoint_info(best_checkpoint_path(dir.path()));
  EXPECT_EQ(best.step, 4);
  EXPECT_EQ(best.valid_loss, 1.25);
  FullModel b(*ops, testing::tiny_checkpoint_model(), DType::f32, 1);
  CheckpointContents c = b.contents();
  load_checkpoint(best_checkpoint_path(dir.path()), c, Topology::single(), *ops);
  FullModel want(*ops, testing::tiny_checkpoint_model(), DType::f32, 1);
  CheckpointContents w = want.contents(4);
  fill_contents(*ops, w, 4.0);
  EXPECT_TRUE(same_bits(want.model.in_emb.value, b.model.in_emb.value));
  EXPECT_EQ(read_checkpoint_info(last_checkpoint_path(dir.path())).valid_loss, 2.0);
  // A save without a validation records none, and leaves the best alone.
  CheckpointContents plain = a.contents(10);
  save_to_directory(dir.path(), 1, plain, Topology::single(), *ops);
  EXPECT_TRUE(std::isnan(read_checkpoint_info(last_checkpoint_path(dir.path())).valid_loss));
  EXPECT_EQ(read_checkpoint_info(best_checkpoint_path(dir.path())).step, 4);
}
}  // namespace
}  // namespace tls
