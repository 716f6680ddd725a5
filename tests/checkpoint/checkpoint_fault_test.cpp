// A save interrupted by a rank dying halfway (docs/DESIGN.md section 5): with the fault-injection
// switch TLS_FAULT_INJECT=save_abort_rank<R>, `mpiexec -n 2 checkpoint_fault_helper` aborts
// within 30 s, the checkpoint it was writing never appears under its final name, and the
// previous checkpoint and checkpoint_last are intact and load. The next good save cleans up the
// interrupted save's temporary file and keeps --keep-last 2.
#include <gtest/gtest.h>

#include <chrono>
#include <cstdlib>
#include <filesystem>

#include "checkpoint/checkpoint_dir.h"
#include "checkpoint/checkpoint_reader.h"
#include "checkpoint/checkpoint_test_util.h"
#include "layers/init.h"
#include "parallel/fault_injection.h"

namespace tls {
namespace {

namespace fs = std::filesystem;

// Runs the helper on 2 ranks; returns its exit status and sets `seconds`.
int run_helper(const std::string& dir, int64_t step, const std::string& fault, double& seconds) {
  const std::string command =
      "env OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMP_NUM_THREADS=1 " +
      std::string(fault.empty() ? "" : std::string(kFaultInjectVariable) + "=" + fault + " ") +
      "timeout 60 " + TLS_MPIEXEC + " -n 2 --oversubscribe --bind-to none " + TLS_TEST_HELPER_DIR +
      "/checkpoint_fault_helper " + dir + " " + std::to_string(step) + " > " + dir + "/helper_" +
      std::to_string(step) + ".log 2>&1";
  const auto start = std::chrono::steady_clock::now();
  const int status = std::system(command.c_str());
  seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  return status;
}

std::vector<std::string> leftovers(const std::string& dir) {
  std::vector<std::string> out;
  for (const fs::directory_entry& e : fs::directory_iterator(dir))
    if (e.path().filename().string().find(".tmp-") != std::string::npos)
      out.push_back(e.path().filename().string());
  return out;
}

// Loads checkpoint_last and checks it holds the weights of seed `step`.
void expect_last_is(const std::string& dir, int64_t step) {
  ASSERT_EQ(fs::read_symlink(last_checkpoint_path(dir)).string(), checkpoint_file_name(step));
  auto ops = make_cpu_ops();
  CheckpointInfo info = read_checkpoint_info(last_checkpoint_path(dir));
  EXPECT_EQ(info.layout.dp, 2);
  TransformerLSModel model(*ops, info.config, DType::f32), want(*ops, info.config, DType::f32);
  initialize_parameters(*ops, want, static_cast<uint64_t>(step));
  AdamW optimizer(*ops, model.parameters(), {});
  ModelState state = model.initial_state(4);
  TrainSettings settings;
  settings.batch_size = 4;
  CheckpointContents c = checkpoint_contents(model, &optimizer, &state, 0, settings);
  load_checkpoint(last_checkpoint_path(dir), c, Topology::single(), *ops);  // dp 2 -> 1 process
  EXPECT_EQ(c.step, step);
  for (size_t i = 0; i < model.parameters().size(); ++i)
    EXPECT_TRUE(testing::same_bits(model.parameters()[i]->value, want.parameters()[i]->value));
}

TEST(FaultInjection, AKilledSaveLeavesThePreviousCheckpointLoadable) {
  testing::TempDir dir;
  double seconds = 0;
  ASSERT_EQ(run_helper(dir.path(), 1, "", seconds), 0)
      << testing::file_bytes(dir.file("helper_1.log"));
  expect_last_is(dir.path(), 1);

  for (int rank : {1, 0}) {
    const int64_t step = 2 + rank;  // 2, then 3
    SCOPED_TRACE("rank " + std::to_string(rank) + " dies saving step " + std::to_string(step));
    const std::string before = testing::file_bytes(dir.file("checkpoint_1.h5"));
    const int status = run_helper(dir.path(), step,
                                  std::string("save_abort_rank") + std::to_string(rank), seconds);
    const std::string log =
        testing::file_bytes(dir.file("helper_" + std::to_string(step) + ".log"));
    EXPECT_NE(status, 0) << log;
    EXPECT_LT(seconds, 30.0) << log;
    EXPECT_NE(log.find("aborts halfway through the save"), std::string::npos) << log;
    EXPECT_FALSE(fs::exists(dir.file(checkpoint_file_name(step))));
    EXPECT_FALSE(leftovers(dir.path()).empty()) << "the interrupted save's temporary file";
    EXPECT_TRUE(testing::file_bytes(dir.file("checkpoint_1.h5")) == before);
    expect_last_is(dir.path(), 1);
  }

  for (int64_t step : {4, 5}) {
    ASSERT_EQ(run_helper(dir.path(), step, "", seconds), 0);
    expect_last_is(dir.path(), step);
  }
  EXPECT_TRUE(leftovers(dir.path()).empty());
  EXPECT_EQ(checkpoint_steps(dir.path()), (std::vector<int64_t>{4, 5}));
}

}  // namespace
}  // namespace tls
