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
// one query tile's scores per thread (about 128 x slots); the backward's threads split the heads
// so gradient writes never race.
#include <algorithm>
#include <cmath>
#include <limits>
#include <memory>
#include <vector>

#include "kernels/cpu/blas_tiles.h"
#include "kernels/cpu/cpu_ops.h"
#include "kernels/cpu/softmax_row.h"
#include "kernels/cpu/vector_exp.h"
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

// Query tiles: G consecutive query chunks (about kTileRows query rows) are scored together. The
// content scores q . khat[j] of the whole tile are one GEMM against the slots visible to its last
// chunk, and the positional scores q . pos[id] another against the ids the tile uses; the
// relative id g_q r - 1 - j of each (row, slot) then picks its positional score (the chunked
// relative shift, applied to scores instead of building a key matrix per chunk). Slots a row
// cannot see (j >= g_q r, for the tile's earlier chunks) get probability 0. The weighted sum is
// a third GEMM. Every GEMM has about kTileRows rows, which OpenBLAS runs near its full rate.
constexpr int64_t kTileRows = 256;

struct ChunkTiling {
  int64_t chunks_per_tile, n_tiles, max_rows;
  explicit ChunkTiling(const AttentionShape& s) {
    const int64_t n_chunks = s.tokens / s.chunk_size;
    chunks_per_tile = std::max<int64_t>(1, kTileRows / s.chunk_size);
    n_tiles = (n_chunks + chunks_per_tile - 1) / chunks_per_tile;
    max_rows = chunks_per_tile * s.chunk_size;
  }
};

// One tile's geometry: rows t0 .. t0 + rows of the block, its chunks' visible slot counts.
struct ChunkTileGeometry {
  int64_t t0 = 0, rows = 0;
  int64_t nv_max = 0;  // slots visible to the tile's last chunk (the GEMMs' width)
  int64_t ids = 0;     // positional ids the tile may use: 0 .. ids-1
  ChunkTileGeometry(const AttentionShape& s, const ChunkTiling& tiling, int64_t tile,
                    int64_t n_slots, int64_t n_pos) {
    const int64_t c = s.chunk_size, n_chunks = s.tokens / c;
    const int64_t first = tile * tiling.chunks_per_tile;
    const int64_t last = std::min(n_chunks, first + tiling.chunks_per_tile) - 1;
    t0 = first * c;
    rows = (last - first + 1) * c;
    nv_max = visible_slots(s, last * c, n_slots);
    // Row i's ids are g_q r - 1 - j <= g_q r - 1, clamped to n_pos - 1.
    ids = std::clamp<int64_t>((s.first_query_chunk + last) * s.chunk_rank, 0, n_pos);
  }
  // Global query chunk of tile row i.
  int64_t g_q(const AttentionShape& s, int64_t i) const {
    return s.first_query_chunk + (t0 + i) / s.chunk_size;
  }
};

// scores[i, j] = q_i . khat[j] + q_i . pos[id(i, j)] for j < nv(i) (GEMMs into `scores` and
// `qpos`, then the shift). Returns nothing for j >= nv(i); callers mask those.
template <class T>
void chunk_tile_scores(T* scores, T* qpos, const T* q, const T* khat, const T* pos,
                       const ChunkTileGeometry& g, int64_t b, int64_t ho, int64_t n_slots,
                       int64_t n_pos, const AttentionShape& s) {
  const int64_t dl = s.n_head * s.d_head, dh = s.d_head, Tn = s.tokens, r = s.chunk_rank;
  const T* qt = q + (b * Tn + g.t0) * dl + ho;
  const int rows = static_cast<int>(g.rows), nv = static_cast<int>(g.nv_max),
            ids = static_cast<int>(g.ids), idh = static_cast<int>(dh), idl = static_cast<int>(dl);
  cpu::gemm_tile(false, true, rows, nv, idh, T(1), qt, idl, khat + b * n_slots * dl + ho, idl, T(0),
                 scores, nv);
  cpu::gemm_tile(false, true, rows, ids, idh, T(1), qt, idl, pos + ho, idl, T(0), qpos, ids);
  for (int64_t i = 0; i < g.rows; ++i) {
    const int64_t top = g.g_q(s, i) * r - 1;  // id of slot 0
    const int64_t nv_i = std::min(top + 1, g.nv_max);
    T* row = scores + i * g.nv_max;
    const T* qp = qpos + i * g.ids;
    const int64_t unclamped_from =
        std::max<int64_t>(0, top - (n_pos - 1));  // id <= n_pos-1 from here
    for (int64_t j = 0; j < std::min(unclamped_from, nv_i); ++j) row[j] += qp[n_pos - 1];
    for (int64_t j = unclamped_from; j < nv_i; ++j) row[j] += qp[top - j];
  }
}

template <class T>
void chunk_forward(T* out, T* lse, const T* q, const T* khat, const T* vhat, const T* pos,
                   int64_t n_slots, int64_t n_pos, const AttentionShape& s) {
  const int64_t B = s.batch, Tn = s.tokens, H = s.n_head, dh = s.d_head, dl = H * dh;
  const int64_t r = s.chunk_rank;
  const ChunkTiling tiling(s);
#pragma omp parallel
  {
    // Scratch is written before it is read, so it is left uninitialised.
    std::unique_ptr<T[]> scores(new T[static_cast<size_t>(tiling.max_rows * n_slots)]);
    std::unique_ptr<T[]> qpos(
        new T[static_cast<size_t>(tiling.max_rows * std::max<int64_t>(n_pos, 1))]);
#pragma omp for collapse(3) schedule(dynamic)
    for (int64_t b = 0; b < B; ++b)
      for (int64_t h = 0; h < H; ++h)
        for (int64_t k = 0; k < tiling.n_tiles; ++k) {
          const int64_t ho = h * dh;
          const ChunkTileGeometry g(s, tiling, k, n_slots, n_pos);
          T* o = out + (b * Tn + g.t0) * dl + ho;
          T* l = lse + (b * H + h) * Tn + g.t0;
          if (g.nv_max == 0) {  // no row of the tile sees a slot
            for (int64_t i = 0; i < g.rows; ++i) {
              std::fill(o + i * dl, o + i * dl + dh, T(0));
              l[i] = -std::numeric_limits<T>::infinity();
            }
            continue;
          }
          chunk_tile_scores(scores.get(), qpos.get(), q, khat, pos, g, b, ho, n_slots, n_pos, s);
          for (int64_t i = 0; i < g.rows; ++i) {
            T* row = scores.get() + i * g.nv_max;
            const int64_t nv_i = std::clamp<int64_t>(g.g_q(s, i) * r, 0, g.nv_max);
            std::fill(row + nv_i, row + g.nv_max, T(0));
            if (nv_i == 0) {
              l[i] = -std::numeric_limits<T>::infinity();
              continue;
            }
            l[i] = cpu::softmax_in_place(row, nv_i);
          }
          cpu::gemm_tile(false, false, static_cast<int>(g.rows), static_cast<int>(dh),
                         static_cast<int>(g.nv_max), T(1), scores.get(), static_cast<int>(g.nv_max),
                         vhat + b * n_slots * dl + ho, static_cast<int>(dl), T(0), o,
                         static_cast<int>(dl));
        }
  }
}

template <class T>
void chunk_backward(T* dq, T* dkhat, T* dvhat, T* dpos, const T* dout, const T* lse, const T* delta,
                    const T* q, const T* khat, const T* vhat, const T* pos, int64_t n_slots,
                    int64_t n_pos, const AttentionShape& s) {
  const int64_t B = s.batch, Tn = s.tokens, H = s.n_head, dh = s.d_head, dl = H * dh;
  const int64_t r = s.chunk_rank;
  const ChunkTiling tiling(s);
  const int idh = static_cast<int>(dh), idl = static_cast<int>(dl);
  // Threads own heads: every slot's and position's gradient of head h has one writer.
#pragma omp parallel
  {
    const size_t score_size = static_cast<size_t>(tiling.max_rows * n_slots),
                 pos_size = static_cast<size_t>(tiling.max_rows * std::max<int64_t>(n_pos, 1));
    std::unique_ptr<T[]> probs(new T[score_size]), dprobs(new T[score_size]);
    std::unique_ptr<T[]> qpos(new T[pos_size]), dqpos(new T[pos_size]);
#pragma omp for schedule(dynamic)
    for (int64_t h = 0; h < H; ++h)
      for (int64_t b = 0; b < B; ++b)
        for (int64_t k = 0; k < tiling.n_tiles; ++k) {
          const int64_t ho = h * dh;
          const ChunkTileGeometry g(s, tiling, k, n_slots, n_pos);
          if (g.nv_max == 0) continue;
          const int rows = static_cast<int>(g.rows), nv = static_cast<int>(g.nv_max),
                    ids = static_cast<int>(g.ids);
          const T* qt = q + (b * Tn + g.t0) * dl + ho;
          const T* go = dout + (b * Tn + g.t0) * dl + ho;
          const T* kb = khat + b * n_slots * dl + ho;
          const T* vb = vhat + b * n_slots * dl + ho;
          chunk_tile_scores(probs.get(), qpos.get(), q, khat, pos, g, b, ho, n_slots, n_pos, s);
          cpu::gemm_tile(false, true, rows, nv, idh, T(1), go, idl, vb, idl, T(0), dprobs.get(),
                         nv);
          std::fill(dqpos.get(), dqpos.get() + g.rows * g.ids, T(0));
          for (int64_t i = 0; i < g.rows; ++i) {
            const int64_t li = (b * H + h) * Tn + g.t0 + i;
            const T l = static_cast<T>(lse[li]);
            const double dlt = delta[li];
            const int64_t top = g.g_q(s, i) * r - 1;
            const int64_t nv_i = std::clamp<int64_t>(top + 1, 0, g.nv_max);
            T* p = probs.get() + i * g.nv_max;
            T* dp = dprobs.get() + i * g.nv_max;
            T* dqp = dqpos.get() + i * g.ids;
            cpu::exp_shifted(p, nv_i, l);
            for (int64_t j = 0; j < nv_i; ++j)
              dp[j] = static_cast<T>(p[j] * (static_cast<double>(dp[j]) - dlt));  // ds
            // Row i's positional gradient: slot j's ds goes to id top - j; ids past the last
            // row of pos were clamped to it.
            const int64_t unclamped_from = std::clamp<int64_t>(top - (n_pos - 1), 0, nv_i);
            T clamped = 0;
            for (int64_t j = 0; j < unclamped_from; ++j) clamped += dp[j];
            if (unclamped_from > 0) dqp[n_pos - 1] += clamped;
            for (int64_t j = unclamped_from; j < nv_i; ++j) dqp[top - j] += dp[j];
            std::fill(p + nv_i, p + g.nv_max, T(0));
            std::fill(dp + nv_i, dp + g.nv_max, T(0));
          }
          T* dqt = dq ? dq + (b * Tn + g.t0) * dl + ho : nullptr;
          if (dqt) {
            cpu::gemm_tile(false, false, rows, idh, nv, T(1), dprobs.get(), nv, kb, idl, T(1), dqt,
                           idl);
            cpu::gemm_tile(false, false, rows, idh, ids, T(1), dqpos.get(), ids, pos + ho, idl,
                           T(1), dqt, idl);
          }
          if (dvhat)
            cpu::gemm_tile(true, false, nv, idh, rows, T(1), probs.get(), nv, go, idl, T(1),
                           dvhat + b * n_slots * dl + ho, idl);
          if (dkhat)
            cpu::gemm_tile(true, false, nv, idh, rows, T(1), dprobs.get(), nv, qt, idl, T(1),
                           dkhat + b * n_slots * dl + ho, idl);
          if (dpos)
            cpu::gemm_tile(true, false, ids, idh, rows, T(1), dqpos.get(), ids, qt, idl, T(1),
                           dpos + ho, idl);
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

template <class T>
T* ptr_or_null(const Tensor& t) {
  return t.defined() ? t.data<T>() : nullptr;
}

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
    chunk_backward(ptr_or_null<double>(dq), ptr_or_null<double>(dkhat), ptr_or_null<double>(dvhat),
                   ptr_or_null<double>(dpos), dout.data<double>(), lse.data<double>(),
                   delta.data<double>(), q.data<double>(), khat.data<double>(), vhat.data<double>(),
                   pos.data<double>(), n_slots, n_pos, s);
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
