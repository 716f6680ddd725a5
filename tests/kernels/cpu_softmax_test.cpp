// CPU softmax family (kernels/cpu/softmax.cpp): softmax, log_softmax, nll and chunk softmax
// against plain loops; backwards against central differences in float64, accumulating.
#include <array>

#include "cpu_test_util.h"

namespace tls::test {
namespace {

template <class T>
class CpuSoftmaxTest : public KernelTest<T> {};
TYPED_TEST_SUITE(CpuSoftmaxTest, FloatTypes);

std::vector<double> softmax_ref(const std::vector<double>& x, int64_t rows, int64_t cols,
                                bool log) {
  std::vector<double> y(x.size());
  for (int64_t i = 0; i < rows; ++i) {
    double s = 0.0;
    for (int64_t j = 0; j < cols; ++j) s += std::exp(x[i * cols + j]);
    for (int64_t j = 0; j < cols; ++j)
      y[i * cols + j] = log ? x[i * cols + j] - std::log(s) : std::exp(x[i * cols + j]) / s;
  }
  return y;
}

// Softmax over the c rows of each chunk, per column, of [B, N, cols].
std::vector<double> chunk_softmax_ref(const std::vector<double>& x, int64_t b, int64_t n,
                                      int64_t cols, int64_t c) {
  std::vector<double> y(x.size());
  for (int64_t g = 0; g < b * n / c; ++g)
    for (int64_t j = 0; j < cols; ++j) {
      double s = 0.0;
      for (int64_t i = 0; i < c; ++i) s += std::exp(x[(g * c + i) * cols + j]);
      for (int64_t i = 0; i < c; ++i)
        y[(g * c + i) * cols + j] = std::exp(x[(g * c + i) * cols + j]) / s;
    }
  return y;
}

const std::vector<std::pair<int64_t, int64_t>> kShapes = {{1, 1}, {1, 13}, {7, 5}, {33, 70}};

TYPED_TEST(CpuSoftmaxTest, ForwardMatchesLoop) {
  for (auto [rows, cols] : kShapes) {
    Tensor x = this->rand({rows, cols}, 1), out = this->zeros({rows, cols});
    const auto xv = this->host(x);
    this->ops->softmax_forward(out, x);
    expect_close(this->host(out), softmax_ref(xv, rows, cols, false), this->tol, "softmax");
    this->ops->log_softmax_forward(out, x);
    expect_close(this->host(out), softmax_ref(xv, rows, cols, true), this->tol, "log_softmax");
  }
}

TYPED_TEST(CpuSoftmaxTest, LargeLogitsAreStable) {
  Tensor x = this->tensor({1, 3}, {1000.0, 999.0, 998.0}), out = this->zeros({1, 3});
  this->ops->softmax_forward(out, x);
  expect_close(this->host(out), softmax_ref({2.0, 1.0, 0.0}, 1, 3, false), this->tol);
  EXPECT_TRUE(this->ops->all_finite(out));
}

TYPED_TEST(CpuSoftmaxTest, NllForward) {
  const int64_t rows = 6, cols = 9;
  Tensor lp = this->rand({2, 3, cols}, 2), losses = this->rand({2, 3}, 3);
  Tensor t = this->ids({3, 0, -1, 8, 5, -100});
  const auto lv = this->host(lp);
  std::vector<double> want(rows);
  const int32_t* tv = t.data<int32_t>();
  for (int64_t i = 0; i < rows; ++i) want[i] = tv[i] < 0 ? 0.0 : -lv[i * cols + tv[i]];
  this->ops->nll_forward(losses, lp, t);
  expect_close(this->host(losses), want, this->tol);
  Tensor bad = this->ids({3, 0, 9, 8, 5, 1});
  expect_error([&] { this->ops->nll_forward(losses, lp, bad); }, "target 9");
}

TEST(CpuSoftmax, SoftmaxBackwardMatchesFiniteDifferences) {
  auto ops = make_cpu_ops();
  for (auto [rows, cols] : kShapes) {
    auto xv = random_nonzero(rows * cols, 4), w = random_nonzero(rows * cols, 5);
    Tensor x = ops->empty({rows, cols}, DType::f64), dout = ops->empty({rows, cols}, DType::f64);
    ops->from_host(x, xv);
    ops->from_host(dout, w);
    Tensor out = ops->zeros({rows, cols}, DType::f64), dx = ops->zeros({rows, cols}, DType::f64);
    ops->softmax_forward(out, x);
    ops->softmax_backward(dx, dout, out);
    auto num = numeric_grad(xv, [&](const std::vector<double>& v) {
      return dot(softmax_ref(v, rows, cols, false), w);
    });
    expect_close(ops->to_host(dx), num, 1e-7, "softmax dx");
    ops->softmax_backward(dx, dout, out);
    for (double& v : num) v *= 2;
    expect_close(ops->to_host(dx), num, 1e-7, "softmax dx twice");
  }
}

TEST(CpuSoftmax, LogSoftmaxNllBackwardMatchesFiniteDifferences) {
  auto ops = make_cpu_ops();
  const int64_t rows = 5, cols = 7;
  const double scale = 0.37;
  const std::vector<int32_t> tv = {2, -1, 0, 6, 3};
  auto xv = random_nonzero(rows * cols, 6);
  Tensor x = ops->empty({rows, cols}, DType::f64), lp = ops->zeros({rows, cols}, DType::f64);
  ops->from_host(x, xv);
  ops->log_softmax_forward(lp, x);
  Tensor t = ops->empty({rows}, DType::i32);
  std::copy(tv.begin(), tv.end(), t.data<int32_t>());
  Tensor dx = ops->zeros({rows, cols}, DType::f64);
  ops->log_softmax_nll_backward(dx, lp, t, scale);
  auto num = numeric_grad(xv, [&](const std::vector<double>& v) {
    const auto l = softmax_ref(v, rows, cols, true);
    double s = 0.0;
    for (int64_t i = 0; i < rows; ++i)
      if (tv[i] >= 0) s -= l[i * cols + tv[i]];
    return scale * s;
  });
  expect_close(ops->to_host(dx), num, 1e-7, "dlogits");
  for (int64_t j = 0; j < cols; ++j) EXPECT_EQ(ops->to_host(dx)[1 * cols + j], 0.0);
  ops->log_softmax_nll_backward(dx, lp, t, scale);
  for (double& v : num) v *= 2;
  expect_close(ops->to_host(dx), num, 1e-7, "dlogits twice");
}

TYPED_TEST(CpuSoftmaxTest, LogSoftmaxNllBackwardMatchesLoop) {
  const int64_t rows = 4, cols = 11;
  Tensor lp = this->zeros({rows, cols}), x = this->rand({rows, cols}, 7);
  this->ops->log_softmax_forward(lp, x);
  Tensor t = this->ids({10, 0, -3, 4});
  Tensor d = this->rand({rows, cols}, 8);
  auto want = this->host(d);
  const auto lv = this->host(lp);
  const int32_t* tv = t.data<int32_t>();
  for (int64_t i = 0; i < rows; ++i)
    for (int64_t j = 0; j < cols; ++j)
      if (tv[i] >= 0) want[i * cols + j] += 2.5 * (std::exp(lv[i * cols + j]) - (j == tv[i]));
  this->ops->log_softmax_nll_backward(d, lp, t, 2.5);
  expect_close(this->host(d), want, this->tol);
}

TYPED_TEST(CpuSoftmaxTest, ChunkSoftmaxForward) {
  for (auto [b, n, cols, c] : std::vector<std::array<int64_t, 4>>{
           {1, 1, 1, 1}, {1, 6, 3, 3}, {2, 12, 5, 4}, {3, 10, 17, 5}}) {
    Tensor x = this->rand({b, n, cols}, 9), out = this->zeros({b, n, cols});
    this->ops->chunk_softmax_forward(out, x, c);
    expect_close(this->host(out), chunk_softmax_ref(this->host(x), b, n, cols, c), this->tol);
  }
  Tensor x = this->rand({1, 6, 2}, 1), out = this->zeros({1, 6, 2});
  expect_error([&] { this->ops->chunk_softmax_forward(out, x, 4); }, "chunk_size 4");
}

TEST(CpuSoftmax, ChunkSoftmaxBackwardMatchesFiniteDifferences) {
  auto ops = make_cpu_ops();
  const int64_t b = 2, n = 9, cols = 5, c = 3;
  auto xv = random_nonzero(b * n * cols, 10), w = random_nonzero(b * n * cols, 11);
  Tensor x = ops->empty({b, n, cols}, DType::f64), dout = ops->empty({b, n, cols}, DType::f64);
  ops->from_host(x, xv);
  ops->from_host(dout, w);
  Tensor out = ops->zeros({b, n, cols}, DType::f64), dx = ops->zeros({b, n, cols}, DType::f64);
  ops->chunk_softmax_forward(out, x, c);
  ops->chunk_softmax_backward(dx, dout, out, c);
  auto num = numeric_grad(xv, [&](const std::vector<double>& v) {
    return dot(chunk_softmax_ref(v, b, n, cols, c), w);
  });
  expect_close(ops->to_host(dx), num, 1e-7, "chunk softmax dx");
  ops->chunk_softmax_backward(dx, dout, out, c);
  for (double& v : num) v *= 2;
  expect_close(ops->to_host(dx), num, 1e-7, "chunk softmax dx twice");
}

}  // namespace
}  // namespace tls::test
