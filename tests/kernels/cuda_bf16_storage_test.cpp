// The bfloat16 storage type on the CUDA backend: float32 -> bfloat16 copies round on the device
// as the plain reference does (tests/support/bf16_reference.h: nearest, ties to even, denormals,
// overflow to infinity, NaN stays NaN), bfloat16 -> float32 widens exactly, host transfers and
// row copies move bfloat16, and only float32 converts. Without a GPU every test is skipped with
// the reason (on the CUDA emulator it runs as emulated.*).
#include <gtest/gtest.h>

#include <bit>
#include <cmath>
#include <string>
#include <vector>

#include "kernels/bf16.h"
#include "kernels/device.h"
#include "kernels/error.h"
#include "support/bf16_reference.h"
#include "support/require_cuda.h"

namespace tls::testing {
namespace {

TEST(CudaBf16Storage, DeviceCopyRoundsToNearestEvenAndWidensExactly) {
  TLS_REQUIRE_CUDA();
  auto ops = make_ops(Device::cuda, 0);
  const std::vector<float> values = bf16_test_values();
  const int64_t n = static_cast<int64_t>(values.size());
  Tensor f = ops->empty({n}, DType::f32);
  ops->from_host(f, std::vector<double>(values.begin(), values.end()));
  Tensor b = ops->empty({n}, DType::bf16);
  ops->copy(b, f);  // on the device
  Tensor wide = ops->empty({n}, DType::f32);
  ops->copy(wide, b);
  const std::vector<double> stored = ops->to_host(b), widened = ops->to_host(wide);
  for (int64_t i = 0; i < n; ++i) {
    const float x = values[static_cast<size_t>(i)];
    const double got = stored[static_cast<size_t>(i)], wide_got = widened[static_cast<size_t>(i)];
    EXPECT_TRUE(wide_got == got || (std::isnan(got) && std::isnan(wide_got))) << i;
    if (std::isnan(x)) {
      EXPECT_TRUE(std::isnan(got)) << std::hex << std::bit_cast<uint32_t>(x);
      continue;
    }
    const float want = std::bit_cast<float>(static_cast<uint32_t>(reference_bf16_bits(x)) << 16);
    EXPECT_EQ(std::bit_cast<uint64_t>(got), std::bit_cast<uint64_t>(static_cast<double>(want)))
        << std::hex << "float bits " << std::bit_cast<uint32_t>(x);
  }
}

TEST(CudaBf16Storage, HostTransfersRowsAndRefusals) {
  TLS_REQUIRE_CUDA();
  auto ops = make_ops(Device::cuda, 0);
  Tensor src = ops->empty({1, 4, 2}, DType::bf16), rows = ops->zeros({1, 4, 2}, DType::bf16);
  ops->from_host(src, {1, 2, 3, 4, 5, 6, 7, 1.0 + 1.0 / 256});  // the last is a tie: to 1
  ops->copy_rows(rows, 1, src, 0, 2);
  EXPECT_EQ(ops->to_host(rows), (std::vector<double>{0, 0, 1, 2, 3, 4, 0, 0}));
  EXPECT_EQ(ops->to_host(src).back(), 1.0);
  ops->fill(rows, -2.5);
  EXPECT_EQ(ops->to_host(rows), std::vector<double>(8, -2.5));
  Tensor d = ops->zeros({1, 4, 2}, DType::f64);
  try {
    ops->copy(d, src);
    ADD_FAILURE() << "bfloat16 -> float64 copied";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("bfloat16 converts to and from float32 only"),
              std::string::npos)
        << e.what();
  }
  EXPECT_THROW(ops->scale(src, 2.0), Error);
}

}  // namespace
}  // namespace tls::testing
