// tls_dist with --device cuda end to end: training (one rank, and two ranks with sp = 2, whose
// exchanges then go through NCCL), a checkpoint written from device memory, resuming from it,
// and eval, each against the same command on the CPU backend. The binary is this build's
// tls_dist, or, in the CUDA emulator's build (tests/cuda_emulator), tls_dist_emulated.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <regex>
#include <sstream>

#include "kernels/device.h"
#include "support/process.h"

namespace tls::testing {
namespace {

std::string cuda_binary() {
#ifdef TLS_CUDA_PROGRAM
  return TLS_CUDA_PROGRAM;
#else
  return tls_dist_binary();
#endif
}

// A tiny model on the English sample; each step is 4 x 32 tokens.
std::string model_flags() {
  return " --n-layer 2 --d-model 32 --n-head 4 --d-inner 64 --chunk-size 8 --chunk-rank 1"
         " --window-len 16 --mem-len 32 --tokens-per-sample 32 --batch-size 4 --dropout 0.1"
         " --log-interval 1 --validate-interval 0 --train-data " +
         std::string(TLS_TEST_DATA_DIR) + "/english.txt";
}

std::vector<double> losses(const std::string& metrics_file) {
  std::vector<double> out;
  std::istringstream in(read_file(metrics_file));
  std::string line;
  const std::regex field("\"loss\": ([-0-9.eE+]+)");
  std::smatch m;
  while (std::getline(in, line))
    if (std::regex_search(line, m, field)) out.push_back(std::stod(m[1]));
  return out;
}

double eval_bpc(const std::string& command) {
  const ProcessResult r = run_command(command);
  EXPECT_EQ(r.exit_code, 0) << r.output;
  std::smatch m;
  const std::string last = last_line(r.output);
  if (!std::regex_match(last, m, std::regex("bpc ([0-9.]+) tokens ([0-9]+)"))) {
    ADD_FAILURE() << "no bpc line in: " << r.output;
    return 0;
  }
  return std::stod(m[1]);
}

// float32 training on two backends: per-step losses agree to float32 summation-order noise,
// which grows over the steps (here below 1e-6 measured on the emulator; 1e-4 leaves a real
// GPU's different exp/log rounding room while a wrong mask or gradient moves them by 1e-3).
void expect_same_losses(const std::vector<double>& got, const std::vector<double>& want) {
  ASSERT_EQ(got.size(), want.size());
  for (size_t i = 0; i < got.size(); ++i)
    EXPECT_NEAR(got[i], want[i], 1e-4 * std::abs(want[i])) << "step " << i + 1;
}

class CudaProgram : public ::testing::Test {
 protected:
  void SetUp() override {
    if (cuda_device_count() == 0) GTEST_SKIP() << cuda_unavailable_reason();
  }
};

TEST_F(CudaProgram, TrainsResumesAndEvaluatesLikeTheCpuBackend) {
  const std::string dir = scratch_dir("cuda_program");
  const std::string cpu = tls_dist_binary() + " train" + model_flags();
  const std::string gpu = cuda_binary() + " train --device cuda" + model_flags();
  ProcessResult r =
      run_command(cpu + " --max-update 6 --save-interval 6 --save-dir " + dir + "/cpu");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  // Five updates on the GPU, a checkpoint from device memory, then a resumed sixth.
  r = run_command(gpu + " --max-update 5 --save-interval 5 --save-dir " + dir + "/gpu");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  ASSERT_TRUE(std::filesystem::exists(dir + "/gpu/checkpoint_5.h5")) << r.output;
  r = run_command(gpu + " --max-update 6 --save-interval 6 --save-dir " + dir + "/gpu");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("resum"), std::string::npos) << r.output;
  expect_same_losses(losses(dir + "/gpu/metrics.jsonl"), losses(dir + "/cpu/metrics.jsonl"));

  // Eval of the GPU's checkpoint on both backends, and of the CPU's on the GPU.
  const std::string valid = dir + "/valid.txt";
  std::ofstream(valid, std::ios::binary)
      << read_file(std::string(TLS_TEST_DATA_DIR) + "/english.txt").substr(0, 4000);
  const std::string data = " --data " + valid;
  const double gpu_on_gpu = eval_bpc(cuda_binary() + " eval --device cuda --checkpoint " + dir +
                                     "/gpu/checkpoint_last.h5" + data);
  const double gpu_on_cpu =
      eval_bpc(tls_dist_binary() + " eval --checkpoint " + dir + "/gpu/checkpoint_last.h5" + data);
  const double cpu_on_gpu = eval_bpc(cuda_binary() + " eval --device cuda --checkpoint " + dir +
                                     "/cpu/checkpoint_last.h5" + data);
  EXPECT_NEAR(gpu_on_gpu, gpu_on_cpu, 1e-6);
  EXPECT_NEAR(cpu_on_gpu, gpu_on_cpu, 1e-3) << "checkpoints of the two runs";
}

TEST_F(CudaProgram, SequenceParallelOverNcclFollowsOneCpuProcess) {
  if (cuda_device_count() < 2) GTEST_SKIP() << "two ranks need two GPUs (NCCL: one per rank)";
  const std::string dir = scratch_dir("cuda_program_sp");
  ProcessResult r = run_command(tls_dist_binary() + " train" + model_flags() +
                                " --max-update 3 --save-interval 0 --save-dir " + dir + "/cpu");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  r = run_command("mpirun -n 2 " + cuda_binary() + " train --device cuda --sp 2" + model_flags() +
                  " --max-update 3 --save-interval 0 --save-dir " + dir + "/gpu");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  expect_same_losses(losses(dir + "/gpu/metrics.jsonl"), losses(dir + "/cpu/metrics.jsonl"));
}

// Activation checkpointing with bf16 GEMM operands on the GPU follows the same run on the CPU
// (bf16 rounding is the same round-to-nearest-even on both; the products' summation order is
// not, hence 1e-3), and generate samples from the GPU's checkpoint on the GPU.
TEST_F(CudaProgram, CheckpointedBf16TrainingAndGenerationRun) {
  const std::string dir = scratch_dir("cuda_program_bf16");
  const std::string flags = model_flags() +
                            " --activation-checkpointing --precision bf16 --max-update 3"
                            " --save-interval 3 --save-dir ";
  ProcessResult r = run_command(tls_dist_binary() + " train" + flags + dir + "/cpu");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  r = run_command(cuda_binary() + " train --device cuda" + flags + dir + "/gpu");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  const std::vector<double> got = losses(dir + "/gpu/metrics.jsonl"),
                            want = losses(dir + "/cpu/metrics.jsonl");
  ASSERT_EQ(got.size(), want.size());
  for (size_t i = 0; i < got.size(); ++i)
    EXPECT_NEAR(got[i], want[i], 1e-3 * std::abs(want[i])) << "step " << i + 1;

  const std::string gen = " generate --checkpoint " + dir +
                          "/gpu/checkpoint_last.h5 --prompt 'The ' --max-new-bytes 24 --top-k 5";
  const ProcessResult on_gpu = run_command(cuda_binary() + gen + " --device cuda");
  ASSERT_EQ(on_gpu.exit_code, 0) << on_gpu.output;
  EXPECT_EQ(on_gpu.output.rfind("The ", 0), 0u) << on_gpu.output;
  EXPECT_GE(on_gpu.output.size(), 4u + 24u);
#ifdef TLS_CUDA_EMULATED
  // The emulator computes with the host's arithmetic, so the samples match the CPU's exactly.
  const ProcessResult on_cpu = run_command(tls_dist_binary() + gen);
  EXPECT_EQ(on_gpu.output, on_cpu.output);
#endif
}

// An ordinary error on one rank while its halo transfers are posted: the job ends with that
// rank's error. (Were unwinding to wait for the transfers, it would launch them while the other
// rank waits in an NCCL all-gather for this one, and both would hang until the wall time.)
TEST_F(CudaProgram, AnErrorOnOneRankEndsTheJobInsteadOfHangingInNccl) {
  if (cuda_device_count() < 2) GTEST_SKIP() << "two ranks need two GPUs (NCCL: one per rank)";
  const std::string dir = scratch_dir("cuda_program_error");
  const ProcessResult r =
      run_command("TLS_FAULT_INJECT=halo_posted_throw_rank1 mpirun -n 2 -x TLS_FAULT_INJECT " +
                      cuda_binary() + " train --device cuda --sp 2" + model_flags() +
                      " --max-update 3 --save-interval 0 --save-dir " + dir + "/gpu",
                  120);
  EXPECT_NE(r.exit_code, 124) << "the job hung: " << r.output;
  EXPECT_NE(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("error on rank 1: TLS_FAULT_INJECT: rank 1 fails at halo_posted"),
            std::string::npos)
      << r.output;
}

}  // namespace
}  // namespace tls::testing

namespace tls::testing {
namespace {

#ifdef TLS_CUDA_EMULATED
// More ranks on a node than GPUs: one clear line naming the rule, not NCCL's "invalid usage".
// (The emulator can pretend to be a node with one GPU; a real machine cannot be made one.)
TEST_F(CudaProgram, MoreRanksThanGpusOnANodeIsAClearError) {
  const std::string dir = scratch_dir("cuda_program_ranks");
  const ProcessResult r =
      run_command("TLS_CUDA_EMULATOR_DEVICES=1 mpirun -n 2 -x TLS_CUDA_EMULATOR_DEVICES " +
                  cuda_binary() + " train --device cuda --sp 2" + model_flags() +
                  " --max-update 1 --save-interval 0 --save-dir " + dir + "/gpu");
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.output.find("2 ranks run on this node but it has 1 CUDA device(s)"),
            std::string::npos)
      << r.output;
  EXPECT_FALSE(std::filesystem::exists(dir + "/gpu/metrics.jsonl"));
}
#endif

}  // namespace
}  // namespace tls::testing
