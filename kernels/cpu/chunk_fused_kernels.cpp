// AVX-512 register tiles for chunk_fused_kernels.h. Each kernel keeps a tile of accumulators in
// zmm registers (24 of the 32) and streams the contraction: the scores tile is 8 rows x 48
// slots, the dQ tile 6 rows x 64 columns of d_h, the dK/dP tile 6 slots x 64 columns. Tails run
// on masked lanes (masked-off lanes are not read) and on smaller row counts (template
// instances), so any m, n and d_h work.
#include "kernels/cpu/chunk_fused_kernels.h"

#include <algorithm>
#include <atomic>
#include <stdexcept>

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define TLS_FUSED_X86 1
#endif

namespace tls::cpu {

namespace {
std::atomic<ChunkAttentionPath> g_chunk_path{ChunkAttentionPath::automatic};
}  // namespace

void set_chunk_attention_path(ChunkAttentionPath path) { g_chunk_path.store(path); }

bool chunk_attention_runs_fused(DType dtype) {
  return dtype == DType::f32 && g_chunk_path.load() != ChunkAttentionPath::gemm &&
         chunk_fused_kernels_available();
}

#ifdef TLS_FUSED_X86
namespace {

// GCC 12 warns inside its own avx512fintrin.h (the _mm512_undefined_ps of the unmasked
// intrinsics); the warning is about the header, not this code.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#pragma GCC diagnostic ignored "-Wuninitialized"
#endif

constexpr int kLanes = 16;

__attribute__((target("avx512f"))) inline __mmask16 lanes_mask(int64_t count) {
  if (count >= kLanes) return static_cast<__mmask16>(0xFFFF);
  if (count <= 0) return 0;
  return static_cast<__mmask16>((1u << count) - 1u);
}

// Scores tile: MQ rows x NV*16 slots.
template <int MQ, int NV>
__attribute__((target("avx512f"))) void scores_tile(int64_t dh, const float* qm, int64_t ldq,
                                                    const float* kt, int64_t ldk, const float* pt,
                                                    int64_t ldp, float* s, int64_t lds,
                                                    int64_t n_left) {
  __mmask16 mask[NV];
  _Pragma("GCC unroll 8") for (int v = 0; v < NV; ++v) mask[v] = lanes_mask(n_left - v * kLanes);
  __m512 acc[MQ][NV];
  _Pragma("GCC unroll 8") for (int q = 0; q < MQ; ++q)
      _Pragma("GCC unroll 8") for (int v = 0; v < NV; ++v) acc[q][v] = _mm512_setzero_ps();
  for (int64_t k = 0; k < dh; ++k) {
    __m512 key[NV];
    _Pragma("GCC unroll 8") for (int v = 0; v < NV; ++v) key[v] =
        _mm512_add_ps(_mm512_maskz_loadu_ps(mask[v], kt + k * ldk + v * kLanes),
                      _mm512_maskz_loadu_ps(mask[v], pt + k * ldp + v * kLanes));
    _Pragma("GCC unroll 8") for (int q = 0; q < MQ; ++q) {
      const __m512 b = _mm512_set1_ps(qm[q * ldq + k]);
      _Pragma("GCC unroll 8") for (int v = 0; v < NV; ++v) acc[q][v] =
          _mm512_fmadd_ps(b, key[v], acc[q][v]);
    }
  }
  _Pragma("GCC unroll 8") for (int q = 0; q < MQ; ++q)
      _Pragma("GCC unroll 8") for (int v = 0; v < NV; ++v)
          _mm512_mask_storeu_ps(s + q * lds + v * kLanes, mask[v], acc[q][v]);
}

template <int MQ>
__attribute__((target("avx512f"))) void scores_rows(int64_t n, int64_t dh, const float* qm,
                                                    int64_t ldq, const float* kt, int64_t ldk,
                                                    const float* pt, int64_t ldp, float* s,
                                                    int64_t lds) {
  constexpr int64_t kSlots = 3 * kLanes;
  int64_t j = 0;
  for (; j + kSlots <= n; j += kSlots)
    scores_tile<MQ, 3>(dh, qm, ldq, kt + j, ldk, pt + j, ldp, s + j, lds, kSlots);
  const int64_t left = n - j;
  if (left > 2 * kLanes)
    scores_tile<MQ, 3>(dh, qm, ldq, kt + j, ldk, pt + j, ldp, s + j, lds, left);
  else if (left > kLanes)
    scores_tile<MQ, 2>(dh, qm, ldq, kt + j, ldk, pt + j, ldp, s + j, lds, left);
  else if (left > 0)
    scores_tile<MQ, 1>(dh, qm, ldq, kt + j, ldk, pt + j, ldp, s + j, lds, left);
}

// dQ tile: MQ rows x NV*16 columns of d_h (from column e0), accumulated onto dq.
template <int MQ, int NV>
__attribute__((target("avx512f"))) void dq_tile(int64_t n, const float* ds, int64_t ldds,
                                                const float* k, int64_t ldk, const float* p,
                                                int64_t ldp, float* dq, int64_t lddq,
                                                int64_t e_left) {
  __mmask16 mask[NV];
  _Pragma("GCC unroll 8") for (int v = 0; v < NV; ++v) mask[v] = lanes_mask(e_left - v * kLanes);
  __m512 acc[MQ][NV];
  _Pragma("GCC unroll 8") for (int q = 0; q < MQ; ++q)
      _Pragma("GCC unroll 8") for (int v = 0; v < NV; ++v) acc[q][v] =
          _mm512_maskz_loadu_ps(mask[v], dq + q * lddq + v * kLanes);
  for (int64_t j = 0; j < n; ++j) {
    __m512 key[NV];
    _Pragma("GCC unroll 8") for (int v = 0; v < NV; ++v) key[v] =
        _mm512_add_ps(_mm512_maskz_loadu_ps(mask[v], k + j * ldk + v * kLanes),
                      _mm512_maskz_loadu_ps(mask[v], p + j * ldp + v * kLanes));
    _Pragma("GCC unroll 8") for (int q = 0; q < MQ; ++q) {
      const __m512 b = _mm512_set1_ps(ds[q * ldds + j]);
      _Pragma("GCC unroll 8") for (int v = 0; v < NV; ++v) acc[q][v] =
          _mm512_fmadd_ps(b, key[v], acc[q][v]);
    }
  }
  _Pragma("GCC unroll 8") for (int q = 0; q < MQ; ++q)
      _Pragma("GCC unroll 8") for (int v = 0; v < NV; ++v)
          _mm512_mask_storeu_ps(dq + q * lddq + v * kLanes, mask[v], acc[q][v]);
}

template <int MQ>
__attribute__((target("avx512f"))) void dq_rows(int64_t n, int64_t dh, const float* ds,
                                                int64_t ldds, const float* k, int64_t ldk,
                                                const float* p, int64_t ldp, float* dq,
                                                int64_t lddq) {
  constexpr int64_t kCols = 4 * kLanes;
  for (int64_t e = 0; e < dh; e += kCols) {
    const int64_t left = std::min(kCols, dh - e);
    if (left > 2 * kLanes)
      dq_tile<MQ, 4>(n, ds, ldds, k + e, ldk, p + e, ldp, dq + e, lddq, left);
    else if (left > kLanes)
      dq_tile<MQ, 2>(n, ds, ldds, k + e, ldk, p + e, ldp, dq + e, lddq, left);
    else
      dq_tile<MQ, 1>(n, ds, ldds, k + e, ldk, p + e, ldp, dq + e, lddq, left);
  }
}

// dK/dP tile: NS slots x NV*16 columns; u = ds^T qm over the m rows, added to dk and dp.
template <int NS, int NV>
__attribute__((target("avx512f"))) void dkdp_tile(int64_t m, const float* ds, int64_t ldds,
                                                  const float* qm, int64_t ldq, float* dk,
                                                  int64_t lddk, float* dp, int64_t lddp,
                                                  int64_t e_left) {
  __mmask16 mask[NV];
  _Pragma("GCC unroll 8") for (int v = 0; v < NV; ++v) mask[v] = lanes_mask(e_left - v * kLanes);
  __m512 acc[NS][NV];
  _Pragma("GCC unroll 8") for (int j = 0; j < NS; ++j)
      _Pragma("GCC unroll 8") for (int v = 0; v < NV; ++v) acc[j][v] = _mm512_setzero_ps();
  for (int64_t q = 0; q < m; ++q) {
    __m512 row[NV];
    _Pragma("GCC unroll 8") for (int v = 0; v < NV; ++v) row[v] =
        _mm512_maskz_loadu_ps(mask[v], qm + q * ldq + v * kLanes);
    _Pragma("GCC unroll 8") for (int j = 0; j < NS; ++j) {
      const __m512 b = _mm512_set1_ps(ds[q * ldds + j]);
      _Pragma("GCC unroll 8") for (int v = 0; v < NV; ++v) acc[j][v] =
          _mm512_fmadd_ps(b, row[v], acc[j][v]);
    }
  }
  for (float* out : {dk, dp}) {
    if (!out) continue;
    const int64_t ld = out == dk ? lddk : lddp;
    _Pragma("GCC unroll 8") for (int j = 0; j < NS; ++j)
        _Pragma("GCC unroll 8") for (int v = 0; v < NV; ++v) {
      float* o = out + j * ld + v * kLanes;
      _mm512_mask_storeu_ps(o, mask[v],
                            _mm512_add_ps(_mm512_maskz_loadu_ps(mask[v], o), acc[j][v]));
    }
  }
}

template <int NS>
__attribute__((target("avx512f"))) void dkdp_slots(int64_t m, int64_t dh, const float* ds,
                                                   int64_t ldds, const float* qm, int64_t ldq,
                                                   float* dk, int64_t lddk, float* dp,
                                                   int64_t lddp) {
  constexpr int64_t kCols = 4 * kLanes;
  for (int64_t e = 0; e < dh; e += kCols) {
    const int64_t left = std::min(kCols, dh - e);
    float* dke = dk ? dk + e : nullptr;
    float* dpe = dp ? dp + e : nullptr;
    if (left > 2 * kLanes)
      dkdp_tile<NS, 4>(m, ds, ldds, qm + e, ldq, dke, lddk, dpe, lddp, left);
    else if (left > kLanes)
      dkdp_tile<NS, 2>(m, ds, ldds, qm + e, ldq, dke, lddk, dpe, lddp, left);
    else
      dkdp_tile<NS, 1>(m, ds, ldds, qm + e, ldq, dke, lddk, dpe, lddp, left);
  }
}

// Calls f.template operator()<R>() with R = count (1 .. 8), for the row-count template tails.
template <class F>
void with_rows(int64_t count, F&& f) {
  switch (count) {
    case 1:
      f.template operator()<1>();
      break;
    case 2:
      f.template operator()<2>();
      break;
    case 3:
      f.template operator()<3>();
      break;
    case 4:
      f.template operator()<4>();
      break;
    case 5:
      f.template operator()<5>();
      break;
    case 6:
      f.template operator()<6>();
      break;
    case 7:
      f.template operator()<7>();
      break;
    case 8:
      f.template operator()<8>();
      break;
    default:
      throw std::logic_error("with_rows: count out of range");
  }
}

#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic pop
#endif

}  // namespace

bool chunk_fused_kernels_available() {
  __builtin_cpu_init();
  return __builtin_cpu_supports("avx512f");
}

void fused_chunk_scores(int64_t m, int64_t n, int64_t dh, const float* qm, int64_t ldq,
                        const float* kt, int64_t ldk, const float* pt, int64_t ldp, float* s,
                        int64_t lds) {
  constexpr int64_t kRows = 8;
  for (int64_t q = 0; q < m; q += kRows)
    with_rows(std::min(kRows, m - q), [&]<int R>() {
      scores_rows<R>(n, dh, qm + q * ldq, ldq, kt, ldk, pt, ldp, s + q * lds, lds);
    });
}

void fused_chunk_dq(int64_t m, int64_t n, int64_t dh, const float* ds, int64_t ldds, const float* k,
                    int64_t ldk, const float* p, int64_t ldp, float* dq, int64_t lddq) {
  constexpr int64_t kRows = 6;
  for (int64_t q = 0; q < m; q += kRows)
    with_rows(std::min(kRows, m - q), [&]<int R>() {
      dq_rows<R>(n, dh, ds + q * ldds, ldds, k, ldk, p, ldp, dq + q * lddq, lddq);
    });
}

void fused_chunk_dkdp(int64_t m, int64_t n, int64_t dh, const float* ds, int64_t ldds,
                      const float* qm, int64_t ldq, float* dk, int64_t lddk, float* dp,
                      int64_t lddp) {
  constexpr int64_t kSlots = 6;
  for (int64_t j = 0; j < n; j += kSlots)
    with_rows(std::min(kSlots, n - j), [&]<int S>() {
      dkdp_slots<S>(m, dh, ds + j, ldds, qm, ldq, dk ? dk + j * lddk : nullptr, lddk,
                    dp ? dp + j * lddp : nullptr, lddp);
    });
}

#else  // not x86: the GEMM path runs instead

bool chunk_fused_kernels_available() { return false; }
void fused_chunk_scores(int64_t, int64_t, int64_t, const float*, int64_t, const float*, int64_t,
                        const float*, int64_t, float*, int64_t) {
  throw std::logic_error("fused_chunk_scores: no AVX-512 on this architecture");
}
void fused_chunk_dq(int64_t, int64_t, int64_t, const float*, int64_t, const float*, int64_t,
                    const float*, int64_t, float*, int64_t) {
  throw std::logic_error("fused_chunk_dq: no AVX-512 on this architecture");
}
void fused_chunk_dkdp(int64_t, int64_t, int64_t, const float*, int64_t, const float*, int64_t,
                      float*, int64_t, float*, int64_t) {
  throw std::logic_error("fused_chunk_dkdp: no AVX-512 on this architecture");
}

#endif

}  // namespace tls::cpu
