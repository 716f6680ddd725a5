// The short-term (sliding window) part of LS attention, DESIGN.md section 1.1.
//
// Query t sees the w keys at distances delta = 0 .. w-1 back (itself included). Its score is
//   s[t, delta] = (q_t + r_w_bias) . K[t - delta] + (q_t + r_r_bias) . R[delta]
// The forward returns this part's own softmax output and log-sum-exp; the joint softmax with the
// compressed part is formed by attention_merge. The backward takes the merged lse and
// delta = rowsum(dout * out), so p = exp(s - lse) is the joint probability and
//   ds = p * (dout . V - delta).
// No T x T matrix exists: each query's w scores live in a small per-thread buffer, and the
// backward recomputes them. Threads split the heads, so every gradient write is race-free.
#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "kernels/cpu/cpu_ops.h"
#include "runtime/error.h"

namespace tls {
namespace {

void check_window_shapes(const Tensor& q, const Tensor& keys, const Tensor& values,
                         const Tensor& rel, const AttentionShape& s) {
  const int64_t dl = s.n_head * s.d_head;
  auto expect = [&](const Tensor& t, std::vector<int64_t> shape, const char* name) {
    if (t.shape() != shape)
      throw Error(std::string("window_attention: ") + name + " has shape " + t.shape_string() +
                  ", expected another shape for batch " + std::to_string(s.batch) + ", tokens " +
                  std::to_string(s.tokens) + ", window " + std::to_string(s.window));
    if (t.dtype() != q.dtype()) throw Error(std::string("window_attention: ") + name + " dtype differs");
  };
  expect(q, {s.batch, s.tokens, dl}, "q");
  expect(keys, {s.batch, s.window + s.tokens, dl}, "keys");
  expect(values, {s.batch, s.window + s.tokens, dl}, "values");
  expect(rel, {s.window, dl}, "rel");
}

template <class T>
void window_forward(T* out, T* lse, const T* q, const T* keys, const T* values, const T* rel,
                    const T* rw, const T* rr, const AttentionShape& s) {
  const int64_t B = s.batch, Tn = s.tokens, H = s.n_head, dh = s.d_head, w = s.window;
  const int64_t dl = H * dh;
#pragma omp parallel
  {
    std::vector<double> score(static_cast<size_t>(w));
    std::vector<double> acc(static_cast<size_t>(dh));
#pragma omp for collapse(2) schedule(static)
    for (int64_t b = 0; b < B; ++b)
      for (int64_t h = 0; h < H; ++h) {
        const int64_t ho = h * dh;
        for (int64_t t = 0; t < Tn; ++t) {
          const T* qt = q + (b * Tn + t) * dl + ho;
          double mx = -std::numeric_limits<double>::infinity();
          for (int64_t d = 0; d < w; ++d) {
            const T* k = keys + (b * (w + Tn) + t + w - d) * dl + ho;
            const T* r = rel + d * dl + ho;
            T sc = 0;
            for (int64_t e = 0; e < dh; ++e) sc += (qt[e] + rw[ho + e]) * k[e] + (qt[e] + rr[ho + e]) * r[e];
            score[d] = sc;
            mx = std::max(mx, score[d]);
          }
          double total = 0;
          std::fill(acc.begin(), acc.end(), 0.0);
          for (int64_t d = 0; d < w; ++d) {
            double p = std::exp(score[d] - mx);
            total += p;
            const T* v = values + (b * (w + Tn) + t + w - d) * dl + ho;
            for (int64_t e = 0; e < dh; ++e) acc[e] += p * v[e];
          }
          T* o = out + (b * Tn + t) * dl + ho;
          for (int64_t e = 0; e < dh; ++e) o[e] = static_cast<T>(acc[e] / total);
          lse[(b * H + h) * Tn + t] = static_cast<T>(mx + std::log(total));
        }
      }
  }
}

template <class T>
void window_backward(T* dq, T* dkeys, T* dvalues, T* drel, T* drw, T* drr, const T* dout,
                     const T* lse, const T* delta, const T* q, const T* keys, const T* values,
                     const T* rel, const T* rw, const T* rr, const AttentionShape& s) {
  const int64_t B = s.batch, Tn = s.tokens, H = s.n_head, dh = s.d_head, w = s.window;
  const int64_t dl = H * dh;
  // Threads own heads: dkeys/dvalues/drel/biases of head h are written by one thread only.
#pragma omp parallel for schedule(static)
  for (int64_t h = 0; h < H; ++h) {
    const int64_t ho = h * dh;
    for (int64_t b = 0; b < B; ++b)
      for (int64_t t = 0; t < Tn; ++t) {
        const T* qt = q + (b * Tn + t) * dl + ho;
        const T* go = dout + (b * Tn + t) * dl + ho;
        T* gq = dq ? dq + (b * Tn + t) * dl + ho : nullptr;
        const double l = lse[(b * H + h) * Tn + t];
        const double dlt = delta[(b * H + h) * Tn + t];
        for (int64_t d = 0; d < w; ++d) {
          const int64_t row = b * (w + Tn) + t + w - d;
          const T* k = keys + row * dl + ho;
          const T* v = values + row * dl + ho;
          const T* r = rel + d * dl + ho;
          T sc = 0, dp = 0;
          for (int64_t e = 0; e < dh; ++e) {
            sc += (qt[e] + rw[ho + e]) * k[e] + (qt[e] + rr[ho + e]) * r[e];
            dp += go[e] * v[e];
          }
          const T p = static_cast<T>(std::exp(static_cast<double>(sc) - l));
          const T ds = static_cast<T>(p * (static_cast<double>(dp) - dlt));
          for (int64_t e = 0; e < dh; ++e) {
            if (gq) gq[e] += ds * (k[e] + r[e]);
            if (dkeys) dkeys[row * dl + ho + e] += ds * (qt[e] + rw[ho + e]);
            if (dvalues) dvalues[row * dl + ho + e] += p * go[e];
            if (drel) drel[d * dl + ho + e] += ds * (qt[e] + rr[ho + e]);
            if (drw) drw[ho + e] += ds * k[e];
            if (drr) drr[ho + e] += ds * r[e];
          }
        }
      }
  }
}

template <class T> T* ptr_or_null(const Tensor& t) { return t.defined() ? t.data<T>() : nullptr; }

}  // namespace

void CpuOps::window_attention_forward(Tensor& out, Tensor& lse, const Tensor& q, const Tensor& keys,
                                      const Tensor& values, const Tensor& rel,
                                      const Tensor& r_w_bias, const Tensor& r_r_bias,
                                      const AttentionShape& s) {
  check_window_shapes(q, keys, values, rel, s);
  if (q.dtype() == DType::f64)
    window_forward(out.data<double>(), lse.data<double>(), q.data<double>(), keys.data<double>(),
                   values.data<double>(), rel.data<double>(), r_w_bias.data<double>(),
                   r_r_bias.data<double>(), s);
  else
    window_forward(out.data<float>(), lse.data<float>(), q.data<float>(), keys.data<float>(),
                   values.data<float>(), rel.data<float>(), r_w_bias.data<float>(),
                   r_r_bias.data<float>(), s);
}

void CpuOps::window_attention_backward(Tensor& dq, Tensor& dkeys, Tensor& dvalues, Tensor& drel,
                                       Tensor& dr_w_bias, Tensor& dr_r_bias, const Tensor& dout,
                                       const Tensor& lse, const Tensor& delta, const Tensor& q,
                                       const Tensor& keys, const Tensor& values, const Tensor& rel,
                                       const Tensor& r_w_bias, const Tensor& r_r_bias,
                                       const AttentionShape& s) {
  check_window_shapes(q, keys, values, rel, s);
  if (q.dtype() == DType::f64)
    window_backward(ptr_or_null<double>(dq), ptr_or_null<double>(dkeys),
                    ptr_or_null<double>(dvalues), ptr_or_null<double>(drel),
                    ptr_or_null<double>(dr_w_bias), ptr_or_null<double>(dr_r_bias),
                    dout.data<double>(), lse.data<double>(), delta.data<double>(),
                    q.data<double>(), keys.data<double>(), values.data<double>(),
                    rel.data<double>(), r_w_bias.data<double>(), r_r_bias.data<double>(), s);
  else
    window_backward(ptr_or_null<float>(dq), ptr_or_null<float>(dkeys), ptr_or_null<float>(dvalues),
                    ptr_or_null<float>(drel), ptr_or_null<float>(dr_w_bias),
                    ptr_or_null<float>(dr_r_bias), dout.data<float>(), lse.data<float>(),
                    delta.data<float>(), q.data<float>(), keys.data<float>(),
                    values.data<float>(), rel.data<float>(), r_w_bias.data<float>(),
                    r_r_bias.data<float>(), s);
}

}  // namespace tls
