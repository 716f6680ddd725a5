// The long-range (dynamic projection) part of LS attention, DESIGN.md section 1.1, and the merge
// of the two parts' softmaxes.
//
// Query t lies in global chunk g_q = first_query_chunk + t / c and sees the compressed slots
// j = g*r + k with g < g_q, i.e. j < g_q * r. The relative id of slot j is
// (g_q - g)*r - 1 - k = g_q*r - 1 - j (the reference's chunked relative shift), clamped to the
// last row of pos (cpos_clamp_len is applied when pos is built). Score:
//   s[t, j] = q_t . (khat[j] + pos[id(t, j)])
// As in window_attention.cpp, the forward returns this part's own normalised output and lse,
// the backward takes the merged lse and delta, recomputes the scores and accumulates. Memory is
// one query chunk's scores per thread (c x slots); the backward's threads split the heads so
// gradient writes never race.
#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "kernels/cpu/blas_tiles.h"
#include "kernels/cpu/cpu_ops.h"
#include "runtime/error.h"

namespace tls {
namespace {

void check_chunk_shapes(const Tensor& q, const Tensor& khat, const Tensor& vhat, const Tensor& pos,
                        const AttentionShape& s) {
  const int64_t dl = s.n_head * s.d_head;
  if (q.shape() != std::vector<int64_t>{s.batch, s.tokens, dl})
    throw Error("chunk_attention: q has shape " + q.shape_string());
  if (khat.rank() != 3 || khat.dim(0) != s.batch || khat.dim(2) != dl || !vhat.same_shape(khat))
    throw Error("chunk_attention: khat " + khat.shape_string() + " / vhat " + vhat.shape_string() +
                " do not match q " + q.shape_string());
  if (pos.rank() != 2 || pos.dim(1) != dl || pos.dim(0) < 1)
    throw Error("chunk_attention: pos has shape " + pos.shape_string());
  if (s.chunk_size <= 0 || s.chunk_rank <= 0 || s.tokens % s.chunk_size != 0)
    throw Error("chunk_attention: tokens must be a multiple of the chunk size");
  for (const Tensor* t : {&khat, &vhat, &pos})
    if (t->dtype() != q.dtype()) throw Error("chunk_attention: mixed dtypes");
}

// Slots visible to query t, and the slot count of khat.
inline int64_t visible_slots(const AttentionShape& s, int64_t t, int64_t n_slots) {
  const int64_t g_q = s.first_query_chunk + t / s.chunk_size;
  return std::clamp<int64_t>(g_q * s.chunk_rank, 0, n_slots);
}

// Every query of one query chunk sees the same slots j < g_q r with the same relative ids
// g_q r - 1 - j, so a chunk's c queries share one key matrix K_eff[j] = khat[j] + pos[id(j)]
// and its scores are one small GEMM; the weighted sum is another.
template <class T>
void build_effective_keys(T* keys, const T* khat, const T* pos, int64_t b, int64_t ho, int64_t g_q,
                          int64_t nv, int64_t n_slots, int64_t n_pos, int64_t dl, int64_t dh,
                          int64_t r) {
  for (int64_t j = 0; j < nv; ++j) {
    const T* k = khat + (b * n_slots + j) * dl + ho;
    const T* p = pos + std::min(g_q * r - 1 - j, n_pos - 1) * dl + ho;
    for (int64_t e = 0; e < dh; ++e) keys[j * dh + e] = k[e] + p[e];
  }
}

template <class T>
void chunk_forward(T* out, T* lse, const T* q, const T* khat, const T* vhat, const T* pos,
                   int64_t n_slots, int64_t n_pos, const AttentionShape& s) {
  const int64_t B = s.batch, Tn = s.tokens, H = s.n_head, dh = s.d_head, dl = H * dh;
  const int64_t c = s.chunk_size, r = s.chunk_rank, n_chunks = Tn / c;
#pragma omp parallel
  {
    std::vector<T> keys(static_cast<size_t>(n_slots * dh)), scores(static_cast<size_t>(c * n_slots));
#pragma omp for collapse(3) schedule(dynamic)
    for (int64_t b = 0; b < B; ++b)
      for (int64_t h = 0; h < H; ++h)
        for (int64_t qc = 0; qc < n_chunks; ++qc) {
          const int64_t ho = h * dh, t0 = qc * c;
          const int64_t g_q = s.first_query_chunk + qc;
          const int64_t nv = visible_slots(s, t0, n_slots);
          T* o = out + (b * Tn + t0) * dl + ho;
          if (nv == 0) {
            for (int64_t i = 0; i < c; ++i) {
              std::fill(o + i * dl, o + i * dl + dh, T(0));
              lse[(b * H + h) * Tn + t0 + i] = -std::numeric_limits<T>::infinity();
            }
            continue;
          }
          build_effective_keys(keys.data(), khat, pos, b, ho, g_q, nv, n_slots, n_pos, dl, dh, r);
          const T* qt = q + (b * Tn + t0) * dl + ho;
          cpu::gemm_tile(false, true, static_cast<int>(c), static_cast<int>(nv), static_cast<int>(dh), T(1), qt,
                         static_cast<int>(dl), keys.data(), static_cast<int>(dh), T(0), scores.data(),
                         static_cast<int>(nv));
          for (int64_t i = 0; i < c; ++i) {
            T* row = scores.data() + i * nv;
            const T mx = *std::max_element(row, row + nv);
            double total = 0;  // exp in T (expf for float), the sum in double
            for (int64_t j = 0; j < nv; ++j) {
              const T p = std::exp(row[j] - mx);
              row[j] = p;
              total += p;
            }
            const T inv = static_cast<T>(1.0 / total);
            for (int64_t j = 0; j < nv; ++j) row[j] *= inv;
            lse[(b * H + h) * Tn + t0 + i] = static_cast<T>(mx + std::log(total));
          }
          cpu::gemm_tile(false, false, static_cast<int>(c), static_cast<int>(dh), static_cast<int>(nv), T(1),
                         scores.data(), static_cast<int>(nv), vhat + b * n_slots * dl + ho,
                         static_cast<int>(dl), T(0), o, static_cast<int>(dl));
        }
  }
}

template <class T>
void chunk_backward(T* dq, T* dkhat, T* dvhat, T* dpos, const T* dout, const T* lse,
                    const T* delta, const T* q, const T* khat, const T* vhat, const T* pos,
                    int64_t n_slots, int64_t n_pos, const AttentionShape& s) {
  const int64_t B = s.batch, Tn = s.tokens, H = s.n_head, dh = s.d_head, dl = H * dh;
  const int64_t c = s.chunk_size, r = s.chunk_rank, n_chunks = Tn / c;
  // Threads own heads: every slot's and position's gradient of head h has one writer.
#pragma omp parallel
  {
    std::vector<T> keys(static_cast<size_t>(n_slots * dh)), dkeys(static_cast<size_t>(n_slots * dh));
    std::vector<T> probs(static_cast<size_t>(c * n_slots)), dprobs(static_cast<size_t>(c * n_slots));
    std::vector<T> dq_tile(static_cast<size_t>(c * dh));
#pragma omp for schedule(dynamic)
    for (int64_t h = 0; h < H; ++h)
      for (int64_t b = 0; b < B; ++b)
        for (int64_t qc = 0; qc < n_chunks; ++qc) {
          const int64_t ho = h * dh, t0 = qc * c;
          const int64_t g_q = s.first_query_chunk + qc;
          const int64_t nv = visible_slots(s, t0, n_slots);
          if (nv == 0) continue;
          const int ic = static_cast<int>(c), inv_ = static_cast<int>(nv), idh = static_cast<int>(dh),
                    idl = static_cast<int>(dl);
          build_effective_keys(keys.data(), khat, pos, b, ho, g_q, nv, n_slots, n_pos, dl, dh, r);
          const T* qt = q + (b * Tn + t0) * dl + ho;
          const T* go = dout + (b * Tn + t0) * dl + ho;
          const T* vb = vhat + b * n_slots * dl + ho;
          cpu::gemm_tile(false, true, ic, inv_, idh, T(1), qt, idl, keys.data(), idh, T(0), probs.data(), inv_);
          cpu::gemm_tile(false, true, ic, inv_, idh, T(1), go, idl, vb, idl, T(0), dprobs.data(), inv_);
          for (int64_t i = 0; i < c; ++i) {
            const double l = lse[(b * H + h) * Tn + t0 + i], dlt = delta[(b * H + h) * Tn + t0 + i];
            T* p = probs.data() + i * nv;
            T* dp = dprobs.data() + i * nv;
            for (int64_t j = 0; j < nv; ++j) {
              const double prob = std::exp(p[j] - static_cast<T>(l));
              p[j] = static_cast<T>(prob);
              dp[j] = static_cast<T>(prob * (static_cast<double>(dp[j]) - dlt));  // ds
            }
          }
          if (dq) cpu::gemm_tile(false, false, ic, idh, inv_, T(1), dprobs.data(), inv_, keys.data(), idh, T(1),
                                 dq + (b * Tn + t0) * dl + ho, idl);
          if (dvhat) cpu::gemm_tile(true, false, inv_, idh, ic, T(1), probs.data(), inv_, go, idl, T(1),
                                    dvhat + b * n_slots * dl + ho, idl);
          if (!dkhat && !dpos) continue;
          cpu::gemm_tile(true, false, inv_, idh, ic, T(1), dprobs.data(), inv_, qt, idl, T(0), dkeys.data(), idh);
          for (int64_t j = 0; j < nv; ++j) {
            const T* g = dkeys.data() + j * dh;
            if (dkhat) {
              T* dk = dkhat + (b * n_slots + j) * dl + ho;
              for (int64_t e = 0; e < dh; ++e) dk[e] += g[e];
            }
            if (dpos) {
              T* dp = dpos + std::min(g_q * r - 1 - j, n_pos - 1) * dl + ho;
              for (int64_t e = 0; e < dh; ++e) dp[e] += g[e];
            }
          }
        }
  }
}

template <class T>
void merge(T* out, T* lse, const T* out_a, const T* lse_a, const T* out_b, const T* lse_b,
           const AttentionShape& s) {
  const int64_t B = s.batch, Tn = s.tokens, H = s.n_head, dh = s.d_head, dl = H * dh;
#pragma omp parallel for collapse(2) schedule(static)
  for (int64_t b = 0; b < B; ++b)
    for (int64_t t = 0; t < Tn; ++t)
      for (int64_t h = 0; h < H; ++h) {
        const int64_t li = (b * H + h) * Tn + t;
        const double la = lse_a[li], lb = lse_b[li];
        const double mx = std::max(la, lb);
        double wa = 0, wb = 0, l = mx;
        if (std::isfinite(mx)) {
          wa = std::exp(la - mx);
          wb = std::exp(lb - mx);
          l = mx + std::log(wa + wb);
          wa /= wa + wb;
          wb = 1 - wa;
        }
        lse[li] = static_cast<T>(l);
        const int64_t o = (b * Tn + t) * dl + h * dh;
        for (int64_t e = 0; e < dh; ++e)
          out[o + e] = static_cast<T>(wa * out_a[o + e] + wb * out_b[o + e]);
      }
}

template <class T>
void delta_rows(T* delta, const T* dout, const T* out, const AttentionShape& s) {
  const int64_t B = s.batch, Tn = s.tokens, H = s.n_head, dh = s.d_head, dl = H * dh;
#pragma omp parallel for collapse(2) schedule(static)
  for (int64_t b = 0; b < B; ++b)
    for (int64_t t = 0; t < Tn; ++t)
      for (int64_t h = 0; h < H; ++h) {
        const int64_t o = (b * Tn + t) * dl + h * dh;
        double acc = 0;
        for (int64_t e = 0; e < dh; ++e) acc += static_cast<double>(dout[o + e]) * out[o + e];
        delta[(b * H + h) * Tn + t] = static_cast<T>(acc);
      }
}

template <class T> T* ptr_or_null(const Tensor& t) { return t.defined() ? t.data<T>() : nullptr; }

}  // namespace

void CpuOps::chunk_attention_forward(Tensor& out, Tensor& lse, const Tensor& q, const Tensor& khat,
                                     const Tensor& vhat, const Tensor& pos,
                                     const AttentionShape& s) {
  check_chunk_shapes(q, khat, vhat, pos, s);
  const int64_t n_slots = khat.dim(1), n_pos = pos.dim(0);
  if (q.dtype() == DType::f64)
    chunk_forward(out.data<double>(), lse.data<double>(), q.data<double>(), khat.data<double>(),
                  vhat.data<double>(), pos.data<double>(), n_slots, n_pos, s);
  else
    chunk_forward(out.data<float>(), lse.data<float>(), q.data<float>(), khat.data<float>(),
                  vhat.data<float>(), pos.data<float>(), n_slots, n_pos, s);
}

void CpuOps::chunk_attention_backward(Tensor& dq, Tensor& dkhat, Tensor& dvhat, Tensor& dpos,
                                      const Tensor& dout, const Tensor& lse, const Tensor& delta,
                                      const Tensor& q, const Tensor& khat, const Tensor& vhat,
                                      const Tensor& pos, const AttentionShape& s) {
  check_chunk_shapes(q, khat, vhat, pos, s);
  const int64_t n_slots = khat.dim(1), n_pos = pos.dim(0);
  if (q.dtype() == DType::f64)
    chunk_backward(ptr_or_null<double>(dq), ptr_or_null<double>(dkhat),
                   ptr_or_null<double>(dvhat), ptr_or_null<double>(dpos), dout.data<double>(),
                   lse.data<double>(), delta.data<double>(), q.data<double>(),
                   khat.data<double>(), vhat.data<double>(), pos.data<double>(), n_slots, n_pos, s);
  else
    chunk_backward(ptr_or_null<float>(dq), ptr_or_null<float>(dkhat), ptr_or_null<float>(dvhat),
                   ptr_or_null<float>(dpos), dout.data<float>(), lse.data<float>(),
                   delta.data<float>(), q.data<float>(), khat.data<float>(), vhat.data<float>(),
                   pos.data<float>(), n_slots, n_pos, s);
}

void CpuOps::attention_merge(Tensor& out, Tensor& lse, const Tensor& out_a, const Tensor& lse_a,
                             const Tensor& out_b, const Tensor& lse_b, const AttentionShape& s) {
  if (!out.same_shape(out_a) || !out.same_shape(out_b) || !lse.same_shape(lse_a) ||
      !lse.same_shape(lse_b))
    throw Error("attention_merge: the two parts' shapes differ");
  if (out.dtype() == DType::f64)
    merge(out.data<double>(), lse.data<double>(), out_a.data<double>(), lse_a.data<double>(),
          out_b.data<double>(), lse_b.data<double>(), s);
  else
    merge(out.data<float>(), lse.data<float>(), out_a.data<float>(), lse_a.data<float>(),
          out_b.data<float>(), lse_b.data<float>(), s);
}

void CpuOps::attention_delta(Tensor& delta, const Tensor& dout, const Tensor& out,
                             const AttentionShape& s) {
  if (!dout.same_shape(out)) throw Error("attention_delta: dout and out shapes differ");
  if (out.dtype() == DType::f64)
    delta_rows(delta.data<double>(), dout.data<double>(), out.data<double>(), s);
  else
    delta_rows(delta.data<float>(), dout.data<float>(), out.data<float>(), s);
}

}  // namespace tls
