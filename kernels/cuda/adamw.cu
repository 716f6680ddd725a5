// AdamW of the CUDA backend, exactly torch.optim.AdamW (single-tensor path) at 1-based `step`,
// each element in double as the CPU reference does:
// p *= 1 - lr wd; m = b1 m + (1 - b1) g; v = b2 v + (1 - b2) g^2;
// p -= (lr / (1 - b1^step)) m / (sqrt(v) / sqrt(1 - b2^step) + eps) with m, v as stored.
#include <cmath>

#include "kernels/cuda/common.h"
#include "kernels/cuda/cuda_ops.h"
#include "kernels/cuda/device_util.cuh"

namespace tls {

namespace {

struct AdamCoeffs {
  double beta1, beta2, eps, decay, step_size, bc2_sqrt;
};

template <class T>
__global__ void adamw_kernel(T* p, const T* g, T* m, T* v, int64_t n, AdamCoeffs a) {
  TLS_GRID_LOOP(i, n) {
    const double gi = static_cast<double>(g[i]);
    const double mi = a.beta1 * static_cast<double>(m[i]) + (1.0 - a.beta1) * gi;
    const double vi = a.beta2 * static_cast<double>(v[i]) + (1.0 - a.beta2) * gi * gi;
    const double pi = static_cast<double>(p[i]) * a.decay;
    const T ms = static_cast<T>(mi), vs = static_cast<T>(vi);
    m[i] = ms;
    v[i] = vs;
    p[i] = static_cast<T>(pi - a.step_size * static_cast<double>(ms) /
                                   (sqrt(static_cast<double>(vs)) / a.bc2_sqrt + a.eps));
  }
}

}  // namespace

void CudaOps::adamw_step(Tensor& param, const Tensor& grad, Tensor& exp_avg, Tensor& exp_avg_sq,
                         double lr, double beta1, double beta2, double eps, double weight_decay,
                         int64_t step) {
  const char* op = "adamw_step";
  cuda::check_float(op, "param", param);
  cuda::check_same(op, "param", param, "grad", grad);
  cuda::check_same(op, "param", param, "exp_avg", exp_avg);
  cuda::check_same(op, "param", param, "exp_avg_sq", exp_avg_sq);
  if (step < 1) cuda::fail(op, "step " + std::to_string(step) + " must be at least 1");
  const AdamCoeffs a{beta1,
                     beta2,
                     eps,
                     1.0 - lr * weight_decay,
                     lr / (1.0 - std::pow(beta1, static_cast<double>(step))),
                     std::sqrt(1.0 - std::pow(beta2, static_cast<double>(step)))};
  const int64_t n = param.numel();
  if (n == 0) return;
  activate();
  cuda::dispatch_float(op, param.dtype(), [&](auto tag) {
    using T = decltype(tag);
    adamw_kernel<T><<<cuda::blocks_for(n), cuda::kThreads, 0, stream_>>>(
        param.data<T>(), grad.data<T>(), exp_avg.data<T>(), exp_avg_sq.data<T>(), n, a);
    TLS_CUDA_LAUNCHED("adamw_kernel");
  });
}

}  // namespace tls
