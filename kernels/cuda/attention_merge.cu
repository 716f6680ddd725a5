// Merge of the two attention parts' softmaxes and the backward's row statistic, on the GPU:
//   lse = logaddexp(lse_a, lse_b), out = out_a exp(lse_a - lse) + out_b exp(lse_b - lse)
// (both -inf: lse = -inf and weights 0), per (b, h, t) with out* [B, T, dl], lse* [B, H, T];
//   delta[b, h, t] = sum_e dout[b, t, h dh + e] out[b, t, h dh + e] (one warp per (b, t, h)).
#include "kernels/cuda/common.h"
#include "kernels/cuda/cuda_ops.h"
#include "kernels/cuda/device_util.cuh"

namespace tls {

namespace {

template <class T>
__global__ void merge_kernel(T* out, T* lse, const T* out_a, const T* lse_a, const T* out_b,
                             const T* lse_b, int64_t B, int64_t Tn, int64_t H, int64_t dh) {
  const int64_t dl = H * dh;
  TLS_GRID_LOOP(k, B * Tn * dl) {
    const int64_t e = k % dh, h = (k / dh) % H, t = (k / dl) % Tn, b = k / (dl * Tn);
    const int64_t li = (b * H + h) * Tn + t;
    const double la = static_cast<double>(lse_a[li]), lb = static_cast<double>(lse_b[li]);
    const double mx = fmax(la, lb);
    double wa = 0.0, wb = 0.0, l = mx;
    if (isfinite(mx)) {
      wa = exp(la - mx);
      wb = exp(lb - mx);
      l = mx + log(wa + wb);
      wa /= wa + wb;
      wb = 1.0 - wa;
    }
    if (e == 0) lse[li] = static_cast<T>(l);
    out[k] =
        static_cast<T>(wa * static_cast<double>(out_a[k]) + wb * static_cast<double>(out_b[k]));
  }
}

template <class T>
__global__ void delta_kernel(T* delta, const T* dout, const T* out, int64_t B, int64_t Tn,
                             int64_t H, int64_t dh) {
  TLS_WARP_ROW(row, B * Tn * H)  // row = (b * Tn + t) * H + h
  const int64_t h = row % H, t = (row / H) % Tn, b = row / (H * Tn);
  const T* g = dout + row * dh;
  const T* o = out + row * dh;
  double acc = 0.0;
  for (int64_t e = lane; e < dh; e += 32)
    acc += static_cast<double>(g[e]) * static_cast<double>(o[e]);
  acc = cuda::warp_sum(acc);
  if (lane == 0) delta[(b * H + h) * Tn + t] = static_cast<T>(acc);
}

}  // namespace

void CudaOps::attention_merge(Tensor& out, Tensor& lse, const Tensor& out_a, const Tensor& lse_a,
                              const Tensor& out_b, const Tensor& lse_b, const AttentionShape& s) {
  const char* op = "attention_merge";
  cuda::check_float(op, "out", out);
  cuda::check_same(op, "out", out, "out_a", out_a);
  cuda::check_same(op, "out", out, "out_b", out_b);
  cuda::check_like(op, "out", out, "lse", lse);
  cuda::check_same(op, "lse", lse, "lse_a", lse_a);
  cuda::check_same(op, "lse", lse, "lse_b", lse_b);
  cuda::check_numel(op, "out", out, s.batch * s.tokens * s.n_head * s.d_head);
  cuda::check_numel(op, "lse", lse, s.batch * s.n_head * s.tokens);
  const int64_t n = out.numel();
  if (n == 0) return;
  activate();
  if (lse.raw() == lse_a.raw() || lse.raw() == lse_b.raw()) {
    // In place (as the CPU merge allows): the kernel's threads of one row read lse_a / lse_b
    // while one of them writes lse, so merge into a fresh lse and copy it back.
    Tensor merged = empty(lse.shape(), lse.dtype());
    attention_merge(out, merged, out_a, lse_a, out_b, lse_b, s);
    copy(lse, merged);
    return;
  }
  cuda::dispatch_float(op, out.dtype(), [&](auto tag) {
    using T = decltype(tag);
    merge_kernel<T><<<cuda::blocks_for(n), cuda::kThreads, 0, stream_>>>(
        out.data<T>(), lse.data<T>(), out_a.data<T>(), lse_a.data<T>(), out_b.data<T>(),
        lse_b.data<T>(), s.batch, s.tokens, s.n_head, s.d_head);
    TLS_CUDA_LAUNCHED("merge_kernel");
  });
}

void CudaOps::attention_delta(Tensor& delta, const Tensor& dout, const Tensor& out,
                              const AttentionShape& s) {
  const char* op = "attention_delta";
  cuda::check_float(op, "out", out);
  cuda::check_same(op, "out", out, "dout", dout);
  cuda::check_like(op, "out", out, "delta", delta);
  cuda::check_numel(op, "out", out, s.batch * s.tokens * s.n_head * s.d_head);
  cuda::check_numel(op, "delta", delta, s.batch * s.n_head * s.tokens);
  const int64_t rows = s.batch * s.tokens * s.n_head;
  if (rows == 0) return;
  activate();
  cuda::dispatch_float(op, out.dtype(), [&](auto tag) {
    using T = decltype(tag);
    delta_kernel<T><<<cuda::row_blocks(rows), 32 * cuda::kRowsPerBlock, 0, stream_>>>(
        delta.data<T>(), dout.data<T>(), out.data<T>(), s.batch, s.tokens, s.n_head, s.d_head);
    TLS_CUDA_LAUNCHED("delta_kernel");
  });
}

}  // namespace tls
