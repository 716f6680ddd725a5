// The short-term (sliding window) part of LS attention on the GPU (docs/DESIGN.md section 1.1), as
// a policy of the fused tile kernels in attention_tile.cuh. Query t (block row) sees the keys
// rows j = t + w - delta, delta = 0 .. w-1, of keys/values [B, w + T, dl], i.e. j in
// [t + 1, t + w]; its score is
//   (q_t + r_w_bias) . keys[j] + (q_t + r_r_bias) . rel[delta],   delta = t + w - j.
// Forward returns this part's softmax output and lse; backward takes the merged lse and delta.
#include "kernels/cuda/attention_tile.cuh"
#include "kernels/cuda/attention_wmma.cuh"
#include "kernels/cuda/cuda_ops.h"

namespace tls {

namespace {

struct WindowPolicy {
  int64_t w = 0, n_pos = 0;  // n_pos = w rows of rel
  __device__ int64_t key_begin(int64_t t) const { return t + 1; }
  __device__ int64_t key_end(int64_t t) const { return t + w + 1; }
  __device__ bool visible(int64_t t, int64_t j) const { return j > t && j <= t + w; }
  __device__ int64_t pidx(int64_t t, int64_t j) const { return t + w - j; }
  __device__ void j_range(int64_t t, int64_t prow, int64_t& lo, int64_t& hi) const {
    lo = hi = t + w - prow;
  }
  // Queries [tb, te) that see a key of [j0, j1]; keys [jb, je) whose row lies in [p0, p1] for
  // a query of [t0, t1].
  __device__ void query_range(int64_t j0, int64_t j1, int64_t tokens, int64_t& tb,
                              int64_t& te) const {
    tb = max(int64_t{0}, j0 - w);
    te = min(tokens, j1);
  }
  __device__ void pos_keys(int64_t t0, int64_t t1, int64_t p0, int64_t p1, int64_t& jb,
                           int64_t& je) const {
    jb = t0 + w - p1;
    je = t1 + w - p0 + 1;
  }
  int max_span(int qt, int kt) const { return qt + kt - 1; }
};

void check_window(const Tensor& q, const Tensor& keys, const Tensor& values, const Tensor& rel,
                  const Tensor& rw, const Tensor& rr, const AttentionShape& s) {
  const char* op = "window_attention";
  const int64_t dl = s.n_head * s.d_head;
  auto expect = [&](const Tensor& t, std::vector<int64_t> shape, const char* name) {
    cuda::check_like(op, "q", q, name, t);
    if (t.shape() != shape)
      cuda::fail(op, std::string(name) + " has shape " + t.shape_string() +
                         ", expected another shape for batch " + std::to_string(s.batch) +
                         ", tokens " + std::to_string(s.tokens) + ", window " +
                         std::to_string(s.window));
  };
  cuda::check_float(op, "q", q);
  expect(q, {s.batch, s.tokens, dl}, "q");
  expect(keys, {s.batch, s.window + s.tokens, dl}, "keys");
  expect(values, {s.batch, s.window + s.tokens, dl}, "values");
  expect(rel, {s.window, dl}, "rel");
  expect(rw, {dl}, "r_w_bias");
  expect(rr, {dl}, "r_r_bias");
  if (s.window <= 0) cuda::fail(op, "the window must be positive");
}

void check_grad(const Tensor& g, const Tensor& like, const char* name) {
  if (g.defined()) cuda::check_same("window_attention_backward", "input", like, name, g);
}

}  // namespace

void CudaOps::window_attention_forward(Tensor& out, Tensor& lse, const Tensor& q,
                                       const Tensor& keys, const Tensor& values, const Tensor& rel,
                                       const Tensor& r_w_bias, const Tensor& r_r_bias,
                                       const AttentionShape& s) {
  check_window(q, keys, values, rel, r_w_bias, r_r_bias, s);
  cuda::check_same("window_attention_forward", "q", q, "out", out);
  cuda::check_like("window_attention_forward", "q", q, "lse", lse);
  cuda::check_numel("window_attention_forward", "lse", lse, s.batch * s.n_head * s.tokens);
  activate();
  cuda::dispatch_float("window_attention_forward", q.dtype(), [&](auto tag) {
    using T = decltype(tag);
    cuda::AttnArgs<T> a;
    a.q = q.data<T>();
    a.k = keys.data<T>();
    a.v = values.data<T>();
    a.pos = rel.data<T>();
    a.bias_a = r_w_bias.data<T>();
    a.bias_b = r_r_bias.data<T>();
    a.out = out.data<T>();
    a.lse = lse.data<T>();
    a.tokens = s.tokens;
    a.n_head = s.n_head;
    a.dh = s.d_head;
    a.key_rows = s.window + s.tokens;
    const WindowPolicy pol{s.window, s.window};
    cuda::run_attention("window_attention_forward", false, gemm_inputs_, a, pol, s.batch,
                        smem_optin_, stream_);
  });
}

void CudaOps::window_attention_backward(Tensor& dq, Tensor& dkeys, Tensor& dvalues, Tensor& drel,
                                        Tensor& dr_w_bias, Tensor& dr_r_bias, const Tensor& dout,
                                        const Tensor& lse, const Tensor& delta, const Tensor& q,
                                        const Tensor& keys, const Tensor& values, const Tensor& rel,
                                        const Tensor& r_w_bias, const Tensor& r_r_bias,
                                        const AttentionShape& s) {
  check_window(q, keys, values, rel, r_w_bias, r_r_bias, s);
  const char* op = "window_attention_backward";
  cuda::check_same(op, "q", q, "dout", dout);
  cuda::check_like(op, "q", q, "lse", lse);
  cuda::check_like(op, "q", q, "delta", delta);
  cuda::check_numel(op, "lse", lse, s.batch * s.n_head * s.tokens);
  cuda::check_numel(op, "delta", delta, s.batch * s.n_head * s.tokens);
  check_grad(dq, q, "dq");
  check_grad(dkeys, keys, "dkeys");
  check_grad(dvalues, values, "dvalues");
  check_grad(drel, rel, "drel");
  check_grad(dr_w_bias, r_w_bias, "dr_w_bias");
  check_grad(dr_r_bias, r_r_bias, "dr_r_bias");
  activate();
  cuda::dispatch_float(op, q.dtype(), [&](auto tag) {
    using T = decltype(tag);
    cuda::AttnArgs<T> a;
    a.q = q.data<T>();
    a.k = keys.data<T>();
    a.v = values.data<T>();
    a.pos = rel.data<T>();
    a.bias_a = r_w_bias.data<T>();
    a.bias_b = r_r_bias.data<T>();
    a.dout = dout.data<T>();
    a.lse_in = lse.data<T>();
    a.delta = delta.data<T>();
    a.dq = cuda::ptr_or_null<T>(dq);
    a.dk = cuda::ptr_or_null<T>(dkeys);
    a.dv = cuda::ptr_or_null<T>(dvalues);
    a.dpos = cuda::ptr_or_null<T>(drel);
    a.dbias_a = cuda::ptr_or_null<T>(dr_w_bias);
    a.dbias_b = cuda::ptr_or_null<T>(dr_r_bias);
    a.tokens = s.tokens;
    a.n_head = s.n_head;
    a.dh = s.d_head;
    a.key_rows = s.window + s.tokens;
    const WindowPolicy pol{s.window, s.window};
    cuda::run_attention(op, true, gemm_inputs_, a, pol, s.batch, smem_optin_, stream_);
  });
}

}  // namespace tls
