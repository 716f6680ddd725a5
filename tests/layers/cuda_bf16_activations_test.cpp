// --precision bf16 on the CUDA backend keeps the backward's activations in bfloat16
// (layers/activation_storage.h), converted on the device:
// - golden files within the bf16 bounds (kGoldenBf16; tests/layers/bf16_activations_test.cpp
//   derives them);
// - two runs are bit-identical (losses and parameters);
// - the peak device memory of training steps, from the allocator pool's counters
//   (cuda_memory), is at most 0.6 of float32's for a model whose activations dominate.
// Without a GPU every test is skipped with the reason (on the CUDA emulator it runs as
// emulated.*, which is where CI measures the memory).
#include <gtest/gtest.h>

#include <cstdio>
#include <string>
#include <vector>

#include "kernels/device.h"
#include "support/bf16_step.h"
#include "support/golden_case.h"
#include "support/require_cuda.h"
#include "support/tiny_model.h"

namespace tls::testing {
namespace {

std::unique_ptr<Ops> bf16_cuda_ops() {
  auto ops = make_ops(Device::cuda, 0);
  ops->set_gemm_inputs(GemmInputs::bf16);
  return ops;
}

TEST(CudaBf16Activations, GoldenWithinBf16Bounds) {
  TLS_REQUIRE_CUDA();
  auto ops = bf16_cuda_ops();
  for (const char* file : {"tiny_preln.h5", "postln_relu_bias_clamp.h5"})
    check_golden(*ops, file, DType::f32, kGoldenBf16);
}

TEST(CudaBf16Activations, TwoRunsAreBitIdentical) {
  TLS_REQUIRE_CUDA();
  const ModelConfig cfg = tiny_training_model(0.1, 0.1);
  auto ops = bf16_cuda_ops();
  std::vector<double> params_a, params_b;
  const std::vector<double> a = bf16_test_steps(*ops, cfg, 2, false, &params_a);
  const std::vector<double> b = bf16_test_steps(*ops, cfg, 2, false, &params_b);
  EXPECT_EQ(a, b);
  EXPECT_EQ(params_a, params_b);
}

// Peak device bytes of one training step in the given GEMM mode.
int64_t device_step_peak(Ops& ops, GemmInputs mode, const ModelConfig& cfg) {
  ops.set_gemm_inputs(mode);
  int64_t base = 0, peak = 0;
  bf16_test_steps(ops, cfg, 1, false, nullptr, [&](bool before) {
    if (before) {
      reset_cuda_memory_peak(0);
      base = cuda_memory(0).used;
    } else {
      peak = cuda_memory(0).peak - base;
    }
  });
  return peak;
}

TEST(CudaBf16Activations, PeakDeviceMemoryAtMostSixTenthsOfFloat32) {
  TLS_REQUIRE_CUDA();
  ModelConfig cfg = tiny_training_model(0.1);  // activations dominate: 12 layers, 256 tokens
  cfg.n_layer = 12;
  cfg.d_model = 64;
  cfg.d_inner = 256;
  cfg.tokens_per_sample = cfg.mem_len = 256;
  auto ops = make_ops(Device::cuda, 0);
  const double f32 = static_cast<double>(device_step_peak(*ops, GemmInputs::exact, cfg));
  const double bf16 = static_cast<double>(device_step_peak(*ops, GemmInputs::bf16, cfg));
  const double tokens = 2.0 * static_cast<double>(cfg.tokens_per_sample);
  std::printf("  device peak per token: float32 %.2f KiB, bf16 activations %.2f KiB (%.3f)\n",
              f32 / tokens / 1024, bf16 / tokens / 1024, bf16 / f32);
  EXPECT_LE(bf16 / f32, 0.6);
}

}  // namespace
}  // namespace tls::testing
