// mpi-ranks: 2
// Every parallel layout computes the same function as one process with the CUDA backend on
// every rank (docs/DESIGN.md section 3): each rank runs CudaOps on its device and the topology's
// multi-process groups move device tensors over NCCL (with_device_comms); for every layout
// (tp, sp, dp) of 2 ranks that fits, the loss, every parameter gradient and the parameters after
// the AdamW steps must equal one process on the CPU backend, on every rank, within the bounds of
// parallel_model_mpi_test.cpp (tests/support/parallel_model_case.h: compare).
//
// That suite's scenarios without the checkpointed variants (they only change what the backward
// recomputes, which the CPU suite covers): the golden file sp4_ready.h5 (6 heads: 3 per rank at
// tp = 2; sp = 2 slices of 32 with a 16-token halo), a random post-LN model (ReLU, biases, both
// clamps) with dropout in float64, and a random pre-LN model (GELU) with dropout in float32.
// How far rounding alone moves the float32 one on the CPU backend (float32 against float64, or
// every weight perturbed by 1e-7 relative): losses 1e-8, gradients 4.3e-7 of the largest,
// parameters 1.7e-5: at least 6 times under the float32 bounds (1e-5, parameters 1e-4).
//
// Without a GPU for every rank every test is skipped with the reason, on every rank.
#include <gtest/gtest.h>
#include <mpi.h>

#include <string>

#include "kernels/device.h"
#include "support/parallel_model_case.h"

namespace tls::testing {
namespace {

// Why this world cannot run here, or empty: NCCL needs a GPU of its own for each rank.
std::string missing_gpus() {
  int world = 1;
  MPI_Comm_size(MPI_COMM_WORLD, &world);
  const int count = cuda_device_count();
  if (count == 0) return cuda_unavailable_reason();
  if (count < world)
    return std::to_string(world) + " ranks need " + std::to_string(world) + " GPUs, " +
           std::to_string(count) + " found";
  return "";
}

#define TLS_SKIP_WITHOUT_GPUS() \
  if (const std::string why = missing_gpus(); !why.empty()) GTEST_SKIP() << why

TEST(CudaParallelModel, GoldenSp4ReadyFloat64) {
  TLS_SKIP_WITHOUT_GPUS();
  compare(golden_scenario("sp4_ready.h5"), DType::f64, 1e-10, Device::cuda);
}

TEST(CudaParallelModel, RandomPostLnDropoutFloat64) {
  TLS_SKIP_WITHOUT_GPUS();
  compare(random_scenario(true, 0.1), DType::f64, 1e-10, Device::cuda);
}

TEST(CudaParallelModel, RandomPreLnDropoutFloat32) {
  TLS_SKIP_WITHOUT_GPUS();
  compare(random_scenario(false, 0.1), DType::f32, 1e-5, Device::cuda);
}

}  // namespace
}  // namespace tls::testing
