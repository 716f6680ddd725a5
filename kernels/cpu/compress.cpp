// Dynamic-projection compression of the CPU backend (chunk g of c rows -> r rows, per head h):
//   out[b, g r + k, h dh + e] = sum_{i<c} W[b, g c + i, (h0 + h) r + k] x[b, g c + i, h dh + e].
// Backward: dx[b, gc+i, h dh+e] += sum_k W[b, gc+i, (h0+h)r+k] dout[b, gr+k, h dh+e] and
// dW[b, gc+i, (h0+h)r+k] += sum_e dout[b, gr+k, h dh+e] x[b, gc+i, h dh+e]. One task per (b, g).
#include <algorithm>
#include <vector>

#include "kernels/cpu/cpu_ops.h"
#include "kernels/cpu/dispatch.h"

namespace tls {

using op_checks::CompressDims;

void CpuOps::compress_chunks_forward(Tensor& out, const Tensor& x, const Tensor& weights,
                                     int64_t chunk_size, int64_t chunk_rank, int64_t n_head,
                                     int64_t head_offset) {
  const CompressDims d =
      op_checks::compress_dims<Device::cpu>("compress_chunks_forward", out, "out", x, weights,
                                            chunk_size, chunk_rank, n_head, head_offset);
  cpu::dispatch_float("compress_chunks_forward", x.dtype(), [&](auto tag) {
    using T = decltype(tag);
    const T* xp = x.data<T>();
    const T* wp = weights.data<T>();
    T* op = out.data<T>();
#pragma omp parallel if (x.numel() * d.r >= cpu::kParallelMin)
    {
      std::vector<double> acc(static_cast<size_t>(d.dh));
#pragma omp for collapse(2)
      for (int64_t b = 0; b < d.batch; ++b)
        for (int64_t g = 0; g < d.groups; ++g) {
          const T* xg = xp + (b * d.groups + g) * d.c * d.cols;
          const T* wg = wp + (b * d.groups + g) * d.c * d.wcols;
          T* og = op + (b * d.groups + g) * d.r * d.cols;
          for (int64_t h = 0; h < d.heads; ++h)
            for (int64_t k = 0; k < d.r; ++k) {
              std::fill(acc.begin(), acc.end(), 0.0);
              for (int64_t i = 0; i < d.c; ++i) {
                const double wv = static_cast<double>(wg[i * d.wcols + (d.h0 + h) * d.r + k]);
                const T* xr = xg + i * d.cols + h * d.dh;
                for (int64_t e = 0; e < d.dh; ++e) acc[e] += wv * static_cast<double>(xr[e]);
              }
              T* orow = og + k * d.cols + h * d.dh;
              for (int64_t e = 0; e < d.dh; ++e) orow[e] = static_cast<T>(acc[e]);
            }
        }
    }
  });
}

void CpuOps::compress_chunks_backward(Tensor& dx, Tensor& dweights, const Tensor& dout,
                                      const Tensor& x, const Tensor& weights, int64_t chunk_size,
                                      int64_t chunk_rank, int64_t n_head, int64_t head_offset) {
  const char* op = "compress_chunks_backward";
  const CompressDims d = op_checks::compress_dims<Device::cpu>(
      op, dout, "dout", x, weights, chunk_size, chunk_rank, n_head, head_offset);
  if (dx.defined()) cpu::check_same(op, "x", x, "dx", dx);
  if (dweights.defined()) cpu::check_same(op, "weights", weights, "dweights", dweights);
  if (!dx.defined() && !dweights.defined()) return;
  cpu::dispatch_float(op, x.dtype(), [&](auto tag) {
    using T = decltype(tag);
    const T* xp = x.data<T>();
    const T* wp = weights.data<T>();
    const T* gp = dout.data<T>();
    T* dxp = dx.defined() ? dx.data<T>() : nullptr;
    T* dwp = dweights.defined() ? dweights.data<T>() : nullptr;
#pragma omp parallel if (x.numel() * d.r >= cpu::kParallelMin)
    {
      std::vector<double> acc(static_cast<size_t>(d.dh));
#pragma omp for collapse(2)
      for (int64_t b = 0; b < d.batch; ++b)
        for (int64_t g = 0; g < d.groups; ++g) {
          const int64_t xoff = (b * d.groups + g) * d.c * d.cols;
          const int64_t woff = (b * d.groups + g) * d.c * d.wcols;
          const T* gg = gp + (b * d.groups + g) * d.r * d.cols;
          for (int64_t h = 0; h < d.heads; ++h)
            for (int64_t i = 0; i < d.c; ++i) {
              const T* xr = xp + xoff + i * d.cols + h * d.dh;
              const int64_t wrow = woff + i * d.wcols + (d.h0 + h) * d.r;
              std::fill(acc.begin(), acc.end(), 0.0);
              for (int64_t k = 0; k < d.r; ++k) {
                const T* gr = gg + k * d.cols + h * d.dh;
                if (dwp) {
                  double s = 0.0;
#pragma omp simd reduction(+ : s)
                  for (int64_t e = 0; e < d.dh; ++e)
                    s += static_cast<double>(gr[e]) * static_cast<double>(xr[e]);
                  dwp[wrow + k] += static_cast<T>(s);
                }
                const double wv = static_cast<double>(wp[wrow + k]);
                for (int64_t e = 0; e < d.dh; ++e) acc[e] += wv * static_cast<double>(gr[e]);
              }
              if (dxp) {
                T* dr = dxp + xoff + i * d.cols + h * d.dh;
                for (int64_t e = 0; e < d.dh; ++e) dr[e] += static_cast<T>(acc[e]);
              }
            }
        }
    }
  });
}

}  // namespace tls
