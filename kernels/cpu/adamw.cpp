// AdamW of the CPU backend, exactly torch.optim.AdamW (single-tensor path) at 1-based `step`:
// p *= 1 - lr wd; m = b1 m + (1 - b1) g; v = b2 v + (1 - b2) g^2;
// p -= (lr / (1 - b1^step)) m / (sqrt(v) / sqrt(1 - b2^step) + eps),
// i.e. p -= lr m_hat / (sqrt(v_hat) + eps). Each element is updated in double.
#include <algorithm>
#include <cmath>

#include "kernels/cpu/cpu_ops.h"
#include "kernels/cpu/dispatch.h"
#include "kernels/cpu/vector_adamw.h"

namespace tls {

void CpuOps::adamw_step(Tensor& param, const Tensor& grad, Tensor& exp_avg, Tensor& exp_avg_sq,
                        double lr, double beta1, double beta2, double eps, double weight_decay,
                        int64_t step) {
  const char* op = "adamw_step";
  cpu::check_float(op, "param", param);
  cpu::check_same(op, "param", param, "grad", grad);
  cpu::check_same(op, "param", param, "exp_avg", exp_avg);
  cpu::check_same(op, "param", param, "exp_avg_sq", exp_avg_sq);
  if (step < 1) cpu::fail(op, "step " + std::to_string(step) + " must be at least 1");
  const double decay = 1.0 - lr * weight_decay;
  const double step_size = lr / (1.0 - std::pow(beta1, static_cast<double>(step)));
  const double bc2_sqrt = std::sqrt(1.0 - std::pow(beta2, static_cast<double>(step)));
  if (param.dtype() == DType::f32) {  // vector lanes (vector_adamw.cpp), in blocks per thread
    const cpu::AdamWCoefficients k{beta1, beta2, eps, decay, step_size, bc2_sqrt};
    float* p = param.data<float>();
    const float* g = grad.data<float>();
    float* m = exp_avg.data<float>();
    float* v = exp_avg_sq.data<float>();
    const int64_t n = param.numel();
    constexpr int64_t kBlock = 1 << 14;
    const int64_t n_blocks = (n + kBlock - 1) / kBlock;
#pragma omp parallel for schedule(static) if (n >= cpu::kParallelMin)
    for (int64_t blk = 0; blk < n_blocks; ++blk) {
      const int64_t i0 = blk * kBlock, len = std::min(kBlock, n - i0);
      cpu::adamw_update(p + i0, g + i0, m + i0, v + i0, len, k);
    }
    return;
  }
  cpu::dispatch_float(op, param.dtype(), [&](auto tag) {
    using T = decltype(tag);
    T* p = param.data<T>();
    const T* g = grad.data<T>();
    T* m = exp_avg.data<T>();
    T* v = exp_avg_sq.data<T>();
    const int64_t n = param.numel();
#pragma omp parallel for if (n >= cpu::kParallelMin)
    for (int64_t i = 0; i < n; ++i) {
      const double gi = static_cast<double>(g[i]);
      const double mi = beta1 * static_cast<double>(m[i]) + (1.0 - beta1) * gi;
      const double vi = beta2 * static_cast<double>(v[i]) + (1.0 - beta2) * gi * gi;
      const double pi = static_cast<double>(p[i]) * decay;
      m[i] = static_cast<T>(mi);
      v[i] = static_cast<T>(vi);
      const double ms = static_cast<double>(m[i]), vs = static_cast<double>(v[i]);  // as stored
      p[i] = static_cast<T>(pi - step_size * ms / (std::sqrt(vs) / bc2_sqrt + eps));
    }
  });
}

}  // namespace tls
