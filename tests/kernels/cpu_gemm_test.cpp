// CPU GEMM (kernels/cpu/gemm.cpp): C = alpha op(A) op(B) + beta C for all four transpose
// combinations on non-square, 3-D-viewed operands, against a triple loop; the bf16 operand mode
// against the same loop on bf16-rounded operands, and the rounding itself.
#include <limits>
#include <type_traits>

#include "cpu_test_util.h"
#include "kernels/cpu/bf16.h"

namespace tls::test {
namespace {

template <class T>
class CpuGemmTest : public KernelTest<T> {};
TYPED_TEST_SUITE(CpuGemmTest, FloatTypes);

// op(A)[i, p] for A stored row-major [ra, ca].
double at(const std::vector<double>& a, int64_t ca, bool trans, int64_t i, int64_t p) {
  return trans ? a[p * ca + i] : a[i * ca + p];
}

// With round_operands the reference multiplies bf16-rounded copies of A and B.
template <class Fixture>
void check_gemm(Fixture* f, int64_t m, int64_t n, int64_t k, double alpha, double beta,
                bool round_operands = false) {
  for (bool ta : {false, true})
    for (bool tb : {false, true}) {
      // A is 3-D: [2, rows/2, cols] when rows is even, else [rows, cols].
      const int64_t ra = ta ? k : m, ca = ta ? m : k, rb = tb ? n : k, cb = tb ? k : n;
      std::vector<int64_t> ashape =
          ra % 2 == 0 ? std::vector<int64_t>{2, ra / 2, ca} : std::vector<int64_t>{ra, ca};
      Tensor a = f->rand(ashape, 11), b = f->rand({rb, cb}, 12), c = f->rand({m, n}, 13);
      auto av = f->host(a), bv = f->host(b);
      const auto cv = f->host(c);
      if (round_operands)
        for (auto* v : {&av, &bv})
          for (double& x : *v) x = cpu::round_to_bf16(static_cast<float>(x));
      std::vector<double> want(m * n);
      for (int64_t i = 0; i < m; ++i)
        for (int64_t j = 0; j < n; ++j) {
          double s = 0.0;
          for (int64_t p = 0; p < k; ++p) s += at(av, ca, ta, i, p) * at(bv, cb, tb, p, j);
          want[i * n + j] = alpha * s + beta * cv[i * n + j];
        }
      f->ops->gemm(ta, tb, alpha, a, b, beta, c);
      expect_close(f->host(c), want, f->tol,
                   "gemm ta=" + std::to_string(ta) + " tb=" + std::to_string(tb));
    }
}

TYPED_TEST(CpuGemmTest, AllTransposes) {
  check_gemm(this, 5, 7, 3, 0.7, -1.3);
  check_gemm(this, 1, 9, 4, -2.0, 0.5);
  check_gemm(this, 37, 53, 29, 1.0, 1.0);
  check_gemm(this, 6, 1, 1, 0.3, 0.0);
}

// Products large enough to be cut into one block of C per OpenMP thread, along the rows (m > n)
// and along the columns (n > m), with sides that are not multiples of the block alignment.
TYPED_TEST(CpuGemmTest, LargeProductsSplitAcrossThreads) {
  check_gemm(this, 301, 70, 123, 0.9, 0.4);
  check_gemm(this, 67, 333, 111, -1.1, 0.0);
}

// --precision bf16: float32 GEMMs multiply bf16-rounded operands (float32 accumulation, so the
// float32 tolerance holds against the rounded reference, while the unrounded product is ~1e-3
// away); float64 GEMMs stay exact.
TYPED_TEST(CpuGemmTest, Bf16ModeRoundsFloat32OperandsOnly) {
  this->ops->set_gemm_inputs(GemmInputs::bf16);
  EXPECT_EQ(this->ops->gemm_inputs(), GemmInputs::bf16);
  constexpr bool rounded = std::is_same_v<TypeParam, float>;
  check_gemm(this, 37, 53, 29, 1.0, 1.0, rounded);
  check_gemm(this, 301, 70, 123, 0.9, 0.4, rounded);
  this->ops->set_gemm_inputs(GemmInputs::exact);
  check_gemm(this, 37, 53, 29, 1.0, 1.0, false);
}

TYPED_TEST(CpuGemmTest, Tf32IsRefusedOnTheCpu) {
  expect_error([&] { this->ops->set_gemm_inputs(GemmInputs::tf32); }, "TF32");
  EXPECT_EQ(this->ops->gemm_inputs(), GemmInputs::exact);
}

TEST(RoundToBf16, NearestEvenAndSpecialValues) {
  EXPECT_EQ(cpu::round_to_bf16(1.0f), 1.0f);
  EXPECT_EQ(cpu::round_to_bf16(-2.5f), -2.5f);
  // bf16 keeps 7 fraction bits: 1 + 2^-7 is representable, 1 + 2^-8 is halfway (to even: 1).
  EXPECT_EQ(cpu::round_to_bf16(1.0f + 0x1p-7f), 1.0f + 0x1p-7f);
  EXPECT_EQ(cpu::round_to_bf16(1.0f + 0x1p-8f), 1.0f);
  EXPECT_EQ(cpu::round_to_bf16(1.0f + 0x1p-7f + 0x1p-8f), 1.0f + 0x1p-6f);  // halfway, to even
  EXPECT_EQ(cpu::round_to_bf16(1.0f + 0x1p-8f + 0x1p-20f), 1.0f + 0x1p-7f);
  EXPECT_EQ(cpu::round_to_bf16(0.0f), 0.0f);
  EXPECT_TRUE(std::isnan(cpu::round_to_bf16(std::numeric_limits<float>::quiet_NaN())));
  EXPECT_EQ(cpu::round_to_bf16(std::numeric_limits<float>::infinity()),
            std::numeric_limits<float>::infinity());
  EXPECT_EQ(cpu::round_to_bf16(std::numeric_limits<float>::max()),
            std::numeric_limits<float>::infinity());
}

TYPED_TEST(CpuGemmTest, BetaZeroIgnoresGarbage) {
  Tensor a = this->rand({4, 3}, 1), b = this->rand({3, 2}, 2);
  Tensor c = this->ops->empty({4, 2}, this->dt);
  this->ops->fill(c, std::numeric_limits<double>::quiet_NaN());
  this->ops->gemm(false, false, 1.0, a, b, 0.0, c);
  EXPECT_TRUE(this->ops->all_finite(c));
}

TYPED_TEST(CpuGemmTest, EmptyInnerDimension) {
  Tensor a = this->zeros({4, 0}), b = this->zeros({0, 2}), c = this->rand({4, 2}, 3);
  std::vector<double> want = this->host(c);
  for (double& v : want) v *= 0.5;
  this->ops->gemm(false, false, 1.0, a, b, 0.5, c);
  expect_close(this->host(c), want, this->tol);
}

TYPED_TEST(CpuGemmTest, ShapeMismatchThrows) {
  Tensor a = this->rand({4, 3}, 1), b = this->rand({4, 2}, 2), c = this->zeros({4, 2});
  expect_error([&] { this->ops->gemm(false, false, 1.0, a, b, 0.0, c); }, "gemm: shape mismatch");
  Tensor b2 = this->rand({3, 2}, 2), c2 = this->zeros({4, 3});
  expect_error([&] { this->ops->gemm(false, false, 1.0, a, b2, 0.0, c2); }, "[4 x 3]");
}

}  // namespace
}  // namespace tls::test
