// Saving from the GPU (checkpoint/checkpoint_writer.h): device parameters, moments and caches are
// copied to host buffers page-locked once (Ops::pin_host) with one transfer each in their own
// dtype (Ops::copy_to_host_bytes), the buffers stay locked for the next save and are released
// with the saver, and what a background save of device tensors writes loads on the CPU bit for
// bit. Without a GPU the test is skipped with the reason (on the CUDA emulator it runs as
// emulated.*, which also counts the locked bytes).
#include <gtest/gtest.h>

#include <vector>

#include "checkpoint/background_save.h"
#include "checkpoint/checkpoint_dir.h"
#include "checkpoint/checkpoint_reader.h"
#include "checkpoint/checkpoint_test_util.h"
#include "kernels/device.h"
#include "support/require_cuda.h"
#ifdef TLS_CUDA_EMULATED
#include <cuda_runtime.h>
#endif

namespace tls {
namespace {

using testing::FullModel;

TEST(CudaCheckpoint, ADeviceStateIsSavedThroughPinnedBuffersAndLoadsOnTheCpuBitForBit) {
  TLS_REQUIRE_CUDA();
  auto gpu = make_ops(Device::cuda, 0);
  auto cpu = make_cpu_ops();
  testing::TempDir dir;
  FullModel on_gpu(*gpu, testing::tiny_checkpoint_model(), DType::f32, 2);
  CheckpointContents saved = on_gpu.contents(5);
  testing::fill_contents(*gpu, saved, 4.0);
#ifdef TLS_CUDA_EMULATED
  const size_t locked_before = tls_emu::registered_host_bytes();
#endif
  {
    BackgroundSaver saver(Topology::single());
    saver.start(dir.path(), 0, saved, *gpu);
    saver.wait_for_snapshot();
    EXPECT_EQ(saver.wait(), dir.file(checkpoint_file_name(5)));
#ifdef TLS_CUDA_EMULATED
    const size_t locked = tls_emu::registered_host_bytes() - locked_before;
    EXPECT_GT(locked, 0u) << "the snapshot buffers were not page-locked";
    saver.start(dir.path(), 0, on_gpu.contents(6), *gpu);  // the same buffers again
    saver.wait();
    EXPECT_EQ(tls_emu::registered_host_bytes() - locked_before, locked);
#endif
  }
#ifdef TLS_CUDA_EMULATED
  EXPECT_EQ(tls_emu::registered_host_bytes(), locked_before) << "buffers left page-locked";
#endif
  FullModel on_cpu(*cpu, testing::tiny_checkpoint_model(), DType::f32, 2);
  CheckpointContents loaded = on_cpu.contents();
  load_checkpoint(dir.file(checkpoint_file_name(5)), loaded, Topology::single(), *cpu);
  EXPECT_EQ(loaded.step, 5);
  for (size_t i = 0; i < saved.params.size(); ++i) {
    EXPECT_EQ(cpu->to_host(loaded.params[i]->value), gpu->to_host(saved.params[i]->value))
        << saved.params[i]->name;
    EXPECT_EQ(cpu->to_host((*loaded.exp_avg_sq)[i]), gpu->to_host((*saved.exp_avg_sq)[i]));
  }
  for (size_t l = 0; l < saved.caches->size(); ++l)
    EXPECT_EQ(cpu->to_host((*loaded.caches)[l]), gpu->to_host((*saved.caches)[l]));
}

}  // namespace
}  // namespace tls
