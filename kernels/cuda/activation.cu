// Activations of the CUDA backend, elementwise (in the tensor's own precision).
// GELU (erf form): gelu(x) = 0.5 x (1 + erf(x / sqrt 2)),
//   gelu'(x) = 0.5 (1 + erf(x / sqrt 2)) + x exp(-x^2 / 2) / sqrt(2 pi).
// ReLU: relu(x) = max(x, 0) (NaN propagates), relu'(x) = [x > 0].
// Backward ops accumulate: dx += dout * f'(x).
#include "kernels/cuda/common.h"
#include "kernels/cuda/cuda_ops.h"
#include "kernels/cuda/device_util.cuh"

namespace tls {

namespace {

enum class Act { gelu, relu };

template <class T, Act A>
__global__ void act_forward_kernel(T* out, const T* x, int64_t n) {
  TLS_GRID_LOOP(i, n) {
    const T v = x[i];
    if constexpr (A == Act::gelu)
      out[i] = T(0.5) * v * (T(1) + erf(v * T(0.70710678118654752440)));
    else
      out[i] = (v > T(0) || isnan(v)) ? v : T(0);
  }
}

template <class T, Act A>
__global__ void act_backward_kernel(T* dx, const T* dout, const T* x, int64_t n) {
  TLS_GRID_LOOP(i, n) {
    const T v = x[i];
    T d;
    if constexpr (A == Act::gelu)
      d = T(0.5) * (T(1) + erf(v * T(0.70710678118654752440))) +
          v * exp(T(-0.5) * v * v) * T(0.39894228040143267794);
    else
      d = v > T(0) ? T(1) : T(0);
    dx[i] += dout[i] * d;
  }
}

template <Act A>
void forward(const char* op, Tensor& out, const Tensor& x, cudaStream_t stream) {
  cuda::check_float(op, "x", x);
  cuda::check_same(op, "x", x, "out", out);
  const int64_t n = x.numel();
  if (n == 0) return;
  cuda::dispatch_float(op, x.dtype(), [&](auto tag) {
    using T = decltype(tag);
    act_forward_kernel<T, A>
        <<<cuda::blocks_for(n), cuda::kThreads, 0, stream>>>(out.data<T>(), x.data<T>(), n);
    TLS_CUDA_LAUNCHED("act_forward_kernel");
  });
}

template <Act A>
void backward(const char* op, Tensor& dx, const Tensor& dout, const Tensor& x,
              cudaStream_t stream) {
  cuda::check_float(op, "x", x);
  cuda::check_same(op, "x", x, "dx", dx);
  cuda::check_same(op, "x", x, "dout", dout);
  const int64_t n = x.numel();
  if (n == 0) return;
  cuda::dispatch_float(op, x.dtype(), [&](auto tag) {
    using T = decltype(tag);
    act_backward_kernel<T, A><<<cuda::blocks_for(n), cuda::kThreads, 0, stream>>>(
        dx.data<T>(), dout.data<T>(), x.data<T>(), n);
    TLS_CUDA_LAUNCHED("act_backward_kernel");
  });
}

}  // namespace

void CudaOps::gelu_forward(Tensor& out, const Tensor& x) {
  activate();
  forward<Act::gelu>("gelu_forward", out, x, stream_);
}
void CudaOps::gelu_backward(Tensor& dx, const Tensor& dout, const Tensor& x) {
  activate();
  backward<Act::gelu>("gelu_backward", dx, dout, x, stream_);
}
void CudaOps::relu_forward(Tensor& out, const Tensor& x) {
  activate();
  forward<Act::relu>("relu_forward", out, x, stream_);
}
void CudaOps::relu_backward(Tensor& dx, const Tensor& dout, const Tensor& x) {
  activate();
  backward<Act::relu>("relu_backward", dx, dout, x, stream_);
}

}  // namespace tls
