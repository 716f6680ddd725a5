// Dynamic-projection compression of the CUDA backend (chunk g of c rows -> r rows, per head h):
//   out[b, g r + k, h dh + e] = sum_{i<c} W[b, g c + i, (h0 + h) r + k] x[b, g c + i, h dh + e].
// Backward: dx[b, gc+i, h dh+e] += sum_k W[b, gc+i, (h0+h)r+k] dout[b, gr+k, h dh+e] (one thread
// per element of dx) and dW[b, gc+i, (h0+h)r+k] += sum_e dout[b, gr+k, h dh+e] x[b, gc+i, h dh+e]
// (one warp per element of dW). No atomics: every output element has one writer.
#include "kernels/cuda/common.h"
#include "kernels/cuda/cuda_ops.h"
#include "kernels/cuda/device_util.cuh"

namespace tls {

namespace {

using Dims = op_checks::CompressDims;

template <class T>
__global__ void compress_forward_kernel(T* out, const T* x, const T* w, Dims d) {
  // out index: ((b * groups + g) * r + k) * cols + h * dh + e
  TLS_GRID_LOOP(idx, d.batch * d.groups * d.r * d.cols) {
    const int64_t col = idx % d.cols, bgk = idx / d.cols;
    const int64_t k = bgk % d.r, bg = bgk / d.r, h = col / d.dh;
    const T* xg = x + bg * d.c * d.cols + col;
    const T* wg = w + bg * d.c * d.wcols + (d.h0 + h) * d.r + k;
    double acc = 0.0;
    for (int64_t i = 0; i < d.c; ++i)
      acc += static_cast<double>(wg[i * d.wcols]) * static_cast<double>(xg[i * d.cols]);
    out[idx] = static_cast<T>(acc);
  }
}

template <class T>
__global__ void compress_dx_kernel(T* dx, const T* gout, const T* w, Dims d) {
  // dx index: (bg * c + i) * cols + h * dh + e
  TLS_GRID_LOOP(idx, d.batch * d.groups * d.c * d.cols) {
    const int64_t col = idx % d.cols, row = idx / d.cols;
    const int64_t bg = row / d.c, h = col / d.dh;
    const T* wr = w + row * d.wcols + (d.h0 + h) * d.r;
    const T* gg = gout + bg * d.r * d.cols + col;
    double acc = 0.0;
    for (int64_t k = 0; k < d.r; ++k)
      acc += static_cast<double>(wr[k]) * static_cast<double>(gg[k * d.cols]);
    dx[idx] += static_cast<T>(acc);
  }
}

// One warp per (b, g, i, h, k).
template <class T>
__global__ void compress_dw_kernel(T* dw, const T* gout, const T* x, Dims d) {
  const int64_t n = d.batch * d.groups * d.c * d.heads * d.r;
  const int64_t n_warps = static_cast<int64_t>(gridDim.x) * blockDim.x / 32;
  const int lane = threadIdx.x % 32;
  for (int64_t warp = (static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x) / 32; warp < n;
       warp += n_warps) {
    const int64_t k = warp % d.r, h = (warp / d.r) % d.heads, row = warp / (d.r * d.heads);
    const int64_t bg = row / d.c;
    const T* xr = x + row * d.cols + h * d.dh;
    const T* gr = gout + (bg * d.r + k) * d.cols + h * d.dh;
    double s = 0.0;
    for (int64_t e = lane; e < d.dh; e += 32)
      s += static_cast<double>(gr[e]) * static_cast<double>(xr[e]);
    s = cuda::warp_sum(s);
    if (lane == 0) dw[row * d.wcols + (d.h0 + h) * d.r + k] += static_cast<T>(s);
  }
}

}  // namespace

void CudaOps::compress_chunks_forward(Tensor& out, const Tensor& x, const Tensor& weights,
                                      int64_t chunk_size, int64_t chunk_rank, int64_t n_head,
                                      int64_t head_offset) {
  const char* op = "compress_chunks_forward";
  const Dims d = op_checks::compress_dims<Device::cuda>(op, out, "out", x, weights, chunk_size,
                                                        chunk_rank, n_head, head_offset);
  const int64_t n = out.numel();
  if (n == 0) return;
  activate();
  cuda::dispatch_float(op, x.dtype(), [&](auto tag) {
    using T = decltype(tag);
    compress_forward_kernel<T><<<cuda::blocks_for(n), cuda::kThreads, 0, stream_>>>(
        out.data<T>(), x.data<T>(), weights.data<T>(), d);
    TLS_CUDA_LAUNCHED("compress_forward_kernel");
  });
}

void CudaOps::compress_chunks_backward(Tensor& dx, Tensor& dweights, const Tensor& dout,
                                       const Tensor& x, const Tensor& weights, int64_t chunk_size,
                                       int64_t chunk_rank, int64_t n_head, int64_t head_offset) {
  const char* op = "compress_chunks_backward";
  const Dims d = op_checks::compress_dims<Device::cuda>(op, dout, "dout", x, weights, chunk_size,
                                                        chunk_rank, n_head, head_offset);
  if (dx.defined()) cuda::check_same(op, "x", x, "dx", dx);
  if (dweights.defined()) cuda::check_same(op, "weights", weights, "dweights", dweights);
  activate();
  cuda::dispatch_float(op, x.dtype(), [&](auto tag) {
    using T = decltype(tag);
    if (dx.defined() && x.numel() > 0) {
      compress_dx_kernel<T><<<cuda::blocks_for(x.numel()), cuda::kThreads, 0, stream_>>>(
          dx.data<T>(), dout.data<T>(), weights.data<T>(), d);
      TLS_CUDA_LAUNCHED("compress_dx_kernel");
    }
    const int64_t n_dw = d.batch * d.groups * d.c * d.heads * d.r;
    if (dweights.defined() && n_dw > 0) {
      compress_dw_kernel<T><<<cuda::blocks_for(n_dw * 32), cuda::kThreads, 0, stream_>>>(
          dweights.data<T>(), dout.data<T>(), x.data<T>(), d);
      TLS_CUDA_LAUNCHED("compress_dw_kernel");
    }
  });
}

}  // namespace tls
