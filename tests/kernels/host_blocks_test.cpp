// The large-block cache behind host tensors (kernels/host_blocks.h): a freed block of the same
// size is handed out again instead of a fresh mmap, and what it keeps never takes the process
// past the most its live blocks have needed.
#include "kernels/host_blocks.h"

#include <gtest/gtest.h>

#include <cstdint>
#include <cstring>

#include "kernels/tensor.h"

namespace tls {
namespace {

constexpr size_t kMiB = size_t{1} << 20;

TEST(HostBlocks, AFreedBlockIsReusedForTheSameSize) {
  const auto before = host_blocks::stats();
  void* a = host_blocks::allocate(64 * kMiB);
  ASSERT_NE(a, nullptr);
  EXPECT_EQ(reinterpret_cast<uintptr_t>(a) % 64, 0u);
  std::memset(a, 1, 64 * kMiB);
  host_blocks::release(a, 64 * kMiB);
  EXPECT_EQ(host_blocks::stats().kept_bytes, before.kept_bytes + static_cast<int64_t>(64 * kMiB));
  void* b = host_blocks::allocate(64 * kMiB);
  EXPECT_EQ(b, a);
  EXPECT_EQ(host_blocks::stats().reuses, before.reuses + 1);
  EXPECT_EQ(host_blocks::stats().kept_bytes, before.kept_bytes);
  host_blocks::release(b, 64 * kMiB);
}

TEST(HostBlocks, KeptBlocksNeverRaiseThePeak) {
  // Live peak so far in this process: at most the 64 MiB of the test above. A 96 MiB block
  // raises it to 96 MiB; keeping a 64 MiB block beside it would exceed that, so it goes back.
  void* big = host_blocks::allocate(96 * kMiB);
  ASSERT_NE(big, nullptr);
  EXPECT_EQ(host_blocks::stats().kept_bytes, 0);
  host_blocks::release(big, 96 * kMiB);
  // Two 48 MiB blocks fit under the 96 MiB high water together with nothing kept.
  void* x = host_blocks::allocate(48 * kMiB);
  void* y = host_blocks::allocate(48 * kMiB);
  EXPECT_EQ(host_blocks::stats().kept_bytes, 0) << "the 96 MiB block should have gone back";
  host_blocks::release(x, 48 * kMiB);
  host_blocks::release(y, 48 * kMiB);
  EXPECT_EQ(host_blocks::stats().kept_bytes, static_cast<int64_t>(96 * kMiB));
}

TEST(HostBlocks, LargeTensorsGoThroughTheCacheAndCountAsLive) {
  const int64_t rows = (40 << 20) / 4 / 256;  // a 40 MiB float32 tensor
  const int64_t live_before = host_tensor_memory().live;
  const void* first = nullptr;
  {
    Tensor t = Tensor::zeros({rows, 256}, DType::f32);
    first = t.raw();
    EXPECT_EQ(host_tensor_memory().live, live_before + rows * 256 * 4);
    EXPECT_EQ(t.data<float>()[rows * 256 - 1], 0.0f);
  }
  EXPECT_EQ(host_tensor_memory().live, live_before);
  Tensor again = Tensor::zeros({rows, 256}, DType::f32);
  EXPECT_EQ(again.raw(), first) << "the freed block was not reused";
  EXPECT_EQ(again.data<float>()[12345], 0.0f) << "zeros() must clear a reused block";
}

}  // namespace
}  // namespace tls
