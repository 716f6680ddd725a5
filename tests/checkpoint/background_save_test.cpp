// Saving in the background (checkpoint/background_save.h), one process: start() returns before
// the copy and the write (held back 2 s by TLS_FAULT_INJECT=save_slow) and saves the state as it
// was when start() returned, whatever training does next as the trainer does it (caches replaced,
// parameters and moments changed in place after wait_for_snapshot()); poll() completes the save
// only once the part is durable, and only then does checkpoint_last.h5 name it; the next start()
// waits for the save in flight; a write that fails (TLS_FAULT_INJECT=save_block_throw_rank0) fails
// the save at wait() with one line, leaving the previous checkpoint and no part file behind.
#include "checkpoint/background_save.h"

#include <gtest/gtest.h>

#include <chrono>
#include <cstdlib>
#include <filesystem>

#include "checkpoint/checkpoint_dir.h"
#include "checkpoint/checkpoint_reader.h"
#include "checkpoint/checkpoint_test_util.h"
#include "parallel/fault_injection.h"

namespace tls {
namespace {

namespace fs = std::filesystem;
using testing::FullModel;

double seconds_since(std::chrono::steady_clock::time_point t) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t).count();
}

class SlowWrites : public ::testing::Test {
 protected:
  void SetUp() override { ::setenv(kFaultInjectVariable, "save_slow", 1); }
  void TearDown() override { ::unsetenv(kFaultInjectVariable); }
};

int count_parts(const std::string& dir) {
  int n = 0;
  for (const fs::directory_entry& e : fs::directory_iterator(dir))
    if (e.path().filename().string().find(".part") != std::string::npos) ++n;
  return n;
}

TEST_F(SlowWrites, TrainingGoesOnWhileTheSnapshotIsWritten) {
  auto ops = make_cpu_ops();
  testing::TempDir dir;
  FullModel a(*ops, testing::tiny_checkpoint_model(), DType::f32, 2);
  CheckpointContents c = a.contents(7);
  testing::fill_contents(*ops, c, 1.0);
  FullModel want(*ops, testing::tiny_checkpoint_model(), DType::f32, 2);
  CheckpointContents w = want.contents(7);
  testing::fill_contents(*ops, w, 1.0);

  BackgroundSaver saver(Topology::single());
  const auto start = std::chrono::steady_clock::now();
  saver.start(dir.path(), 2, c, *ops);
  EXPECT_LT(seconds_since(start), 1.0) << "start() waited for the write";
  // Training moves on as the trainer does: the forward replaces the caches with new tensors;
  // the optimizer changes parameters and moments in place, once the snapshot is taken (held
  // back 2 s).
  for (size_t l = 0; l < c.caches->size(); ++l) {
    Tensor next = ops->empty((*c.caches)[l].shape(), (*c.caches)[l].dtype());
    testing::fill_pattern(*ops, next, 2.0 + static_cast<double>(l));
    (*c.caches)[l] = next;
  }
  saver.wait_for_snapshot();
  EXPECT_GE(seconds_since(start), 1.9) << "the update did not wait for the snapshot";
  testing::fill_contents(*ops, c, 2.0);  // every tensor changed in place
  EXPECT_EQ(saver.poll(), "");
  EXPECT_TRUE(saver.in_flight());
  EXPECT_FALSE(fs::exists(dir.file(checkpoint_file_name(7))));
  EXPECT_FALSE(fs::exists(last_checkpoint_path(dir.path())));
  std::string done;
  while (done.empty()) done = saver.poll();
  EXPECT_GE(seconds_since(start), 2.0);
  EXPECT_EQ(done, dir.file(checkpoint_file_name(7)));
  EXPECT_EQ(fs::read_symlink(last_checkpoint_path(dir.path())).string(), checkpoint_file_name(7));
  EXPECT_EQ(saver.wait(), "");  // pruning done: the save was complete already

  FullModel b(*ops, testing::tiny_checkpoint_model(), DType::f32, 2);
  CheckpointContents loaded = b.contents();
  load_checkpoint(last_checkpoint_path(dir.path()), loaded, Topology::single(), *ops);
  EXPECT_EQ(loaded.step, 7);
  for (size_t i = 0; i < b.model.parameters().size(); ++i) {
    EXPECT_TRUE(
        testing::same_bits(b.model.parameters()[i]->value, want.model.parameters()[i]->value));
    EXPECT_TRUE(testing::same_bits(b.optimizer.exp_avg_sq()[i], want.optimizer.exp_avg_sq()[i]));
  }
  EXPECT_TRUE(testing::same_bits(b.state.caches[1], want.state.caches[1]));
}

TEST_F(SlowWrites, TheNextSaveWaitsForThePreviousOne) {
  auto ops = make_cpu_ops();
  testing::TempDir dir;
  FullModel a(*ops, testing::tiny_checkpoint_model(), DType::f32, 1);
  BackgroundSaver saver(Topology::single());
  saver.start(dir.path(), 0, a.contents(1), *ops);
  saver.start(dir.path(), 0, a.contents(2), *ops);
  EXPECT_TRUE(fs::exists(dir.file(checkpoint_file_name(1))));
  EXPECT_EQ(fs::read_symlink(last_checkpoint_path(dir.path())).string(), checkpoint_file_name(1));
  EXPECT_EQ(saver.wait(), dir.file(checkpoint_file_name(2)));
  EXPECT_EQ(fs::read_symlink(last_checkpoint_path(dir.path())).string(), checkpoint_file_name(2));
  EXPECT_EQ(saver.wait(), "");
  EXPECT_EQ(count_parts(dir.path()), 2);
}

TEST(BackgroundSave, AFailedWriteIsReportedAndLeavesThePreviousCheckpoint) {
  auto ops = make_cpu_ops();
  testing::TempDir dir;
  FullModel a(*ops, testing::tiny_checkpoint_model(), DType::f32, 1);
  BackgroundSaver saver(Topology::single());
  saver.start(dir.path(), 0, a.contents(1), *ops);
  EXPECT_EQ(saver.wait(), dir.file(checkpoint_file_name(1)));
  ::setenv(kFaultInjectVariable, "save_block_throw_rank0", 1);
  saver.start(dir.path(), 0, a.contents(2), *ops);
  const std::string m = testing::error_of([&] { saver.wait(); });
  ::unsetenv(kFaultInjectVariable);
  EXPECT_NE(m.find("rank 0 fails at save_block"), std::string::npos) << m;
  EXPECT_EQ(m.find('\n'), std::string::npos) << m;
  EXPECT_FALSE(saver.in_flight());
  EXPECT_EQ(fs::read_symlink(last_checkpoint_path(dir.path())).string(), checkpoint_file_name(1));
  EXPECT_EQ(count_parts(dir.path()), 1);
}

}  // namespace
}  // namespace tls
