// The fused tile kernels shared by the two attention parts (window_attention.cu,
// chunk_attention.cu). Both parts have the form
//   s[t, j] = qa_t . K[j] + qb_t . Pos[pidx(t, j)]   for the keys j that query t sees,
//   out_t = sum_j softmax_j(s[t, :]) V[j],   lse_t = log sum_j exp s[t, j]
// with qa = q + bias_a, qb = q + bias_b (window: r_w_bias, r_r_bias and the relative table;
// compressed part: no biases, the chunk position table). A policy P says which keys a query
// sees (visible), where its positional row is (pidx, monotone: non-decreasing in t,
// non-increasing in j) and which keys share a positional row (j_range).
//
// Forward: one block per (batch, head, tile of QT queries). It walks the keys in tiles of KT
// rows, staging K, V and the positional rows the tile needs in shared memory, computes the
// QT x KT scores, and folds them into the output with an online softmax (running max m and
// sum l per query; O <- O exp(m_old - m_new) + P V). No score matrix reaches device memory.
// This is the float32 / float64 forward; the backward (deterministic, no atomics) and the
// tensor-core forward are in attention_wmma.cuh. A policy also says which queries see a key
// (query_range) and which keys use a range of positional rows (pos_keys), for the backward's
// key and position passes.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>
#include <string>

#include "kernels/cuda/common.h"

namespace tls::cuda {

constexpr int kAttnThreads = 128;

template <class T>
struct AttnArgs {
  // inputs: q [B, T, dl]; k, v [B, key_rows, dl]; pos [n_pos, dl]; biases [dl] or null
  const T *q = nullptr, *k = nullptr, *v = nullptr, *pos = nullptr;
  const T *bias_a = nullptr, *bias_b = nullptr;
  // forward outputs: out [B, T, dl], lse [B, H, T]
  T *out = nullptr, *lse = nullptr;
  // backward inputs (dout [B, T, dl], merged lse and delta [B, H, T]) and gradients (or null)
  const T *dout = nullptr, *lse_in = nullptr, *delta = nullptr;
  T *dq = nullptr, *dk = nullptr, *dv = nullptr, *dpos = nullptr, *dbias_a = nullptr,
    *dbias_b = nullptr;
  int64_t tokens = 0, n_head = 0, dh = 0, key_rows = 0;
  int qt = 32, kt = 32, span = 0;  // query / key tile sizes, positional rows per tile
};

template <class T>
__device__ inline void load_rows(T* dst, int ld, const T* src, int64_t stride, int64_t first,
                                 int n_rows, int dh) {
  for (int i = threadIdx.x; i < n_rows * dh; i += blockDim.x) {
    const int r = i / dh, e = i % dh;
    dst[r * ld + e] = src[(first + r) * stride + e];
  }
}

// Positional rows [lo, hi] a (query tile, key tile) pair can touch.
template <class P>
__device__ inline void pos_range(const P& pol, int64_t t0, int64_t t1, int64_t j0, int64_t j1,
                                 int64_t& lo, int64_t& hi) {
  lo = max(int64_t{0}, pol.pidx(t0, j1));
  hi = min(pol.n_pos - 1, pol.pidx(t1, j0));
}

template <class T, class P>
__global__ void __launch_bounds__(kAttnThreads) attn_forward_kernel(AttnArgs<T> a, P pol) {
  extern __shared__ __align__(16) unsigned char smem_raw[];
  T* sm = reinterpret_cast<T*>(smem_raw);
  const int QT = a.qt, KT = a.kt, dh = static_cast<int>(a.dh), ld = dh + 1;
  T* qa = sm;
  T* qb = qa + QT * ld;
  T* ks = qb + QT * ld;
  T* vs = ks + KT * ld;
  T* ps = vs + KT * ld;
  // Score rows padded to KT + 1: the online softmax (one thread per query row) reads a column
  // of s at a time, which a stride of KT (32 words) would put in one shared-memory bank.
  const int lds = KT + 1;
  T* s = ps + a.span * ld;
  T* o = s + QT * lds;
  T* m = o + QT * dh;
  T* l = m + QT;
  T* alpha = l + QT;
  const int64_t H = a.n_head, dl = H * a.dh, Tn = a.tokens;
  const int64_t b = blockIdx.y / H, h = blockIdx.y % H, t0 = static_cast<int64_t>(blockIdx.x) * QT;
  const int nq = static_cast<int>(min(int64_t{QT}, Tn - t0));
  const int tid = threadIdx.x, nt = blockDim.x;
  const T neg_inf = T(-INFINITY);

  const T* qg = a.q + (b * Tn + t0) * dl + h * dh;
  for (int i = tid; i < QT * dh; i += nt) {
    const int r = i / dh, e = i % dh;
    const T qv = r < nq ? qg[r * dl + e] : T(0);
    qa[r * ld + e] = qv + (a.bias_a ? a.bias_a[h * dh + e] : T(0));
    qb[r * ld + e] = qv + (a.bias_b ? a.bias_b[h * dh + e] : T(0));
    o[i] = T(0);
  }
  for (int r = tid; r < QT; r += nt) {
    m[r] = neg_inf;
    l[r] = T(0);
  }
  const int64_t t_last = t0 + nq - 1;
  const int64_t kb = pol.key_begin(t0), ke = pol.key_end(t_last);
  const T* kg = a.k + b * a.key_rows * dl + h * dh;
  const T* vg = a.v + b * a.key_rows * dl + h * dh;
  for (int64_t j0 = kb; j0 < ke; j0 += KT) {
    const int nk = static_cast<int>(min(int64_t{KT}, ke - j0));
    int64_t plo, phi;
    pos_range(pol, t0, t_last, j0, j0 + nk - 1, plo, phi);
    __syncthreads();
    load_rows(ks, ld, kg, dl, j0, nk, dh);
    load_rows(vs, ld, vg, dl, j0, nk, dh);
    if (phi >= plo) load_rows(ps, ld, a.pos + h * dh, dl, plo, static_cast<int>(phi - plo + 1), dh);
    __syncthreads();
    for (int i = tid; i < QT * KT; i += nt) {
      const int r = i / KT, c = i % KT;
      const int64_t t = t0 + r, j = j0 + c;
      T sc = neg_inf;
      if (r < nq && c < nk && pol.visible(t, j)) {
        const T* qar = qa + r * ld;
        const T* qbr = qb + r * ld;
        const T* kr = ks + c * ld;
        const T* pr = ps + (pol.pidx(t, j) - plo) * ld;
        T acc = T(0);
        for (int e = 0; e < dh; ++e) acc += qar[e] * kr[e] + qbr[e] * pr[e];
        sc = acc;
      }
      s[r * lds + c] = sc;
    }
    __syncthreads();
    for (int r = tid; r < QT; r += nt) {  // online softmax, one thread per query
      T* sr = s + r * lds;
      T mx = m[r];
      for (int c = 0; c < nk; ++c) mx = max(mx, sr[c]);
      if (mx == neg_inf) {
        for (int c = 0; c < nk; ++c) sr[c] = T(0);
        alpha[r] = T(1);
      } else {
        const T al = exp(m[r] - mx);
        T sum = T(0);
        for (int c = 0; c < nk; ++c) {
          const T p = exp(sr[c] - mx);
          sr[c] = p;
          sum += p;
        }
        l[r] = l[r] * al + sum;
        m[r] = mx;
        alpha[r] = al;
      }
    }
    __syncthreads();
    for (int i = tid; i < QT * dh; i += nt) {
      const int r = i / dh, e = i % dh;
      const T* sr = s + r * lds;
      T acc = o[i] * alpha[r];
      for (int c = 0; c < nk; ++c) acc += sr[c] * vs[c * ld + e];
      o[i] = acc;
    }
  }
  __syncthreads();
  T* og = a.out + (b * Tn + t0) * dl + h * dh;
  for (int i = tid; i < nq * dh; i += nt) {
    const int r = i / dh, e = i % dh;
    og[r * dl + e] = l[r] > T(0) ? o[i] / l[r] : T(0);
  }
  for (int r = tid; r < nq; r += nt)
    a.lse[(b * H + h) * Tn + t0 + r] = l[r] > T(0) ? m[r] + log(l[r]) : neg_inf;
}

// Shared memory (bytes) of one block for tile sizes qt x kt.
inline size_t attn_smem(int qt, int kt, int span, int64_t dh, size_t esize) {
  const int64_t ld = dh + 1;
  const int64_t n = 2 * qt * ld + 2 * kt * ld + span * ld + qt * (kt + 1) + qt * dh + 3 * qt;
  return static_cast<size_t>(n) * esize;
}

// Picks the largest tiles that fit in smem_limit bytes, sets the forward kernel's shared-memory
// limit and launches it on a (ceil(T / qt), B * H) grid.
template <class T, class P>
void launch_attention_forward(const char* op, AttnArgs<T> a, const P& pol, int64_t batch,
                              size_t smem_limit, cudaStream_t stream) {
  if (a.tokens == 0 || batch == 0 || a.n_head == 0) return;
  if (batch * a.n_head > 65535) fail(op, "batch x heads exceeds the grid limit of 65535");
  static const int tiles[][2] = {{32, 32}, {32, 16}, {16, 16}, {16, 8},
                                 {8, 8},   {4, 4},   {2, 2},   {1, 1}};
  size_t bytes = 0;
  bool found = false;
  for (const auto& tk : tiles) {
    a.qt = tk[0];
    a.kt = tk[1];
    a.span = pol.max_span(a.qt, a.kt);
    bytes = attn_smem(a.qt, a.kt, a.span, a.dh, sizeof(T));
    if (bytes <= smem_limit) {
      found = true;
      break;
    }
  }
  if (!found)
    fail(op, "d_head " + std::to_string(a.dh) + " needs more shared memory than the device's " +
                 std::to_string(smem_limit) + " bytes per block");
  const dim3 grid(static_cast<unsigned>((a.tokens + a.qt - 1) / a.qt),
                  static_cast<unsigned>(batch * a.n_head));
  TLS_CUDA_CHECK(cudaFuncSetAttribute(attn_forward_kernel<T, P>,
                                      cudaFuncAttributeMaxDynamicSharedMemorySize,
                                      static_cast<int>(bytes)));
  attn_forward_kernel<T, P><<<grid, kAttnThreads, bytes, stream>>>(a, pol);
  TLS_CUDA_LAUNCHED("attn_forward_kernel");
}

}  // namespace tls::cuda
