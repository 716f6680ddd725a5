// CPU LayerNorm and activations (kernels/cpu/layernorm.cpp, activation.cpp): forwards against
// plain loops in float32/float64, backwards against central differences in float64, and the
// accumulate (+=) semantics of every gradient.
#include "cpu_test_util.h"

namespace tls::test {
namespace {

template <class T>
class CpuNormActTest : public KernelTest<T> {};
TYPED_TEST_SUITE(CpuNormActTest, FloatTypes);

struct LnRef {
  std::vector<double> out, mean, rstd;
};

LnRef layernorm_ref(const std::vector<double>& x, const std::vector<double>& g,
                    const std::vector<double>& b, int64_t rows, int64_t cols, double eps) {
  LnRef r{std::vector<double>(x.size()), std::vector<double>(rows), std::vector<double>(rows)};
  for (int64_t i = 0; i < rows; ++i) {
    double mu = 0.0, var = 0.0;
    for (int64_t j = 0; j < cols; ++j) mu += x[i * cols + j] / cols;
    for (int64_t j = 0; j < cols; ++j) var += (x[i * cols + j] - mu) * (x[i * cols + j] - mu);
    const double rs = 1.0 / std::sqrt(var / cols + eps);
    for (int64_t j = 0; j < cols; ++j)
      r.out[i * cols + j] = (x[i * cols + j] - mu) * rs * g[j] + b[j];
    r.mean[i] = mu;
    r.rstd[i] = rs;
  }
  return r;
}

const std::vector<std::pair<int64_t, int64_t>> kShapes = {{1, 1}, {1, 13}, {7, 5}, {40, 33}};

TYPED_TEST(CpuNormActTest, LayerNormForward) {
  for (auto [rows, cols] : kShapes) {
    Tensor x = this->rand({rows, cols}, 1), g = this->rand({cols}, 2), b = this->rand({cols}, 3);
    Tensor out = this->zeros({rows, cols}), mean = this->zeros({rows}), rstd = this->zeros({rows});
    this->ops->layernorm_forward(out, mean, rstd, x, g, b, 1e-5);
    const LnRef r = layernorm_ref(this->host(x), this->host(g), this->host(b), rows, cols, 1e-5);
    expect_close(this->host(out), r.out, this->tol, "out");
    expect_close(this->host(mean), r.mean, this->tol, "mean");
    expect_close(this->host(rstd), r.rstd, this->tol, "rstd");
  }
}

TEST(CpuNormAct, LayerNormBackwardMatchesFiniteDifferences) {
  auto ops = make_cpu_ops();
  const DType f64 = DType::f64;
  for (auto [rows, cols] : kShapes) {
    if (cols == 1) continue;  // the output of a one-column row is constant
    const double eps = 1e-5;
    auto xv = random_nonzero(rows * cols, 4), gv = random_nonzero(cols, 5);
    auto bv = random_nonzero(cols, 6), w = random_nonzero(rows * cols, 7);
    auto mk = [&](std::vector<int64_t> shape, const std::vector<double>& v) {
      Tensor t = ops->empty(shape, f64);
      ops->from_host(t, v);
      return t;
    };
    Tensor x = mk({rows, cols}, xv), g = mk({cols}, gv), b = mk({cols}, bv);
    Tensor out = ops->zeros({rows, cols}, f64), mean = ops->zeros({rows}, f64);
    Tensor rstd = ops->zeros({rows}, f64);
    ops->layernorm_forward(out, mean, rstd, x, g, b, eps);
    Tensor dout = mk({rows, cols}, w);
    Tensor dx = ops->zeros({rows, cols}, f64), dg = ops->zeros({cols}, f64);
    Tensor db = ops->zeros({cols}, f64);
    ops->layernorm_backward(dx, dg, db, dout, x, g, mean, rstd);
    auto loss = [&](const std::vector<double>& xs, const std::vector<double>& gs,
                    const std::vector<double>& bs) {
      return dot(layernorm_ref(xs, gs, bs, rows, cols, eps).out, w);
    };
    const auto nx = numeric_grad(xv, [&](const auto& v) { return loss(v, gv, bv); });
    const auto ng = numeric_grad(gv, [&](const auto& v) { return loss(xv, v, bv); });
    const auto nb = numeric_grad(bv, [&](const auto& v) { return loss(xv, gv, v); });
    expect_close(ops->to_host(dx), nx, 1e-6, "dx");
    expect_close(ops->to_host(dg), ng, 1e-6, "dgamma");
    expect_close(ops->to_host(db), nb, 1e-6, "dbeta");
    // Accumulation: a second call doubles every gradient; an undefined dx is skipped.
    Tensor none;
    ops->layernorm_backward(dx, dg, db, dout, x, g, mean, rstd);
    ops->layernorm_backward(none, dg, db, dout, x, g, mean, rstd);
    auto times = [](std::vector<double> v, double k) {
      for (double& e : v) e *= k;
      return v;
    };
    expect_close(ops->to_host(dx), times(nx, 2), 1e-6, "dx twice");
    expect_close(ops->to_host(dg), times(ng, 3), 1e-6, "dgamma thrice");
    expect_close(ops->to_host(db), times(nb, 3), 1e-6, "dbeta thrice");
  }
}

// The float32 backward runs on vector lanes (kernels/cpu/vector_layernorm.cpp): it must give the
// float64 backward's gradients on the same inputs, for rows shorter than a vector, with a
// remainder, and wider than a 64-column parameter block.
TEST(CpuNormAct, LayerNormBackwardInFloat32MatchesFloat64) {
  auto ops = make_cpu_ops();
  for (auto [rows, cols] : std::vector<std::pair<int64_t, int64_t>>{{3, 5}, {9, 67}, {33, 512}}) {
    auto xv = random_nonzero(rows * cols, 8), gv = random_nonzero(cols, 9);
    auto bv = random_nonzero(cols, 10), w = random_nonzero(rows * cols, 11);
    auto grads = [&](DType dt) {
      auto mk = [&](std::vector<int64_t> shape, const std::vector<double>& v) {
        Tensor t = ops->empty(shape, dt);
        ops->from_host(t, v);
        return t;
      };
      Tensor x = mk({rows, cols}, xv), g = mk({cols}, gv), b = mk({cols}, bv);
      Tensor out = ops->zeros({rows, cols}, dt), mean = ops->zeros({rows}, dt);
      Tensor rstd = ops->zeros({rows}, dt);
      ops->layernorm_forward(out, mean, rstd, x, g, b, 1e-5);
      Tensor dout = mk({rows, cols}, w);
      Tensor dx = mk({rows, cols}, w), dg = mk({cols}, gv), db = mk({cols}, bv);  // accumulate
      ops->layernorm_backward(dx, dg, db, dout, x, g, mean, rstd);
      return std::vector<std::vector<double>>{ops->to_host(out), ops->to_host(dx), ops->to_host(dg),
                                              ops->to_host(db)};
    };
    const auto f32 = grads(DType::f32), f64 = grads(DType::f64);
    const char* names[] = {"out", "dx", "dgamma", "dbeta"};
    for (int k = 0; k < 4; ++k) expect_close(f32[k], f64[k], 2e-5, names[k]);
  }
}

double gelu(double x) { return 0.5 * x * (1.0 + std::erf(x / std::sqrt(2.0))); }

TYPED_TEST(CpuNormActTest, ActivationsForward) {
  for (auto [rows, cols] : kShapes) {
    Tensor x = this->rand({rows, cols}, 8), out = this->zeros({rows, cols});
    std::vector<double> xv = this->host(x), wg(xv.size()), wr(xv.size());
    for (size_t i = 0; i < xv.size(); ++i) {
      wg[i] = gelu(xv[i]);
      wr[i] = xv[i] > 0 ? xv[i] : 0.0;
    }
    this->ops->gelu_forward(out, x);
    expect_close(this->host(out), wg, this->tol, "gelu");
    this->ops->relu_forward(out, x);
    expect_close(this->host(out), wr, this->tol, "relu");
  }
}

TYPED_TEST(CpuNormActTest, ReluBackwardAccumulates) {
  Tensor x = this->rand({3, 11}, 9), dout = this->rand({3, 11}, 10), dx = this->rand({3, 11}, 11);
  auto xv = this->host(x), gv = this->host(dout), want = this->host(dx);
  for (size_t i = 0; i < xv.size(); ++i) want[i] += xv[i] > 0 ? gv[i] : 0.0;
  this->ops->relu_backward(dx, dout, x);
  expect_close(this->host(dx), want, this->tol);
}

TEST(CpuNormAct, GeluBackwardMatchesFiniteDifferences) {
  auto ops = make_cpu_ops();
  std::vector<double> xv = random_nonzero(45, 12), w = random_nonzero(45, 13);
  for (size_t i = 0; i < xv.size(); ++i) xv[i] *= 3.0;  // cover the tails
  Tensor x = ops->empty({5, 9}, DType::f64), dout = ops->empty({5, 9}, DType::f64);
  ops->from_host(x, xv);
  ops->from_host(dout, w);
  Tensor dx = ops->zeros({5, 9}, DType::f64);
  ops->gelu_backward(dx, dout, x);
  auto num = numeric_grad(xv, [&](const std::vector<double>& v) {
    double s = 0.0;
    for (size_t i = 0; i < v.size(); ++i) s += gelu(v[i]) * w[i];
    return s;
  });
  expect_close(ops->to_host(dx), num, 1e-7, "gelu dx");
  ops->gelu_backward(dx, dout, x);
  for (double& v : num) v *= 2;
  expect_close(ops->to_host(dx), num, 1e-7, "gelu dx twice");
}

TYPED_TEST(CpuNormActTest, ShapeErrors) {
  Tensor x = this->rand({2, 3}, 1), out = this->zeros({3, 2});
  expect_error([&] { this->ops->gelu_forward(out, x); }, "gelu_forward");
  Tensor mean = this->zeros({2}), rstd = this->zeros({2}), g = this->rand({4}, 2);
  Tensor o2 = this->zeros({2, 3});
  expect_error([&] { this->ops->layernorm_forward(o2, mean, rstd, x, g, g, 1e-5); }, "gamma");
}

}  // namespace
}  // namespace tls::test
