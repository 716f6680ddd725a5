// The bfloat16 storage type (kernels/bf16.h, DType::bf16): the host conversion and the CPU
// backend's copies against a plain reference (tests/support/bf16_reference.h): round to nearest
// with ties to even, denormals, overflow to infinity, NaN kept NaN (with its sign). Only
// float32 converts; arithmetic ops refuse bfloat16. tests/kernels/cuda_bf16_storage_test.cpp
// runs the same cases on the CUDA backend.
#include <gtest/gtest.h>

#include <bit>
#include <cmath>
#include <string>
#include <vector>

#include "kernels/bf16.h"
#include "kernels/error.h"
#include "kernels/ops.h"
#include "support/bf16_reference.h"

namespace tls::testing {
namespace {

// got (bfloat16 bits) is the rounding of x.
void expect_rounded(float x, uint16_t got) {
  const float as_float = std::bit_cast<float>(static_cast<uint32_t>(got) << 16);
  if (std::isnan(x)) {
    EXPECT_TRUE(std::isnan(as_float)) << std::hex << std::bit_cast<uint32_t>(x);
    EXPECT_EQ(std::signbit(as_float), std::signbit(x)) << std::hex << std::bit_cast<uint32_t>(x);
    return;
  }
  EXPECT_EQ(got, reference_bf16_bits(x)) << std::hex << "float bits " << std::bit_cast<uint32_t>(x);
}

TEST(Bf16Storage, HostConversionRoundsToNearestEven) {
  for (float x : bf16_test_values()) {
    const bfloat16 b = to_bf16(x);
    expect_rounded(x, b.bits);
    const float back = from_bf16(b);  // exact: a bfloat16 is a float32 with 16 zero low bits
    EXPECT_EQ(std::bit_cast<uint32_t>(back), static_cast<uint32_t>(b.bits) << 16);
  }
  EXPECT_EQ(to_bf16(1.0f + 0x1p-8f).bits, 0x3f80u);            // tie, even below
  EXPECT_EQ(to_bf16(1.0f + 0x1p-7f + 0x1p-8f).bits, 0x3f82u);  // tie, odd below: up
  EXPECT_TRUE(std::isinf(from_bf16(to_bf16(3.4e38f))));        // past the largest bfloat16
}

TEST(Bf16Storage, CpuCopyRoundsAndWidensExactly) {
  auto ops = make_cpu_ops();
  const std::vector<float> values = bf16_test_values();
  const int64_t n = static_cast<int64_t>(values.size());
  Tensor f = ops->empty({n}, DType::f32);
  std::copy(values.begin(), values.end(), f.data<float>());
  Tensor b = ops->empty({n}, DType::bf16);
  EXPECT_EQ(b.bytes(), static_cast<size_t>(n) * 2);
  ops->copy(b, f);
  for (int64_t i = 0; i < n; ++i) expect_rounded(values[i], b.data<bfloat16>()[i].bits);
  Tensor wide = ops->empty({n}, DType::f32);
  ops->copy(wide, b);
  const std::vector<double> host = ops->to_host(b);
  for (int64_t i = 0; i < n; ++i) {
    const float want = from_bf16(b.data<bfloat16>()[i]);
    if (std::isnan(want)) {
      EXPECT_TRUE(std::isnan(wide.data<float>()[i]));
      EXPECT_TRUE(std::isnan(host[static_cast<size_t>(i)]));
    } else {
      EXPECT_EQ(wide.data<float>()[i], want);
      EXPECT_EQ(host[static_cast<size_t>(i)], static_cast<double>(want));
    }
  }
}

TEST(Bf16Storage, OnlyFloat32ConvertsAndArithmeticRefuses) {
  auto ops = make_cpu_ops();
  Tensor b = ops->zeros({4}, DType::bf16), d = ops->zeros({4}, DType::f64);
  try {
    ops->copy(b, d);
    ADD_FAILURE() << "float64 -> bfloat16 copied";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("bfloat16 converts to and from float32 only"),
              std::string::npos)
        << e.what();
  }
  EXPECT_THROW(ops->copy(d, b), Error);
  EXPECT_THROW(ops->scale(b, 2.0), Error);
  Tensor rows = ops->zeros({1, 4, 2}, DType::bf16), src = ops->empty({1, 4, 2}, DType::bf16);
  ops->fill(src, 1.5);
  ops->copy_rows(rows, 1, src, 0, 2);  // moves bits: storage, not arithmetic
  EXPECT_EQ(ops->to_host(rows), (std::vector<double>{0, 0, 1.5, 1.5, 1.5, 1.5, 0, 0}));
}

}  // namespace
}  // namespace tls::testing
