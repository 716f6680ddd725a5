// Activations of the CPU backend, elementwise.
// GELU (erf form): gelu(x) = 0.5 x (1 + erf(x / sqrt 2)),
//   gelu'(x) = 0.5 (1 + erf(x / sqrt 2)) + x exp(-x^2 / 2) / sqrt(2 pi).
// ReLU: relu(x) = max(x, 0), relu'(x) = [x > 0]. Backward ops accumulate: dx += dout * f'(x).
// float32 GELU runs on AVX2 lanes where the CPU has them (kernels/cpu/vector_gelu.h), libm
// otherwise and for float64.
#include <algorithm>
#include <cmath>

#include "kernels/cpu/cpu_ops.h"
#include "kernels/cpu/dispatch.h"
#include "kernels/cpu/vector_gelu.h"

namespace tls {

namespace {

constexpr double kInvSqrt2 = 0.70710678118654752440;
constexpr double kInvSqrt2Pi = 0.39894228040143267794;

void check_unary(const char* op, const Tensor& out, const Tensor& x) {
  cpu::check_float(op, "x", x);
  cpu::check_same(op, "x", x, "out", out);
}

void check_unary_backward(const char* op, const Tensor& dx, const Tensor& dout, const Tensor& x) {
  cpu::check_float(op, "x", x);
  cpu::check_same(op, "x", x, "dx", dx);
  cpu::check_same(op, "x", x, "dout", dout);
}

// float32 GELU runs kernels/cpu/vector_gelu.cpp's rows on blocks of this many elements.
constexpr int64_t kGeluBlock = 4096;

template <class F>
void in_gelu_blocks(int64_t n, F&& rows) {
#pragma omp parallel for schedule(static) if (n >= cpu::kParallelMin)
  for (int64_t i = 0; i < n; i += kGeluBlock) rows(i, std::min(kGeluBlock, n - i));
}

// out[i] = f(x[i]) (or out[i] += f(x[i], dout[i]) for a backward), after the shape checks.
template <class F>
void unary(const char* op, Tensor& out, const Tensor& x, F&& f) {
  check_unary(op, out, x);
  cpu::dispatch_float(op, x.dtype(), [&](auto tag) {
    using T = decltype(tag);
    const T* xp = x.data<T>();
    T* yp = out.data<T>();
    const int64_t n = x.numel();
#pragma omp parallel for if (n >= cpu::kParallelMin)
    for (int64_t i = 0; i < n; ++i) yp[i] = static_cast<T>(f(xp[i]));
  });
}

template <class F>
void unary_backward(const char* op, Tensor& dx, const Tensor& dout, const Tensor& x, F&& df) {
  check_unary_backward(op, dx, dout, x);
  cpu::dispatch_float(op, x.dtype(), [&](auto tag) {
    using T = decltype(tag);
    const T* xp = x.data<T>();
    const T* gp = dout.data<T>();
    T* dp = dx.data<T>();
    const int64_t n = x.numel();
#pragma omp parallel for if (n >= cpu::kParallelMin)
    for (int64_t i = 0; i < n; ++i) dp[i] += static_cast<T>(gp[i] * df(xp[i]));
  });
}

}  // namespace

void CpuOps::gelu_forward(Tensor& out, const Tensor& x) {
  if (x.dtype() == DType::f32 && cpu::gelu_is_vectorised()) {
    check_unary("gelu_forward", out, x);
    const float* xp = x.data<float>();
    float* yp = out.data<float>();
    in_gelu_blocks(x.numel(),
                   [&](int64_t i, int64_t n) { cpu::gelu_forward_rows(xp + i, yp + i, n); });
    return;
  }
  // Generic lambdas: erf and exp run in the tensor's type (erff / expf for float).
  unary("gelu_forward", out, x, [](auto v) {
    using V = decltype(v);
    return V(0.5) * v * (V(1) + std::erf(v * V(kInvSqrt2)));
  });
}

void CpuOps::gelu_backward(Tensor& dx, const Tensor& dout, const Tensor& x) {
  if (x.dtype() == DType::f32 && cpu::gelu_is_vectorised()) {
    check_unary_backward("gelu_backward", dx, dout, x);
    const float* xp = x.data<float>();
    const float* gp = dout.data<float>();
    float* dp = dx.data<float>();
    in_gelu_blocks(x.numel(), [&](int64_t i, int64_t n) {
      cpu::gelu_backward_rows(xp + i, gp + i, dp + i, n);
    });
    return;
  }
  unary_backward("gelu_backward", dx, dout, x, [](auto v) {
    using V = decltype(v);
    return V(0.5) * (V(1) + std::erf(v * V(kInvSqrt2))) +
           v * std::exp(V(-0.5) * v * v) * V(kInvSqrt2Pi);
  });
}

void CpuOps::relu_forward(Tensor& out, const Tensor& x) {
  // NaN propagates, as in torch.relu.
  unary("relu_forward", out, x, [](double v) { return v > 0.0 || std::isnan(v) ? v : 0.0; });
}

void CpuOps::relu_backward(Tensor& dx, const Tensor& dout, const Tensor& x) {
  unary_backward("relu_backward", dx, dout, x, [](double v) { return v > 0.0 ? 1.0 : 0.0; });
}

}  // namespace tls
