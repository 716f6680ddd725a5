// Attention kernels written once over the operand type In of their products, for both parts
// (policies of attention_tile.cuh):
//  - In = T (float, double): plain loops, the deterministic backward of the float32 / float64
//    path (today's forward kernel in attention_tile.cuh stays its forward);
//  - In = __nv_bfloat16, T = float: tensor cores (WMMA 16x16x16, bf16 operands, float32
//    accumulation), forward and backward, the --precision bf16 path.
// One block (4 warps) per (batch, head, tile of queries), FlashAttention-2 style: the score tile
// S = Qa K^T and the positional tile Qb Pos^T (for the span of positional rows the tile can
// touch) are products in shared memory; each score then takes its positional term from the
// second tile by its row pidx(t, j) (the skew), so the relative-position term is a GEMM too.
// An online softmax folds P V into the output; no score matrix reaches device memory.
//
// The backward has no floating-point atomics: three passes, each owning what it writes, so
// every gradient element is summed in one fixed order and two runs agree bit for bit:
//  - query pass (block = query tile): dq = dS K + skew(dS) Pos, and per-tile partial sums for
//    the bias gradients (added up in tile order by attn_bias_reduce_kernel);
//  - key pass (block = key tile, walking the query tiles that see it): dK = dS^T Qa,
//    dV = P^T dO;
//  - position pass (block = tile of positional rows, walking every batch and query tile and
//    the keys that use those rows): dPos = skew(dS)^T Qb.
// Each pass recomputes P = exp(S - lse) and dS = P (dO V^T - delta) for its (query tile, key
// tile) pairs from the merged lse and delta.
#pragma once

#include <cuda_bf16.h>
#include <cuda_runtime.h>
#include <mma.h>

#include <cstdint>
#include <cstdio>
#include <mutex>
#include <type_traits>

#include "kernels/cuda/attention_tile.cuh"
#include "kernels/cuda/common.h"
#include "kernels/cuda/device_util.cuh"
#include "kernels/ops.h"

namespace tls::cuda {

template <class In>
constexpr bool kTensorCores = std::is_same_v<In, __nv_bfloat16>;

template <class In, class T>
__device__ inline In to_in(T v) {
  if constexpr (kTensorCores<In>)
    return __float2bfloat16_rn(static_cast<float>(v));
  else
    return static_cast<In>(v);
}

// C [M x N] (+)= A [M x K] B [K x N] on shared memory, by the whole block. A(i, k) is
// A[i * lda + k], or A[k * lda + i] with AT; B(k, n) is B[k * ldb + n], or B[n * ldb + k] with
// BT. With tensor cores M, N, K are multiples of 16, every matrix 32-byte aligned, lda / ldb
// multiples of 8 and ldc of 4; each warp computes 16x16 tiles of C. No barrier inside.
template <bool AT, bool BT, class In, class T>
__device__ inline void block_gemm(T* C, int ldc, const In* A, int lda, const In* B, int ldb, int M,
                                  int N, int K, bool accumulate) {
  if constexpr (kTensorCores<In>) {
    static_assert(std::is_same_v<T, float>, "tensor-core products accumulate in float");
    using namespace nvcuda;
    using LA = std::conditional_t<AT, wmma::col_major, wmma::row_major>;
    using LB = std::conditional_t<BT, wmma::col_major, wmma::row_major>;
    const int warp = threadIdx.x / 32, n_warps = blockDim.x / 32, tiles_n = N / 16;
    for (int tile = warp; tile < (M / 16) * tiles_n; tile += n_warps) {
      const int m0 = tile / tiles_n * 16, n0 = tile % tiles_n * 16;
      wmma::fragment<wmma::accumulator, 16, 16, 16, float> acc;
      if (accumulate)
        wmma::load_matrix_sync(acc, C + m0 * ldc + n0, ldc, wmma::mem_row_major);
      else
        wmma::fill_fragment(acc, 0.0f);
      for (int k0 = 0; k0 < K; k0 += 16) {
        wmma::fragment<wmma::matrix_a, 16, 16, 16, __nv_bfloat16, LA> fa;
        wmma::fragment<wmma::matrix_b, 16, 16, 16, __nv_bfloat16, LB> fb;
        wmma::load_matrix_sync(fa, AT ? A + k0 * lda + m0 : A + m0 * lda + k0, lda);
        wmma::load_matrix_sync(fb, BT ? B + n0 * ldb + k0 : B + k0 * ldb + n0, ldb);
        wmma::mma_sync(acc, fa, fb, acc);
      }
      wmma::store_matrix_sync(C + m0 * ldc + n0, acc, ldc, wmma::mem_row_major);
    }
  } else {
    for (int i = threadIdx.x; i < M * N; i += blockDim.x) {
      const int m = i / N, n = i % N;
      // Each dot product in double: the float32 gradients sum long, cancelling series.
      double s = 0.0;
      for (int k = 0; k < K; ++k)
        s += static_cast<double>(AT ? A[k * lda + m] : A[m * lda + k]) *
             static_cast<double>(BT ? B[n * ldb + k] : B[k * ldb + n]);
      C[m * ldc + n] = static_cast<T>(accumulate ? C[m * ldc + n] + s : s);
    }
  }
}

// Rows [first, first + n_rows) of src (row stride `stride`, dh wide) into dst [rows x ld] as
// In, zero beyond n_rows and beyond dh (tensor cores multiply the padding too), plus bias.
template <class In, class T>
__device__ inline void stage_rows(In* dst, int ld, int rows, int cols, const T* src, int64_t stride,
                                  int64_t first, int n_rows, int dh, const T* bias = nullptr) {
  for (int i = threadIdx.x; i < rows * cols; i += blockDim.x) {
    const int r = i / cols, e = i % cols;
    T v = T(0);
    if (r < n_rows && e < dh) v = src[(first + r) * stride + e] + (bias ? bias[e] : T(0));
    dst[r * ld + e] = to_in<In>(v);
  }
}

// Shared-memory plan of one block (offsets in bytes, each 32-byte aligned), the same on host
// and device. qt, kt, pt: query, key and positional-row tiles; span: positional rows staged
// per (query tile, key tile); dhp: d_head padded (to 16 with tensor cores).
struct AttnPlan {
  int qt = 0, kt = 0, pt = 0, span = 0, dhp = 0;
  int ldi = 0, ldk = 0, lds = 0, ldsp = 0, ldo = 0, ldq = 0, ldsk = 0;
  size_t qa = 0, qb = 0, go = 0, ks = 0, vs = 0, ps = 0, pm = 0, dsm = 0, skew = 0;
  size_t s = 0, sp = 0, dp = 0, acc1 = 0, acc2 = 0, stats = 0, total = 0;

  __host__ __device__ static size_t carve(size_t& at, size_t bytes) {
    const size_t start = at;
    at += (bytes + 31) / 32 * 32;
    return start;
  }
  __host__ __device__ AttnPlan(int qt_, int kt_, int pt_, int span_, int dh, bool tc,
                               size_t in_size, size_t t_size)
      : qt(qt_), kt(kt_), pt(pt_), span(span_) {
    dhp = tc ? (dh + 15) / 16 * 16 : dh;
    // Leading dimensions: multiples of 8 (In) / 4 (T) elements as WMMA needs, padded off a
    // multiple of 32 banks.
    ldi = dhp + 8;
    ldk = kt + 8;
    ldq = qt + 8;
    ldsk = (span > qt ? span : qt) + 8;
    lds = kt + 4;
    ldsp = span + 4;
    ldo = dhp + 4;
    const int rows = qt > kt ? (qt > pt ? qt : pt) : (kt > pt ? kt : pt);
    size_t at = 0;
    qa = carve(at, size_t(qt) * ldi * in_size);
    qb = carve(at, size_t(qt) * ldi * in_size);
    go = carve(at, size_t(qt) * ldi * in_size);
    ks = carve(at, size_t(kt) * ldi * in_size);
    vs = carve(at, size_t(kt) * ldi * in_size);
    ps = carve(at, size_t(span) * ldi * in_size);
    pm = carve(at, size_t(qt) * ldk * in_size);
    dsm = carve(at, size_t(qt) * ldk * in_size);
    // the skewed dS as an operand: [qt x span] (query pass) or [pt x qt] (position pass)
    const size_t sk1 = size_t(qt) * ldsk, sk2 = size_t(pt) * ldq;
    skew = carve(at, (sk1 > sk2 ? sk1 : sk2) * in_size);
    s = carve(at, size_t(qt) * lds * t_size);
    sp = carve(at, size_t(qt) * ldsp * t_size);
    dp = carve(at, size_t(qt) * lds * t_size);
    acc1 = carve(at, size_t(rows) * ldo * t_size);
    acc2 = carve(at, size_t(rows) * ldo * t_size);
    stats = carve(at, size_t(5) * qt * t_size);  // lse / m, delta / l, alpha, spare
    total = at;
  }
};

template <class T, class In>
struct AttnSmemView {
  In *qa, *qb, *go, *ks, *vs, *ps, *pm, *dsm, *skew;
  T *s, *sp, *dp, *acc1, *acc2, *st;
  __device__ AttnSmemView(unsigned char* base, const AttnPlan& p)
      : qa(reinterpret_cast<In*>(base + p.qa)),
        qb(reinterpret_cast<In*>(base + p.qb)),
        go(reinterpret_cast<In*>(base + p.go)),
        ks(reinterpret_cast<In*>(base + p.ks)),
        vs(reinterpret_cast<In*>(base + p.vs)),
        ps(reinterpret_cast<In*>(base + p.ps)),
        pm(reinterpret_cast<In*>(base + p.pm)),
        dsm(reinterpret_cast<In*>(base + p.dsm)),
        skew(reinterpret_cast<In*>(base + p.skew)),
        s(reinterpret_cast<T*>(base + p.s)),
        sp(reinterpret_cast<T*>(base + p.sp)),
        dp(reinterpret_cast<T*>(base + p.dp)),
        acc1(reinterpret_cast<T*>(base + p.acc1)),
        acc2(reinterpret_cast<T*>(base + p.acc2)),
        st(reinterpret_cast<T*>(base + p.stats)) {}
};

// Zeroes rows x cols of m (leading dimension ld).
template <class T>
__device__ inline void zero_tile(T* m, int ld, int rows, int cols) {
  for (int i = threadIdx.x; i < rows * cols; i += blockDim.x) m[(i / cols) * ld + i % cols] = T(0);
}

// Stages the query-side operands of queries [t0, t0 + nq) of (b, h): qa, qb and (backward) dout,
// lse and delta.
template <class T, class In>
__device__ inline void stage_queries(const AttnArgs<T>& a, const AttnPlan& pl,
                                     AttnSmemView<T, In>& v, int64_t b, int64_t h, int64_t t0,
                                     int nq, bool backward) {
  const int64_t dl = a.n_head * a.dh, dh = a.dh;
  const T* qg = a.q + (b * a.tokens + t0) * dl + h * dh;
  stage_rows(v.qa, pl.ldi, pl.qt, pl.dhp, qg, dl, 0, nq, static_cast<int>(dh),
             a.bias_a ? a.bias_a + h * dh : nullptr);
  stage_rows(v.qb, pl.ldi, pl.qt, pl.dhp, qg, dl, 0, nq, static_cast<int>(dh),
             a.bias_b ? a.bias_b + h * dh : nullptr);
  if (!backward) return;
  stage_rows(v.go, pl.ldi, pl.qt, pl.dhp, a.dout + (b * a.tokens + t0) * dl + h * dh, dl, 0, nq,
             static_cast<int>(dh));
  for (int r = threadIdx.x; r < pl.qt; r += blockDim.x) {
    const int64_t li = (b * a.n_head + h) * a.tokens + t0 + r;
    v.st[r] = r < nq ? a.lse_in[li] : T(-INFINITY);
    v.st[pl.qt + r] = r < nq ? a.delta[li] : T(0);
  }
}

// Stages keys / values [j0, j0 + nk) (when stage_kv) and positional rows [plo, phi].
template <class T, class In>
__device__ inline void stage_keys(const AttnArgs<T>& a, const AttnPlan& pl, AttnSmemView<T, In>& v,
                                  int64_t b, int64_t h, int64_t j0, int nk, int64_t plo,
                                  int64_t phi, bool stage_kv) {
  const int64_t dl = a.n_head * a.dh, dh = a.dh;
  if (stage_kv) {
    const int64_t off = b * a.key_rows * dl + h * dh;
    stage_rows(v.ks, pl.ldi, pl.kt, pl.dhp, a.k + off, dl, j0, nk, static_cast<int>(dh));
    stage_rows(v.vs, pl.ldi, pl.kt, pl.dhp, a.v + off, dl, j0, nk, static_cast<int>(dh));
  }
  stage_rows(v.ps, pl.ldi, pl.span, pl.dhp, a.pos + h * dh, dl, plo,
             phi >= plo ? static_cast<int>(phi - plo + 1) : 0, static_cast<int>(dh));
}

// S = Qa K^T plus the positional term skewed out of Sp = Qb Pos^T: v.s holds the scores of the
// visible pairs and -inf elsewhere. Ends with a barrier.
template <class T, class In, class P>
__device__ inline void scores(const AttnPlan& pl, AttnSmemView<T, In>& v, const P& pol, int64_t t0,
                              int nq, int64_t j0, int nk, int64_t plo) {
  block_gemm<false, true>(v.s, pl.lds, v.qa, pl.ldi, v.ks, pl.ldi, pl.qt, pl.kt, pl.dhp, false);
  block_gemm<false, true>(v.sp, pl.ldsp, v.qb, pl.ldi, v.ps, pl.ldi, pl.qt, pl.span, pl.dhp, false);
  __syncthreads();
  for (int i = threadIdx.x; i < pl.qt * pl.kt; i += blockDim.x) {
    const int r = i / pl.kt, c = i % pl.kt;
    const int64_t t = t0 + r, j = j0 + c;
    T sc = T(-INFINITY);
    if (r < nq && c < nk && pol.visible(t, j))
      sc = v.s[r * pl.lds + c] + v.sp[r * pl.ldsp + (pol.pidx(t, j) - plo)];
    v.s[r * pl.lds + c] = sc;
  }
  __syncthreads();
}

template <class T, class In, class P>
__global__ void __launch_bounds__(kAttnThreads)
    attn_forward_tc_kernel(AttnArgs<T> a, P pol, AttnPlan pl) {
  extern __shared__ __align__(32) unsigned char smem_raw[];
  AttnSmemView<T, In> v(smem_raw, pl);
  const int64_t H = a.n_head, dl = H * a.dh, Tn = a.tokens;
  const int64_t b = blockIdx.y / H, h = blockIdx.y % H, t0 = int64_t{blockIdx.x} * pl.qt;
  const int nq = static_cast<int>(min(int64_t{pl.qt}, Tn - t0));
  T *m = v.st, *l = v.st + pl.qt, *alpha = v.st + 2 * pl.qt, *o = v.acc1;
  stage_queries(a, pl, v, b, h, t0, nq, false);
  zero_tile(o, pl.ldo, pl.qt, pl.dhp);
  for (int r = threadIdx.x; r < pl.qt; r += blockDim.x) {
    m[r] = T(-INFINITY);
    l[r] = T(0);
  }
  const int64_t t_last = t0 + nq - 1;
  const int64_t kb = pol.key_begin(t0), ke = pol.key_end(t_last);
  for (int64_t j0 = kb; j0 < ke; j0 += pl.kt) {
    const int nk = static_cast<int>(min(int64_t{pl.kt}, ke - j0));
    int64_t plo, phi;
    pos_range(pol, t0, t_last, j0, j0 + nk - 1, plo, phi);
    __syncthreads();
    stage_keys(a, pl, v, b, h, j0, nk, plo, phi, true);
    __syncthreads();
    scores(pl, v, pol, t0, nq, j0, nk, plo);
    for (int r = threadIdx.x; r < pl.qt; r += blockDim.x) {  // online softmax, a thread per row
      const T* sr = v.s + r * pl.lds;
      In* pr = v.pm + r * pl.ldk;
      T mx = m[r];
      for (int c = 0; c < nk; ++c) mx = max(mx, sr[c]);
      T al = T(1), sum = T(0);
      if (mx != T(-INFINITY)) {
        al = exp(m[r] - mx);
        for (int c = 0; c < pl.kt; ++c) {
          const T p = c < nk ? exp(sr[c] - mx) : T(0);
          pr[c] = to_in<In>(p);
          sum += p;
        }
        m[r] = mx;
      } else {
        for (int c = 0; c < pl.kt; ++c) pr[c] = to_in<In>(T(0));
      }
      l[r] = l[r] * al + sum;
      alpha[r] = al;
    }
    __syncthreads();
    for (int i = threadIdx.x; i < pl.qt * pl.dhp; i += blockDim.x)
      v.acc1[(i / pl.dhp) * pl.ldo + i % pl.dhp] *= alpha[i / pl.dhp];
    __syncthreads();
    block_gemm<false, false>(o, pl.ldo, v.pm, pl.ldk, v.vs, pl.ldi, pl.qt, pl.dhp, pl.kt, true);
  }
  __syncthreads();
  T* og = a.out + (b * Tn + t0) * dl + h * a.dh;
  for (int i = threadIdx.x; i < nq * a.dh; i += blockDim.x) {
    const int r = static_cast<int>(i / a.dh), e = static_cast<int>(i % a.dh);
    og[r * dl + e] = l[r] > T(0) ? o[r * pl.ldo + e] / l[r] : T(0);
  }
  for (int r = threadIdx.x; r < nq; r += blockDim.x)
    a.lse[(b * H + h) * Tn + t0 + r] = l[r] > T(0) ? m[r] + log(l[r]) : T(-INFINITY);
}

// The backward's recomputation for one (query tile, key tile) pair (query operands staged):
// stages keys / positional rows, then v.s = dS (T), v.pm = P and v.dsm = dS (In). Ends with a
// barrier.
template <class T, class In, class P>
__device__ inline void recompute(const AttnArgs<T>& a, const AttnPlan& pl, AttnSmemView<T, In>& v,
                                 const P& pol, int64_t b, int64_t h, int64_t t0, int nq, int64_t j0,
                                 int nk, int64_t plo, int64_t phi, bool stage_kv) {
  __syncthreads();
  stage_keys(a, pl, v, b, h, j0, nk, plo, phi, stage_kv);
  __syncthreads();
  const T* lse = v.st;
  const T* delta = v.st + pl.qt;
  if constexpr (!kTensorCores<In>) {
    // Plain loops: each score as the float32 / float64 forward (attn_forward_kernel) computes
    // it, term for term, so that s - lse cancels the forward's rounding; dO . V[j] in double.
    for (int i = threadIdx.x; i < pl.qt * pl.kt; i += blockDim.x) {
      const int r = i / pl.kt, c = i % pl.kt;
      const int64_t t = t0 + r, j = j0 + c;
      T p = T(0), d = T(0);
      if (r < nq && c < nk && lse[r] != T(-INFINITY) && pol.visible(t, j)) {
        const In* qar = v.qa + r * pl.ldi;
        const In* qbr = v.qb + r * pl.ldi;
        const In* kr = v.ks + c * pl.ldi;
        const In* pr = v.ps + (pol.pidx(t, j) - plo) * pl.ldi;
        T sc = T(0);
        double dpv = 0.0;
        for (int e = 0; e < pl.dhp; ++e) {
          sc += qar[e] * kr[e] + qbr[e] * pr[e];
          dpv += double(v.go[r * pl.ldi + e]) * double(v.vs[c * pl.ldi + e]);
        }
        p = exp(sc - lse[r]);
        d = static_cast<T>(double(p) * (dpv - double(delta[r])));
      }
      v.s[r * pl.lds + c] = static_cast<T>(d);
      v.pm[r * pl.ldk + c] = static_cast<In>(p);
      v.dsm[r * pl.ldk + c] = static_cast<In>(d);
    }
    __syncthreads();
    return;
  }
  block_gemm<false, true>(v.dp, pl.lds, v.go, pl.ldi, v.vs, pl.ldi, pl.qt, pl.kt, pl.dhp, false);
  scores(pl, v, pol, t0, nq, j0, nk, plo);
  for (int i = threadIdx.x; i < pl.qt * pl.kt; i += blockDim.x) {
    const int r = i / pl.kt, c = i % pl.kt;
    const T sc = v.s[r * pl.lds + c];
    T p = T(0), d = T(0);
    if (sc != T(-INFINITY) && lse[r] != T(-INFINITY)) {
      p = exp(sc - lse[r]);
      d = p * (v.dp[r * pl.lds + c] - delta[r]);
    }
    v.s[r * pl.lds + c] = d;
    v.pm[r * pl.ldk + c] = to_in<In>(p);
    v.dsm[r * pl.ldk + c] = to_in<In>(d);
  }
  __syncthreads();
}

// Sum of dS[r, c] over the keys c of the tile whose positional row is prow, for query t0 + r.
template <class T, class P>
__device__ inline T skew_sum(const T* ds, int lds, const P& pol, int64_t t, int r, int64_t prow,
                             int64_t j0, int nk) {
  int64_t lo, hi;
  pol.j_range(t, prow, lo, hi);
  lo = max(lo, j0);
  hi = min(hi, j0 + nk - 1);
  T sum = T(0);
  for (int64_t j = lo; j <= hi; ++j) sum += ds[r * lds + (j - j0)];
  return sum;
}

// Query pass: dq (and the bias-gradient partials of this tile, bias_part [n_tiles, B*H, 2, dh]).
template <class T, class In, class P>
__global__ void __launch_bounds__(kAttnThreads)
    attn_backward_query_kernel(AttnArgs<T> a, P pol, AttnPlan pl, T* bias_part) {
  extern __shared__ __align__(32) unsigned char smem_raw[];
  AttnSmemView<T, In> v(smem_raw, pl);
  const int64_t H = a.n_head, dl = H * a.dh, Tn = a.tokens, dh = a.dh;
  const int64_t b = blockIdx.y / H, h = blockIdx.y % H, t0 = int64_t{blockIdx.x} * pl.qt;
  const int nq = static_cast<int>(min(int64_t{pl.qt}, Tn - t0));
  stage_queries(a, pl, v, b, h, t0, nq, true);
  zero_tile(v.acc1, pl.ldo, pl.qt, pl.dhp);
  zero_tile(v.acc2, pl.ldo, pl.qt, pl.dhp);
  const int64_t t_last = t0 + nq - 1;
  const int64_t kb = pol.key_begin(t0), ke = pol.key_end(t_last);
  for (int64_t j0 = kb; j0 < ke; j0 += pl.kt) {
    const int nk = static_cast<int>(min(int64_t{pl.kt}, ke - j0));
    int64_t plo, phi;
    pos_range(pol, t0, t_last, j0, j0 + nk - 1, plo, phi);
    recompute(a, pl, v, pol, b, h, t0, nq, j0, nk, plo, phi, true);
    block_gemm<false, false>(v.acc1, pl.ldo, v.dsm, pl.ldk, v.ks, pl.ldi, pl.qt, pl.dhp, pl.kt,
                             true);
    for (int i = threadIdx.x; i < pl.qt * pl.span; i += blockDim.x) {
      const int r = i / pl.span, pr = i % pl.span;
      T sum = T(0);
      if (r < nq && plo + pr <= phi) sum = skew_sum(v.s, pl.lds, pol, t0 + r, r, plo + pr, j0, nk);
      v.skew[r * pl.ldsk + pr] = to_in<In>(sum);
    }
    __syncthreads();
    block_gemm<false, false>(v.acc2, pl.ldo, v.skew, pl.ldsk, v.ps, pl.ldi, pl.qt, pl.dhp, pl.span,
                             true);
  }
  __syncthreads();
  if (a.dq)
    for (int i = threadIdx.x; i < nq * dh; i += blockDim.x) {
      const int r = static_cast<int>(i / dh), e = static_cast<int>(i % dh);
      a.dq[(b * Tn + t0 + r) * dl + h * dh + e] += v.acc1[r * pl.ldo + e] + v.acc2[r * pl.ldo + e];
    }
  if (bias_part)
    for (int e = threadIdx.x; e < dh; e += blockDim.x) {
      T sa = T(0), sb = T(0);
      for (int r = 0; r < nq; ++r) {
        sa += v.acc1[r * pl.ldo + e];
        sb += v.acc2[r * pl.ldo + e];
      }
      T* part = bias_part + (int64_t{blockIdx.x} * gridDim.y + blockIdx.y) * 2 * dh;
      part[e] = sa;
      part[dh + e] = sb;
    }
}

// Key pass: dK, dV of keys [j0, j0 + kt).
template <class T, class In, class P>
__global__ void __launch_bounds__(kAttnThreads)
    attn_backward_key_kernel(AttnArgs<T> a, P pol, AttnPlan pl) {
  extern __shared__ __align__(32) unsigned char smem_raw[];
  AttnSmemView<T, In> v(smem_raw, pl);
  const int64_t H = a.n_head, dl = H * a.dh, Tn = a.tokens, dh = a.dh;
  const int64_t b = blockIdx.y / H, h = blockIdx.y % H, j0 = int64_t{blockIdx.x} * pl.kt;
  const int nk = static_cast<int>(min(int64_t{pl.kt}, a.key_rows - j0));
  zero_tile(v.acc1, pl.ldo, pl.kt, pl.dhp);
  zero_tile(v.acc2, pl.ldo, pl.kt, pl.dhp);
  int64_t tb, te;
  pol.query_range(j0, j0 + nk - 1, Tn, tb, te);
  for (int64_t t0 = tb; t0 < te; t0 += pl.qt) {
    const int nq = static_cast<int>(min(int64_t{pl.qt}, te - t0));
    const int64_t t_last = t0 + nq - 1;
    int64_t plo, phi;
    pos_range(pol, t0, t_last, j0, j0 + nk - 1, plo, phi);
    __syncthreads();
    stage_queries(a, pl, v, b, h, t0, nq, true);
    recompute(a, pl, v, pol, b, h, t0, nq, j0, nk, plo, phi, t0 == tb);
    block_gemm<true, false>(v.acc1, pl.ldo, v.dsm, pl.ldk, v.qa, pl.ldi, pl.kt, pl.dhp, pl.qt,
                            true);
    block_gemm<true, false>(v.acc2, pl.ldo, v.pm, pl.ldk, v.go, pl.ldi, pl.kt, pl.dhp, pl.qt, true);
  }
  __syncthreads();
  const int64_t off = b * a.key_rows * dl + h * dh;
  for (int i = threadIdx.x; i < nk * dh; i += blockDim.x) {
    const int c = static_cast<int>(i / dh), e = static_cast<int>(i % dh);
    if (a.dk) a.dk[off + (j0 + c) * dl + e] += v.acc1[c * pl.ldo + e];
    if (a.dv) a.dv[off + (j0 + c) * dl + e] += v.acc2[c * pl.ldo + e];
  }
}

// Position pass: dPos rows [p0, p0 + pt) of head h, over every batch row and query tile.
template <class T, class In, class P>
__global__ void __launch_bounds__(kAttnThreads)
    attn_backward_pos_kernel(AttnArgs<T> a, P pol, AttnPlan pl, int64_t batch) {
  extern __shared__ __align__(32) unsigned char smem_raw[];
  AttnSmemView<T, In> v(smem_raw, pl);
  const int64_t H = a.n_head, dl = H * a.dh, Tn = a.tokens, dh = a.dh;
  const int64_t h = blockIdx.y, p0 = int64_t{blockIdx.x} * pl.pt;
  const int np = static_cast<int>(min(int64_t{pl.pt}, pol.n_pos - p0));
  const int64_t p_last = p0 + np - 1;
  zero_tile(v.acc1, pl.ldo, pl.pt, pl.dhp);
  for (int64_t b = 0; b < batch; ++b)
    for (int64_t t0 = 0; t0 < Tn; t0 += pl.qt) {
      const int nq = static_cast<int>(min(int64_t{pl.qt}, Tn - t0));
      const int64_t t_last = t0 + nq - 1;
      int64_t jb, je;
      pol.pos_keys(t0, t_last, p0, p_last, jb, je);
      jb = max(jb, pol.key_begin(t0));
      je = min(je, pol.key_end(t_last));
      if (jb >= je) continue;
      __syncthreads();
      stage_queries(a, pl, v, b, h, t0, nq, true);
      for (int64_t j0 = jb; j0 < je; j0 += pl.kt) {
        const int nk = static_cast<int>(min(int64_t{pl.kt}, je - j0));
        int64_t plo, phi;
        pos_range(pol, t0, t_last, j0, j0 + nk - 1, plo, phi);
        recompute(a, pl, v, pol, b, h, t0, nq, j0, nk, plo, phi, true);
        for (int i = threadIdx.x; i < pl.pt * pl.qt; i += blockDim.x) {
          const int pr = i / pl.qt, r = i % pl.qt;
          T sum = T(0);
          if (r < nq && pr < np) sum = skew_sum(v.s, pl.lds, pol, t0 + r, r, p0 + pr, j0, nk);
          v.skew[pr * pl.ldq + r] = to_in<In>(sum);
        }
        __syncthreads();
        block_gemm<false, false>(v.acc1, pl.ldo, v.skew, pl.ldq, v.qb, pl.ldi, pl.pt, pl.dhp, pl.qt,
                                 true);
      }
    }
  __syncthreads();
  for (int i = threadIdx.x; i < np * dh; i += blockDim.x) {
    const int pr = static_cast<int>(i / dh), e = static_cast<int>(i % dh);
    a.dpos[(p0 + pr) * dl + h * dh + e] += v.acc1[pr * pl.ldo + e];
  }
}

// dbias_a / dbias_b [H * dh] += the query pass's partials [n_tiles, B*H, 2, dh], summed in
// (tile, batch) order.
template <class T>
__global__ void attn_bias_reduce_kernel(T* dbias_a, T* dbias_b, const T* part, int64_t n_tiles,
                                        int64_t batch, int64_t n_head, int64_t dh) {
  TLS_GRID_LOOP(i, n_head * dh) {
    const int64_t h = i / dh, e = i % dh;
    T sa = T(0), sb = T(0);
    for (int64_t tile = 0; tile < n_tiles; ++tile)
      for (int64_t b = 0; b < batch; ++b) {
        const T* p = part + ((tile * batch + b) * n_head + h) * 2 * dh;
        sa += p[e];
        sb += p[dh + e];
      }
    if (dbias_a) dbias_a[i] += sa;
    if (dbias_b) dbias_b[i] += sb;
  }
}

// The plan for In: tensor cores take 32 x 32 (else 16 x 16) tiles; plain loops the largest of
// the tile sizes that fits. Fails (naming op) when none fits in smem_limit.
template <class T, class In, class P>
AttnPlan plan_attention(const char* op, const P& pol, int64_t dh, size_t smem_limit) {
  constexpr bool tc = kTensorCores<In>;
  static const int sizes[] = {32, 16, 8, 4, 2, 1};
  for (int t : sizes) {
    if (tc && t < 16) break;
    int span = pol.max_span(t, t);
    if (tc) span = (span + 15) / 16 * 16;
    const AttnPlan pl(t, t, t, span, static_cast<int>(dh), tc, sizeof(In), sizeof(T));
    if (pl.total <= smem_limit) return pl;
  }
  fail(op, "d_head " + std::to_string(dh) + " needs more shared memory than the device's " +
               std::to_string(smem_limit) + " bytes per block");
}

template <class K>
void set_smem(K* kernel, const AttnPlan& pl) {
  TLS_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                      static_cast<int>(pl.total)));
}

// Whether attention on T runs on tensor cores: float32 under --precision bf16 (GEMM inputs
// bf16) with d_head a multiple of 16; other head sizes keep the float32 kernels, said once.
template <class T>
bool use_tensor_cores(GemmInputs mode, int64_t d_head) {
  if (!std::is_same_v<T, float> || mode != GemmInputs::bf16) return false;
  if (d_head % 16 == 0) return true;
  static std::once_flag once;
  std::call_once(once, [d_head] {
    std::fprintf(stderr,
                 "tls_dist: d_head %lld is not a multiple of 16: attention stays on the float32 "
                 "kernels under --precision bf16 (the GEMMs still use bf16)\n",
                 static_cast<long long>(d_head));
  });
  return false;
}

// The forward for operands In (the tensor-core kernel when In is bf16).
template <class T, class In, class P>
void launch_attention_forward_tc(const char* op, AttnArgs<T> a, const P& pol, int64_t batch,
                                 size_t smem_limit, cudaStream_t stream) {
  if (a.tokens == 0 || batch == 0 || a.n_head == 0) return;
  if (batch * a.n_head > 65535) fail(op, "batch x heads exceeds the grid limit of 65535");
  const AttnPlan pl = plan_attention<T, In>(op, pol, a.dh, smem_limit);
  const dim3 grid(static_cast<unsigned>((a.tokens + pl.qt - 1) / pl.qt),
                  static_cast<unsigned>(batch * a.n_head));
  set_smem(attn_forward_tc_kernel<T, In, P>, pl);
  attn_forward_tc_kernel<T, In, P><<<grid, kAttnThreads, pl.total, stream>>>(a, pol, pl);
  TLS_CUDA_LAUNCHED("attn_forward_tc_kernel");
}

// The deterministic backward (three passes, then the bias reduction) for operands In.
template <class T, class In, class P>
void launch_attention_backward(const char* op, AttnArgs<T> a, const P& pol, int64_t batch,
                               size_t smem_limit, cudaStream_t stream) {
  if (a.tokens == 0 || batch == 0 || a.n_head == 0) return;
  if (batch * a.n_head > 65535) fail(op, "batch x heads exceeds the grid limit of 65535");
  const AttnPlan pl = plan_attention<T, In>(op, pol, a.dh, smem_limit);
  const unsigned bh = static_cast<unsigned>(batch * a.n_head);
  const int64_t q_tiles = (a.tokens + pl.qt - 1) / pl.qt;
  if (a.dq || a.dbias_a || a.dbias_b) {
    T* part = nullptr;
    if (a.dbias_a || a.dbias_b)
      TLS_CUDA_CHECK(cudaMallocAsync(reinterpret_cast<void**>(&part),
                                     sizeof(T) * q_tiles * bh * 2 * a.dh, stream));
    set_smem(attn_backward_query_kernel<T, In, P>, pl);
    attn_backward_query_kernel<T, In, P>
        <<<dim3(static_cast<unsigned>(q_tiles), bh), kAttnThreads, pl.total, stream>>>(a, pol, pl,
                                                                                       part);
    TLS_CUDA_LAUNCHED("attn_backward_query_kernel");
    if (part) {
      attn_bias_reduce_kernel<T><<<blocks_for(a.n_head * a.dh), kThreads, 0, stream>>>(
          a.dbias_a, a.dbias_b, part, q_tiles, batch, a.n_head, a.dh);
      TLS_CUDA_LAUNCHED("attn_bias_reduce_kernel");
      TLS_CUDA_CHECK(cudaFreeAsync(part, stream));
    }
  }
  if ((a.dk || a.dv) && a.key_rows > 0) {
    set_smem(attn_backward_key_kernel<T, In, P>, pl);
    attn_backward_key_kernel<T, In, P>
        <<<dim3(static_cast<unsigned>((a.key_rows + pl.kt - 1) / pl.kt), bh), kAttnThreads,
           pl.total, stream>>>(a, pol, pl);
    TLS_CUDA_LAUNCHED("attn_backward_key_kernel");
  }
  if (a.dpos && pol.n_pos > 0) {
    set_smem(attn_backward_pos_kernel<T, In, P>, pl);
    attn_backward_pos_kernel<T, In, P>
        <<<dim3(static_cast<unsigned>((pol.n_pos + pl.pt - 1) / pl.pt),
                static_cast<unsigned>(a.n_head)),
           kAttnThreads, pl.total, stream>>>(a, pol, pl, batch);
    TLS_CUDA_LAUNCHED("attn_backward_pos_kernel");
  }
}

// The attention of one part in `mode` (the GEMM inputs): on tensor cores where
// use_tensor_cores says so, else the float32 / float64 kernels.
template <class T, class P>
void run_attention(const char* op, bool backward, GemmInputs mode, const AttnArgs<T>& a,
                   const P& pol, int64_t batch, size_t smem_limit, cudaStream_t stream) {
  if constexpr (std::is_same_v<T, float>)
    if (use_tensor_cores<T>(mode, a.dh)) {
      if (backward)
        launch_attention_backward<T, __nv_bfloat16>(op, a, pol, batch, smem_limit, stream);
      else
        launch_attention_forward_tc<T, __nv_bfloat16>(op, a, pol, batch, smem_limit, stream);
      return;
    }
  if (backward)
    launch_attention_backward<T, T>(op, a, pol, batch, smem_limit, stream);
  else
    launch_attention_forward(op, a, pol, batch, smem_limit, stream);
}

}  // namespace tls::cuda
