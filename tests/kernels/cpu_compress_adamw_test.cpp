// CPU dynamic-projection compression and AdamW (kernels/cpu/compress.cpp, adamw.cpp):
// compress_chunks against a loop and central differences (float64), accumulating into dx and
// dweights; adamw_step against torch.optim.AdamW's update written as a loop, over 3 steps.
#include "cpu_test_util.h"

namespace tls::test {
namespace {

template <class T>
class CpuCompressAdamwTest : public KernelTest<T> {};
TYPED_TEST_SUITE(CpuCompressAdamwTest, FloatTypes);

struct Geo {
  int64_t B, G, c, r, H, dh, H_all, h0;
};

std::vector<double> compress_ref(const std::vector<double>& x, const std::vector<double>& w,
                                 const Geo& s) {
  const int64_t cols = s.H * s.dh, wcols = s.H_all * s.r;
  std::vector<double> out(s.B * s.G * s.r * cols, 0.0);
  for (int64_t b = 0; b < s.B; ++b)
    for (int64_t g = 0; g < s.G; ++g)
      for (int64_t k = 0; k < s.r; ++k)
        for (int64_t h = 0; h < s.H; ++h)
          for (int64_t e = 0; e < s.dh; ++e)
            for (int64_t i = 0; i < s.c; ++i)
              out[(b * s.G * s.r + g * s.r + k) * cols + h * s.dh + e] +=
                  w[(b * s.G * s.c + g * s.c + i) * wcols + (s.h0 + h) * s.r + k] *
                  x[(b * s.G * s.c + g * s.c + i) * cols + h * s.dh + e];
  return out;
}

const std::vector<Geo> kGeos = {
    {1, 1, 1, 1, 1, 1, 1, 0}, {2, 3, 4, 2, 2, 3, 5, 1}, {1, 2, 5, 3, 3, 7, 3, 0}};

TYPED_TEST(CpuCompressAdamwTest, CompressForward) {
  for (const Geo& s : kGeos) {
    Tensor x = this->rand({s.B, s.G * s.c, s.H * s.dh}, 1);
    Tensor w = this->rand({s.B, s.G * s.c, s.H_all * s.r}, 2);
    Tensor out = this->rand({s.B, s.G * s.r, s.H * s.dh}, 3);  // overwritten
    this->ops->compress_chunks_forward(out, x, w, s.c, s.r, s.H, s.h0);
    expect_close(this->host(out), compress_ref(this->host(x), this->host(w), s), this->tol);
  }
  Tensor x = this->rand({1, 4, 6}, 1), w = this->rand({1, 4, 4}, 2), out = this->zeros({1, 2, 6});
  expect_error([&] { this->ops->compress_chunks_forward(out, x, w, 2, 1, 3, 2); }, "head_offset");
}

TEST(CpuCompressAdamw, CompressBackwardMatchesFiniteDifferences) {
  auto ops = make_cpu_ops();
  for (const Geo& s : kGeos) {
    const std::vector<int64_t> xs = {s.B, s.G * s.c, s.H * s.dh};
    const std::vector<int64_t> ws = {s.B, s.G * s.c, s.H_all * s.r};
    const std::vector<int64_t> os = {s.B, s.G * s.r, s.H * s.dh};
    auto xv = random_nonzero(s.B * s.G * s.c * s.H * s.dh, 4);
    auto wv = random_nonzero(s.B * s.G * s.c * s.H_all * s.r, 5);
    auto gv = random_nonzero(s.B * s.G * s.r * s.H * s.dh, 6);
    auto mk = [&](const std::vector<int64_t>& shape, const std::vector<double>& v) {
      Tensor t = ops->empty(shape, DType::f64);
      ops->from_host(t, v);
      return t;
    };
    Tensor x = mk(xs, xv), w = mk(ws, wv), dout = mk(os, gv);
    Tensor dx = ops->zeros(xs, DType::f64), dw = ops->zeros(ws, DType::f64), none;
    ops->compress_chunks_backward(dx, dw, dout, x, w, s.c, s.r, s.H, s.h0);
    auto nx = numeric_grad(xv, [&](const auto& v) { return dot(compress_ref(v, wv, s), gv); });
    auto nw = numeric_grad(wv, [&](const auto& v) { return dot(compress_ref(xv, v, s), gv); });
    expect_close(ops->to_host(dx), nx, 1e-8, "dx");
    expect_close(ops->to_host(dw), nw, 1e-8, "dweights");
    // (nw is exactly 0 in the columns of heads outside [h0, h0 + H): dweights must be too.)
    ops->compress_chunks_backward(dx, none, dout, x, w, s.c, s.r, s.H, s.h0);
    ops->compress_chunks_backward(none, dw, dout, x, w, s.c, s.r, s.H, s.h0);
    for (double& v : nx) v *= 2;
    for (double& v : nw) v *= 2;
    expect_close(ops->to_host(dx), nx, 1e-8, "dx twice");
    expect_close(ops->to_host(dw), nw, 1e-8, "dweights twice");
  }
}

TYPED_TEST(CpuCompressAdamwTest, AdamwMatchesTorchLoop) {
  const double lr = 1e-2, b1 = 0.9, b2 = 0.98, eps = 1e-8, wd = 0.1;
  // 40000: several of the float path's 16384-element blocks, the last one partial.
  for (int64_t n : {1, 13, 1000, 40000}) {
    Tensor p = this->rand({n}, 1), m = this->zeros({n}), v = this->zeros({n});
    auto pv = this->host(p);
    std::vector<double> mv(n, 0.0), vv(n, 0.0);
    for (int64_t step = 1; step <= 3; ++step) {
      Tensor g = this->rand({n}, 10 + static_cast<uint32_t>(step));
      const auto gv = this->host(g);
      for (int64_t i = 0; i < n; ++i) {
        pv[i] *= 1 - lr * wd;
        mv[i] = b1 * mv[i] + (1 - b1) * gv[i];
        vv[i] = b2 * vv[i] + (1 - b2) * gv[i] * gv[i];
        const double mh = mv[i] / (1 - std::pow(b1, step));
        const double vh = vv[i] / (1 - std::pow(b2, step));
        pv[i] -= lr * mh / (std::sqrt(vh) + eps);
      }
      this->ops->adamw_step(p, g, m, v, lr, b1, b2, eps, wd, step);
      expect_close(this->host(p), pv, this->tol, "param step " + std::to_string(step));
      expect_close(this->host(m), mv, this->tol, "exp_avg");
      expect_close(this->host(v), vv, this->tol, "exp_avg_sq");
    }
  }
  Tensor p = this->zeros({3}), g = this->zeros({3}), m = this->zeros({3}), v = this->zeros({4});
  expect_error([&] { this->ops->adamw_step(p, g, m, v, lr, b1, b2, eps, wd, 1); }, "exp_avg_sq");
  Tensor v3 = this->zeros({3});
  expect_error([&] { this->ops->adamw_step(p, g, m, v3, lr, b1, b2, eps, wd, 0); }, "step 0");
}

}  // namespace
}  // namespace tls::test
