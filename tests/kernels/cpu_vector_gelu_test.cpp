// The float32 GELU rows (kernels/cpu/vector_gelu.cpp) against GELU and its derivative in double:
// relative accuracy over the whole range, the negative tail included (where 1 + erff loses its
// digits), lengths that are not a multiple of the vector width, accumulation into dx, and the
// special values.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>
#include <limits>
#include <vector>

#include "kernels/cpu/vector_gelu.h"

namespace tls::test {
namespace {

// The rows exist only where the CPU has AVX2 + FMA (elsewhere CpuOps uses libm, which
// cpu_norm_act_test covers).
class VectorGelu : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!cpu::gelu_is_vectorised()) GTEST_SKIP() << "this CPU has no AVX2 + FMA";
  }
};

double gelu(double x) { return 0.5 * x * std::erfc(-x / std::sqrt(2.0)); }
double gelu_derivative(double x) {
  return 0.5 * std::erfc(-x / std::sqrt(2.0)) + x * std::exp(-0.5 * x * x) / std::sqrt(2 * M_PI);
}

// Inputs from -12 to 12 on a fine grid, as float.
std::vector<float> grid() {
  std::vector<float> x;
  for (int i = -120000; i <= 120000; ++i) x.push_back(static_cast<float>(i * 1e-4));
  return x;
}

TEST_F(VectorGelu, ForwardIsWithinAFewMillionthsRelativeEverywhere) {
  const std::vector<float> x = grid();
  std::vector<float> y(x.size());
  cpu::gelu_forward_rows(x.data(), y.data(), static_cast<int64_t>(x.size()));
  double worst = 0, worst_at = 0;
  for (size_t i = 0; i < x.size(); ++i) {
    const double want = gelu(x[i]);
    if (std::abs(want) < 1e-35) {  // the far negative tail (x < -12.9): float's denormals
      EXPECT_LE(std::abs(y[i]), 1e-35) << "x = " << x[i];
      continue;
    }
    const double err = std::abs(y[i] - want) / std::abs(want);
    if (err > worst) worst = err, worst_at = x[i];
  }
  // libm's 1 + erff is far off from x = -3 on (all digits lost by x = -8); the rows are not.
  std::printf("worst relative error %.3g at x = %g\n", worst, worst_at);
  EXPECT_LE(worst, 2e-5) << "worst at x = " << worst_at;
  // Where GELU is of order one, every path is close to float's resolution.
  for (size_t i = 0; i < x.size(); ++i) {
    if (std::abs(x[i]) > 3 || x[i] == 0) continue;
    ASSERT_NEAR(y[i], gelu(x[i]), 1e-6 * std::max(1.0, std::abs(gelu(x[i])))) << x[i];
  }
}

TEST_F(VectorGelu, BackwardAccumulatesTheDerivative) {
  const std::vector<float> x = grid();
  std::vector<float> dout(x.size()), dx(x.size());
  for (size_t i = 0; i < x.size(); ++i) {
    dout[i] = static_cast<float>(0.5 + (i % 7) * 0.25);
    dx[i] = static_cast<float>((i % 5) * 0.1);
  }
  const std::vector<float> before = dx;
  cpu::gelu_backward_rows(x.data(), dout.data(), dx.data(), static_cast<int64_t>(x.size()));
  for (size_t i = 0; i < x.size(); ++i) {
    const double want = before[i] + dout[i] * gelu_derivative(x[i]);
    ASSERT_NEAR(dx[i], want, 4e-7 * std::max(1.0, std::abs(want))) << "x = " << x[i];
  }
}

TEST_F(VectorGelu, EveryLengthTakesTheSamePath) {
  const std::vector<float> x = {-2.5f, -1.0f, -0.1f, 0.0f, 0.3f, 1.7f, 4.0f, -6.0f, 2.0f, -3.5f};
  std::vector<float> all(x.size());
  cpu::gelu_forward_rows(x.data(), all.data(), static_cast<int64_t>(x.size()));
  for (size_t n = 1; n <= x.size(); ++n) {
    std::vector<float> part(n);
    cpu::gelu_forward_rows(x.data(), part.data(), static_cast<int64_t>(n));
    for (size_t i = 0; i < n; ++i) EXPECT_EQ(part[i], all[i]) << "n = " << n << ", i = " << i;
  }
}

TEST_F(VectorGelu, SpecialValues) {
  const float inf = std::numeric_limits<float>::infinity(), nan = std::nanf("");
  const std::vector<float> x = {0.0f, -0.0f, inf, -inf, nan, 1e30f, -1e30f, 1e-30f};
  std::vector<float> y(x.size()), dx(x.size(), 0.0f), ones(x.size(), 1.0f);
  cpu::gelu_forward_rows(x.data(), y.data(), static_cast<int64_t>(x.size()));
  cpu::gelu_backward_rows(x.data(), ones.data(), dx.data(), static_cast<int64_t>(x.size()));
  EXPECT_EQ(y[0], 0.0f);
  EXPECT_EQ(y[1], 0.0f);
  EXPECT_EQ(y[2], inf);
  EXPECT_EQ(y[3], 0.0f);
  EXPECT_TRUE(std::isnan(y[4]));
  EXPECT_EQ(y[5], 1e30f);
  EXPECT_EQ(y[6], 0.0f);
  EXPECT_NEAR(y[7], 0.5e-30f, 1e-36f);
  EXPECT_FLOAT_EQ(dx[0], 0.5f);
  EXPECT_FLOAT_EQ(dx[2], 1.0f);
  EXPECT_EQ(dx[3], 0.0f);
  EXPECT_TRUE(std::isnan(dx[4]));
  EXPECT_FLOAT_EQ(dx[5], 1.0f);
  EXPECT_EQ(dx[6], 0.0f);
}

}  // namespace
}  // namespace tls::test
