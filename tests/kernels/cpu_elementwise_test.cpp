// CPU elementwise ops and reductions (kernels/cpu/elementwise.cpp) against plain loops.
#include <limits>

#include "cpu_test_util.h"

namespace tls::test {
namespace {

template <class T>
class CpuElementwiseTest : public KernelTest<T> {};
TYPED_TEST_SUITE(CpuElementwiseTest, FloatTypes);

const std::vector<std::vector<int64_t>> kShapes = {{1, 1}, {1, 13}, {3, 5, 7}, {129, 67}};

TYPED_TEST(CpuElementwiseTest, ScaleAndAxpy) {
  for (const auto& shape : kShapes) {
    Tensor x = this->rand(shape, 1), y = this->rand(shape, 2);
    const std::vector<double> xv = this->host(x), yv = this->host(y);
    std::vector<double> scaled = xv, yy = yv;
    for (size_t i = 0; i < xv.size(); ++i) {
      scaled[i] *= -0.75;
      yy[i] += 1.5 * xv[i];
    }
    this->ops->axpy(1.5, x, y);
    expect_close(this->host(y), yy, this->tol, "axpy");
    this->ops->scale(x, -0.75);
    expect_close(this->host(x), scaled, this->tol, "scale");
  }
  Tensor a = this->rand({3}, 3), b = this->rand({4}, 4);
  expect_error([&] { this->ops->axpy(1.0, a, b); }, "axpy");
}

TYPED_TEST(CpuElementwiseTest, AddBiasAndSumRows) {
  for (const auto& shape : kShapes) {
    Tensor y = this->rand(shape, 5);
    const int64_t cols = shape.back(), rows = y.numel() / cols;
    Tensor bias = this->rand({cols}, 6);
    const std::vector<double> yv = this->host(y), bv = this->host(bias);
    std::vector<double> want = yv, colsum(cols, 0.0);
    for (int64_t i = 0; i < rows; ++i)
      for (int64_t j = 0; j < cols; ++j) {
        want[i * cols + j] += bv[j];
        colsum[j] += yv[i * cols + j];
      }
    Tensor dbias = this->tensor({cols}, bv);
    this->ops->sum_rows(y, dbias);
    std::vector<double> acc = bv;
    for (int64_t j = 0; j < cols; ++j) acc[j] += colsum[j];
    expect_close(this->host(dbias), acc, this->tol, "sum_rows");
    this->ops->sum_rows(y, dbias);  // accumulates
    for (int64_t j = 0; j < cols; ++j) acc[j] += colsum[j];
    expect_close(this->host(dbias), acc, this->tol, "sum_rows twice");
    this->ops->add_bias(y, bias);
    expect_close(this->host(y), want, this->tol, "add_bias");
  }
  Tensor y = this->rand({2, 3}, 7), bias = this->rand({4}, 8);
  expect_error([&] { this->ops->add_bias(y, bias); }, "add_bias");
  expect_error([&] { this->ops->sum_rows(y, bias); }, "sum_rows");
}

TYPED_TEST(CpuElementwiseTest, Reductions) {
  for (const auto& shape : kShapes) {
    Tensor x = this->rand(shape, 9);
    const std::vector<double> xv = this->host(x);
    double s = 0.0, ss = 0.0;
    for (double v : xv) {
      s += v;
      ss += v * v;
    }
    EXPECT_NEAR(this->ops->sum(x), s, 1e-12 * std::max(1.0, std::abs(s)));
    EXPECT_NEAR(this->ops->sum_squares(x), ss, 1e-12 * ss);
    EXPECT_TRUE(this->ops->all_finite(x));
  }
}

TYPED_TEST(CpuElementwiseTest, AllFinite) {
  for (double bad :
       {std::numeric_limits<double>::quiet_NaN(), std::numeric_limits<double>::infinity(),
        -std::numeric_limits<double>::infinity()}) {
    std::vector<double> v = random_nonzero(37, 10);
    v[36] = bad;
    EXPECT_FALSE(this->ops->all_finite(this->tensor({37}, v))) << bad;
  }
}

TEST(CpuElementwise, RejectsMixedDtypes) {
  auto ops = make_cpu_ops();
  Tensor a = ops->zeros({4}, DType::f32), b = ops->zeros({4}, DType::f64);
  expect_error([&] { ops->axpy(1.0, a, b); }, "dtype");
  Tensor i = ops->zeros({4}, DType::i32);
  expect_error([&] { ops->scale(i, 2.0); }, "scale");
}

}  // namespace
}  // namespace tls::test
