// A background save interrupted at any point (docs/DESIGN.md section 5): with the fault-injection
// switches of the writer, `mpiexec -n 2 checkpoint_fault_helper` dies within 30 s, on either rank:
// halfway through its part, as it starts a block (SIGKILL), with its part durable but not
// reported, with the checkpoint written under its temporary name, or (rank 0) with the checkpoint
// in place but checkpoint_last.h5 not yet moved. Each time the previous checkpoint's files are
// unchanged and checkpoint_last.h5 names it and loads. The next good saves delete every part file
// and temporary file the interrupted ones left, and keep --keep-last 2.
#include <gtest/gtest.h>

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <map>

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

// Files of unfinished saves: temporary files, and part files of steps without a checkpoint.
std::vector<std::string> leftovers(const std::string& dir) {
  std::vector<std::string> out;
  for (const fs::directory_entry& e : fs::directory_iterator(dir)) {
    const std::string name = e.path().filename().string();
    const size_t part = name.find(".part");
    const bool orphan = part != std::string::npos &&
                        !fs::exists(dir + "/" + name.substr(0, name.find('.')) + ".h5");
    if (name.find(".tmp-") != std::string::npos || orphan) out.push_back(name);
  }
  return out;
}

// Every file of checkpoint `step` (the checkpoint and its parts) and its bytes.
std::map<std::string, std::string> files_of(const std::string& dir, int64_t step) {
  std::map<std::string, std::string> out;
  const std::string prefix = "checkpoint_" + std::to_string(step) + ".";
  for (const fs::directory_entry& e : fs::directory_iterator(dir)) {
    const std::string name = e.path().filename().string();
    if (name.rfind(prefix, 0) == 0 && name.find(".tmp-") == std::string::npos)
      out[name] = testing::file_bytes(e.path().string());
  }
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

struct Fault {
  std::string variable, message;
  bool leaves_a_file;  // a part or temporary file of the interrupted save stays behind
};

TEST(FaultInjection, AKilledSaveLeavesThePreviousCheckpointLoadable) {
  testing::TempDir dir;
  double seconds = 0;
  ASSERT_EQ(run_helper(dir.path(), 1, "", seconds), 0)
      << testing::file_bytes(dir.file("helper_1.log"));
  expect_last_is(dir.path(), 1);
  EXPECT_EQ(files_of(dir.path(), 1).size(), 3u);  // the checkpoint and the parts of 2 ranks

  const std::vector<Fault> faults = {
      {"save_abort_rank1", "aborts halfway through the save", true},
      {"save_abort_rank0", "aborts halfway through the save", true},
      {"save_block_abort_rank0", "dies at save_block", true},
      {"save_durable_abort_rank0", "with its part durable", true},
      {"save_durable_abort_rank1", "with its part durable", true},
      {"save_master_abort_rank0", "under its temporary name", true},
      {"save_link_abort_rank0", "before checkpoint_last names", false},
  };
  int64_t step = 2;
  for (const Fault& fault : faults) {
    SCOPED_TRACE(fault.variable + " saving step " + std::to_string(step));
    const std::map<std::string, std::string> before = files_of(dir.path(), 1);
    const int status = run_helper(dir.path(), step, fault.variable, seconds);
    const std::string log =
        testing::file_bytes(dir.file("helper_" + std::to_string(step) + ".log"));
    EXPECT_NE(status, 0) << log;
    EXPECT_LT(seconds, 30.0) << log;
    EXPECT_NE(log.find(fault.message), std::string::npos) << log;
    const bool linked_late = fault.variable == "save_link_abort_rank0";
    EXPECT_EQ(fs::exists(dir.file(checkpoint_file_name(step))), linked_late);
    if (fault.leaves_a_file) {
      EXPECT_FALSE(leftovers(dir.path()).empty());
    }
    EXPECT_TRUE(files_of(dir.path(), 1) == before) << "checkpoint 1 changed";
    expect_last_is(dir.path(), 1);
    ++step;
  }

  for (int64_t good : {step, step + 1}) {
    ASSERT_EQ(run_helper(dir.path(), good, "", seconds), 0)
        << testing::file_bytes(dir.file("helper_" + std::to_string(good) + ".log"));
    expect_last_is(dir.path(), good);
  }
  EXPECT_TRUE(leftovers(dir.path()).empty());
  EXPECT_EQ(checkpoint_steps(dir.path()), (std::vector<int64_t>{step, step + 1}));
  int parts = 0;
  for (const fs::directory_entry& e : fs::directory_iterator(dir.path()))
    parts += e.path().filename().string().find(".part") != std::string::npos ? 1 : 0;
  EXPECT_EQ(parts, 4) << "the parts of the two checkpoints kept, no others";
}

}  // namespace
}  // namespace tls
