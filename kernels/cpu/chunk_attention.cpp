// The long-range (dynamic projection) part of LS attention, docs/DESIGN.md section 1.1, and the
// merge of the two parts' softmaxes.
//
// Query t lies in global chunk g_q = first_query_chunk + t / c and sees the compressed slots
// j = g*r + k with g < g_q, i.e. j < g_q * r. The relative id of slot j is
// (g_q - g)*r - 1 - k = g_q*r - 1 - j (the reference's chunked relative shift), clamped to the
// last row of pos (cpos_clamp_len is applied when pos is built). Score:
//   s[t, j] = q_t . (khat[j] + pos[id(t, j)])
// As in window_attention.cpp, the forward returns this part's own normalised output and lse,
// the backward takes the merged lse and delta, recomputes the scores and accumulates. Memory is
// a few blocks of one query tile's scores per thread (kTileRows x kSlotBlock each, whatever T
// is); the backward's threads split the heads so gradient writes never race.
#include <omp.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <memory>
#include <optional>
#include <type_traits>
#include <vector>

#include "kernels/cpu/blas_tiles.h"
#include "kernels/cpu/chunk_fused_kernels.h"
#include "kernels/cpu/cpu_ops.h"
#include "kernels/cpu/kernel_scratch.h"
#include "kernels/cpu/softmax_row.h"
#include "kernels/cpu/vector_exp.h"
#include "kernels/error.h"

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

// Query tiles: G consecutive query chunks (about kTileRows query rows) are scored together, and
// the slots they see are taken in blocks of kSlotBlock, so one block's scores stay in the core's
// cache between the passes over them (flash-attention style: the forward keeps a running max
// and sum per row, the backward needs neither). Per (tile, block) the content scores q . khat[j]
// are one GEMM and the positional scores q . pos[id] another, over the ids the block can use;
// the relative id g_q r - 1 - j of each (row, slot) then picks its positional score (the
// chunked relative shift, applied to scores instead of building a key matrix per chunk). Slots a
// row cannot see (j >= g_q r, for the tile's earlier chunks) get probability 0.
constexpr int64_t kTileRows = 256;
constexpr int64_t kSlotBlock = 256;

struct ChunkTiling {
  int64_t chunks_per_tile, n_tiles, max_rows;
  explicit ChunkTiling(const AttentionShape& s) {
    const int64_t n_chunks = s.tokens / s.chunk_size;
    chunks_per_tile = std::max<int64_t>(1, kTileRows / s.chunk_size);
    n_tiles = (n_chunks + chunks_per_tile - 1) / chunks_per_tile;
    max_rows = chunks_per_tile * s.chunk_size;
  }
  // Positional ids one (tile, block) can use: the block's width plus the spread of the tile's
  // rows' top ids.
  int64_t max_ids(const AttentionShape& s) const {
    return kSlotBlock + chunks_per_tile * s.chunk_rank;
  }
};

// One tile's geometry: its rows t0 .. t0 + rows, the slots its last chunk sees, its rows' ids.
struct ChunkTileGeometry {
  int64_t t0 = 0, rows = 0;
  int64_t nv_max = 0;                   // slots visible to the tile's last chunk
  int64_t top_first = 0, top_last = 0;  // id of slot 0 for the first and the last row
  ChunkTileGeometry(const AttentionShape& s, const ChunkTiling& tiling, int64_t tile,
                    int64_t n_slots) {
    const int64_t c = s.chunk_size, n_chunks = s.tokens / c;
    const int64_t first = tile * tiling.chunks_per_tile;
    const int64_t last = std::min(n_chunks, first + tiling.chunks_per_tile) - 1;
    t0 = first * c;
    rows = (last - first + 1) * c;
    nv_max = visible_slots(s, last * c, n_slots);
    top_first = (s.first_query_chunk + first) * s.chunk_rank - 1;
    top_last = (s.first_query_chunk + last) * s.chunk_rank - 1;
  }
  // Global query chunk of tile row i, and the relative id of slot 0 for it.
  int64_t g_q(const AttentionShape& s, int64_t i) const {
    return s.first_query_chunk + (t0 + i) / s.chunk_size;
  }
  int64_t top(const AttentionShape& s, int64_t i) const { return g_q(s, i) * s.chunk_rank - 1; }
};

// Slots j0 .. j0 + width of a tile, and the ids lo .. hi of pos its scores use (ids past the
// last row of pos were clamped to it). The kernels read pos with its rows reversed (row
// n_pos - 1 - id), so the block's positional scores are the columns m = hi - id of one GEMM
// against the reversed rows n_pos - 1 - hi .. n_pos - 1 - lo: along a row of scores (id = top - j)
// m = hi - top + j grows with j, and the shift is a contiguous add.
struct SlotBlock {
  int64_t j0, width, lo, hi, n_ids;
  SlotBlock(const ChunkTileGeometry& g, int64_t j0_, int64_t n_pos)
      : j0(j0_), width(std::min(kSlotBlock, g.nv_max - j0_)) {
    lo = std::min(std::max<int64_t>(0, g.top_first - (j0 + width - 1)), n_pos - 1);
    hi = std::clamp(g.top_last - j0, lo, n_pos - 1);
    n_ids = hi - lo + 1;
  }
  // First row of the reversed pos this block reads.
  int64_t reversed_first(int64_t n_pos) const { return n_pos - 1 - hi; }
  // Slots of this block that tile row i sees: 0 .. visible(i).
  int64_t visible(const AttentionShape& s, const ChunkTileGeometry& g, int64_t i) const {
    return std::clamp<int64_t>(g.top(s, i) + 1 - j0, 0, width);
  }
};

// scores[i, j] = q_i . khat[j0 + j] + q_i . pos[id(i, j0 + j)] for j < blk.visible(i) (GEMMs
// into `scores` and `qpos`, then the shift); entries past that are left unspecified. pos_rev:
// pos with its rows reversed.
template <class T>
void chunk_block_scores(T* scores, T* qpos, const T* qt, const T* kb, const T* pos_rev,
                        const ChunkTileGeometry& g, const SlotBlock& blk, int64_t n_pos,
                        const AttentionShape& s) {
  const int64_t dl = s.n_head * s.d_head;  // qt, kb and pos point at the head's columns
  const int idh = static_cast<int>(s.d_head), idl = static_cast<int>(dl);
  const int rows = static_cast<int>(g.rows), w = static_cast<int>(blk.width),
            ids = static_cast<int>(blk.n_ids);
  cpu::gemm_tile(false, true, rows, w, idh, T(1), qt, idl, kb + blk.j0 * dl, idl, T(0), scores, w);
  cpu::gemm_tile(false, true, rows, ids, idh, T(1), qt, idl,
                 pos_rev + blk.reversed_first(n_pos) * dl, idl, T(0), qpos, ids);
  for (int64_t i = 0; i < g.rows; ++i) {
    const int64_t n = blk.visible(s, g, i);
    if (n == 0) continue;
    T* row = scores + i * blk.width;
    const T* qp = qpos + i * blk.n_ids;        // qp[hi - id]
    const int64_t top = g.top(s, i) - blk.j0;  // id of row[j] is top - j
    // ids above n_pos - 1 were clamped to it: j < top - (n_pos - 1).
    const int64_t unclamped_from = std::clamp<int64_t>(top - (n_pos - 1), 0, n);
    if (unclamped_from > 0) {  // only then is the clamped id among the block's columns
      const T clamped = qp[blk.hi - (n_pos - 1)];
      for (int64_t j = 0; j < unclamped_from; ++j) row[j] += clamped;
    }
    const int64_t base = blk.hi - top;  // column of row[j] is base + j = hi - (top - j) >= 0
    for (int64_t j = unclamped_from; j < n; ++j) row[j] += qp[base + j];
  }
}

// pos [n_pos, dl] with its rows in reverse order, after `pad` copies of its last row, one per id
// past it that a query reaches (a host tensor: see kernel_scratch.h). Row m holds id
// pad + n_pos - 1 - m, clamped: the GEMM path reads from row pad on (it clamps on the scores), the
// fused path reads any row, so a chunk's positional rows are always a contiguous run.
template <class T>
Tensor reversed_pos(const T* pos, int64_t n_pos, const AttentionShape& s) {
  Tensor out = Tensor::empty(cpu::scratch::chunk_reversed_pos(n_pos, s), dtype_of<T>());
  const int64_t cols = out.dim(1), pad = out.dim(0) - n_pos;
  T* o = out.data<T>();
  for (int64_t m = 0; m < pad; ++m) std::copy_n(pos + (n_pos - 1) * cols, cols, o + m * cols);
  for (int64_t k = 0; k < n_pos; ++k)
    std::copy_n(pos + (n_pos - 1 - k) * cols, cols, o + (pad + k) * cols);
  return out;
}

// The fused path's transposed tables (kernel_scratch.h) for `heads_at_once` heads: slot i holds
// one head's khat as [d_h][slot] and its extended reversed pos as [d_h][row], so the scores
// kernel reads along slots. Rows are padded; the padding is never read.
struct TransposedTables {
  Tensor khat_t, pos_t;
  int64_t ld_khat = 0, ld_pos = 0;
  TransposedTables() = default;
  TransposedTables(int64_t heads_at_once, int64_t n_slots, int64_t n_pos, const AttentionShape& s)
      : khat_t(Tensor::empty(cpu::scratch::chunk_transposed_khat(n_slots, heads_at_once, s),
                             DType::f32)),
        pos_t(
            Tensor::empty(cpu::scratch::chunk_transposed_pos(n_pos, heads_at_once, s), DType::f32)),
        ld_khat(khat_t.dim(2)),
        ld_pos(pos_t.dim(2)) {}
  float* khat(int64_t slot) { return khat_t.data<float>() + slot * khat_t.dim(1) * ld_khat; }
  float* pos(int64_t slot) { return pos_t.data<float>() + slot * pos_t.dim(1) * ld_pos; }
};

// dst[e * ld + j] = src[j * ld_src + e] for j < n, e < dh: one head's rows, transposed. Split over
// the threads when `parallel` (called outside a parallel region), else on the calling thread.
void transpose_head(float* dst, int64_t ld, const float* src, int64_t ld_src, int64_t n, int64_t dh,
                    bool parallel) {
  constexpr int64_t kRows = 64;
#pragma omp parallel for schedule(static) if (parallel)
  for (int64_t j0 = 0; j0 < n; j0 += kRows)
    for (int64_t j = j0; j < std::min(n, j0 + kRows); ++j)
      for (int64_t e = 0; e < dh; ++e) dst[e * ld + j] = src[j * ld_src + e];
}

// The fused path's scores for one (tile, block): chunk by chunk, q . (khat[j] + pos[id]) with the
// chunk's positional rows a contiguous run of the extended reversed table (from row m0).
void fused_block_scores(cpu::FusedLanes lanes, float* scores, const float* qt, const float* kt,
                        int64_t ld_khat, const float* pt, int64_t ld_pos,
                        const ChunkTileGeometry& g, const SlotBlock& blk, int64_t n_pos,
                        int64_t pad, const AttentionShape& s) {
  const int64_t c = s.chunk_size, dl = s.n_head * s.d_head;
  for (int64_t i = 0; i < g.rows; i += c) {
    const int64_t n = blk.visible(s, g, i);
    if (n == 0) continue;
    const int64_t m0 = pad + n_pos - 1 - g.top(s, i) + blk.j0;
    cpu::fused_chunk_scores(lanes, c, n, s.d_head, qt + i * dl, dl, kt + blk.j0, ld_khat, pt + m0,
                            ld_pos, scores + i * blk.width, blk.width);
  }
}

// The fused path's backward for one (tile, block), given the recomputed scores in `probs` and
// dP = dO V^T in `dprobs`: per row P and dS; dV = P^T dO (a GEMM over the tile), and per chunk
// dQ += dS (khat + pos) and dS^T Q added to both khat's and the positional rows' gradients.
void fused_block_backward(cpu::FusedLanes lanes, float* probs, float* dprobs, float* dqt,
                          float* dkhat, float* dvhat, float* dpos_ext, const float* qt,
                          const float* go, const float* kb, const float* pos_ext, const float* lse,
                          const float* delta, const ChunkTileGeometry& g, const SlotBlock& blk,
                          int64_t b, int64_t h, int64_t n_slots, int64_t n_pos, int64_t pad,
                          const AttentionShape& s) {
  const int64_t H = s.n_head, dh = s.d_head, dl = H * dh, c = s.chunk_size, ho = h * dh;
  const int64_t j0 = blk.j0, width = blk.width;
  for (int64_t i = 0; i < g.rows; ++i) {
    const int64_t li = (b * H + h) * s.tokens + g.t0 + i;
    const int64_t n = blk.visible(s, g, i);
    float* p = probs + i * width;
    float* dp = dprobs + i * width;
    if (n > 0) cpu::softmax_backward_row(p, dp, n, lse[li], delta[li]);  // dp becomes dS
    std::fill(p + n, p + width, 0.0f);
    std::fill(dp + n, dp + width, 0.0f);
  }
  if (dvhat)
    cpu::gemm_tile(true, false, static_cast<int>(width), static_cast<int>(dh),
                   static_cast<int>(g.rows), 1.0f, probs, static_cast<int>(width), go,
                   static_cast<int>(dl), 1.0f, dvhat + (b * n_slots + j0) * dl + ho,
                   static_cast<int>(dl));
  for (int64_t i = 0; i < g.rows; i += c) {
    const int64_t n = blk.visible(s, g, i);
    if (n == 0) continue;
    const int64_t m0 = pad + n_pos - 1 - g.top(s, i) + j0;  // first positional row of slot j0
    if (dqt)
      cpu::fused_chunk_dq(lanes, c, n, dh, dprobs + i * width, width, kb + j0 * dl, dl,
                          pos_ext + m0 * dl + ho, dl, dqt + i * dl, dl);
    if (dkhat || dpos_ext)
      cpu::fused_chunk_dkdp(lanes, c, n, dh, dprobs + i * width, width, qt + i * dl, dl,
                            dkhat ? dkhat + (b * n_slots + j0) * dl + ho : nullptr, dl,
                            dpos_ext ? dpos_ext + m0 * dl + ho : nullptr, dl);
  }
}

template <class T>
void chunk_forward(T* out, T* lse, const T* q, const T* khat, const T* vhat, const T* pos,
                   int64_t n_slots, int64_t n_pos, const AttentionShape& s) {
  const int64_t B = s.batch, Tn = s.tokens, H = s.n_head, dh = s.d_head, dl = H * dh;
  const int idh = static_cast<int>(dh), idl = static_cast<int>(dl);
  const ChunkTiling tiling(s);
  constexpr T kNegInf = -std::numeric_limits<T>::infinity();
  const Tensor pos_reversed = reversed_pos(pos, n_pos, s);
  const int64_t pad = pos_reversed.dim(0) - n_pos;
  const T* pos_rev = pos_reversed.data<T>() + pad * dl;  // row k: id n_pos - 1 - k
  const std::optional<cpu::FusedLanes> lanes = cpu::chunk_attention_fused_lanes(dtype_of<T>());
  const bool fused = lanes.has_value();
  // The fused path takes one (head, batch) at a time, its tiles over the threads, so one head's
  // transposed tables serve them all; the GEMM path spreads every (batch, head, tile).
  TransposedTables tables;
  if (fused) tables = TransposedTables(1, n_slots, n_pos, s);
  const int64_t passes = fused ? B * H : 1;
  for (int64_t pass = 0; pass < passes; ++pass) {
    const int64_t h_lo = fused ? pass / B : 0, h_hi = fused ? h_lo + 1 : H;
    const int64_t b_lo = fused ? pass % B : 0, b_hi = fused ? b_lo + 1 : B;
    if constexpr (std::is_same_v<T, float>)
      if (fused) {
        if (b_lo == 0)  // pos is the batch's
          transpose_head(tables.pos(0), tables.ld_pos, pos_reversed.data<float>() + h_lo * dh, dl,
                         pos_reversed.dim(0), dh, true);
        transpose_head(tables.khat(0), tables.ld_khat, khat + b_lo * n_slots * dl + h_lo * dh, dl,
                       n_slots, dh, true);
      }
#pragma omp parallel
    {
      // Scratch is written before it is read, so it is left uninitialised.
      std::unique_ptr<T[]> scores(new T[static_cast<size_t>(tiling.max_rows * kSlotBlock)]);
      // The GEMM path's positional scores (the fused path forms the key sums in registers).
      std::unique_ptr<T[]> qpos(
          fused ? nullptr : new T[static_cast<size_t>(tiling.max_rows * tiling.max_ids(s))]);
      std::vector<T> row_max(static_cast<size_t>(tiling.max_rows));
      std::vector<double> row_sum(static_cast<size_t>(tiling.max_rows));
#pragma omp for collapse(3) schedule(dynamic)
      for (int64_t b = b_lo; b < b_hi; ++b)
        for (int64_t h = h_lo; h < h_hi; ++h)
          for (int64_t k = 0; k < tiling.n_tiles; ++k) {
            const int64_t ho = h * dh;
            const ChunkTileGeometry g(s, tiling, k, n_slots);
            const T* qt = q + (b * Tn + g.t0) * dl + ho;
            const T* kb = khat + b * n_slots * dl + ho;
            const T* vb = vhat + b * n_slots * dl + ho;
            T* o = out + (b * Tn + g.t0) * dl + ho;
            T* l = lse + (b * H + h) * Tn + g.t0;
            // o accumulates the unnormalised weighted sum, rescaled when a row's max grows.
            for (int64_t i = 0; i < g.rows; ++i) std::fill(o + i * dl, o + i * dl + dh, T(0));
            std::fill(row_max.begin(), row_max.end(), kNegInf);
            std::fill(row_sum.begin(), row_sum.end(), 0.0);
            for (int64_t j0 = 0; j0 < g.nv_max; j0 += kSlotBlock) {
              const SlotBlock blk(g, j0, n_pos);
              if constexpr (std::is_same_v<T, float>) {
                if (fused)
                  fused_block_scores(*lanes, scores.get(), qt, tables.khat(0), tables.ld_khat,
                                     tables.pos(0), tables.ld_pos, g, blk, n_pos, pad, s);
              }
              if (!fused)
                chunk_block_scores(scores.get(), qpos.get(), qt, kb, pos_rev + ho, g, blk, n_pos,
                                   s);
              for (int64_t i = 0; i < g.rows; ++i) {
                T* row = scores.get() + i * blk.width;
                const int64_t n = blk.visible(s, g, i);
                if (n > 0) {
                  const T mx = std::max(row_max[i], cpu::row_max(row, n));
                  if (row_max[i] != mx && row_max[i] != kNegInf) {
                    const T scale = std::exp(row_max[i] - mx);
                    row_sum[i] *= scale;
                    for (int64_t e = 0; e < dh; ++e) o[i * dl + e] *= scale;
                  }
                  row_max[i] = mx;
                  row_sum[i] += cpu::exp_shifted(row, n, mx);
                }
                std::fill(row + n, row + blk.width, T(0));
              }
              cpu::gemm_tile(false, false, static_cast<int>(g.rows), idh,
                             static_cast<int>(blk.width), T(1), scores.get(),
                             static_cast<int>(blk.width), vb + j0 * dl, idl, T(1), o, idl);
            }
            for (int64_t i = 0; i < g.rows; ++i) {
              if (row_sum[i] == 0) {  // no visible slot
                l[i] = kNegInf;
                continue;
              }
              const T inv = static_cast<T>(1.0 / row_sum[i]);
              for (int64_t e = 0; e < dh; ++e) o[i * dl + e] *= inv;
              l[i] = static_cast<T>(row_max[i] + std::log(row_sum[i]));
            }
          }
    }
  }
}

template <class T>
void chunk_backward(T* dq, T* dkhat, T* dvhat, T* dpos, const T* dout, const T* lse, const T* delta,
                    const T* q, const T* khat, const T* vhat, const T* pos, int64_t n_slots,
                    int64_t n_pos, const AttentionShape& s) {
  const int64_t B = s.batch, Tn = s.tokens, H = s.n_head, dh = s.d_head, dl = H * dh;
  const ChunkTiling tiling(s);
  const int idh = static_cast<int>(dh), idl = static_cast<int>(dl);
  const Tensor pos_reversed = reversed_pos(pos, n_pos, s);
  const int64_t n_rows = pos_reversed.dim(0), pad = n_rows - n_pos;
  const T* pos_ext = pos_reversed.data<T>();  // row m: id pad + n_pos - 1 - m, clamped
  const T* pos_rev = pos_ext + pad * dl;      // row k: id n_pos - 1 - k
  const std::optional<cpu::FusedLanes> lanes = cpu::chunk_attention_fused_lanes(dtype_of<T>());
  const bool fused = lanes.has_value();
  // Threads own heads; each transposes its current head into its own slot of the tables.
  TransposedTables tables;
  if (fused) tables = TransposedTables(omp_get_max_threads(), n_slots, n_pos, s);
  // The gradient of the extended reversed pos, added to dpos (rows reversed back, the clamped
  // rows onto the last) at the end.
  Tensor dpos_reversed;
  if (dpos)
    dpos_reversed = Tensor::zeros(cpu::scratch::chunk_reversed_pos(n_pos, s), dtype_of<T>());
  T* dpos_ext = dpos ? dpos_reversed.data<T>() : nullptr;
  T* dpos_rev = dpos ? dpos_ext + pad * dl : nullptr;
  // Threads own heads: every slot's and position's gradient of head h has one writer.
#pragma omp parallel
  {
    const size_t score_size = static_cast<size_t>(tiling.max_rows * kSlotBlock),
                 pos_size = static_cast<size_t>(tiling.max_rows * tiling.max_ids(s));
    std::unique_ptr<T[]> probs(new T[score_size]), dprobs(new T[score_size]);
    // The GEMM path's positional scores and their gradient.
    std::unique_ptr<T[]> qpos(fused ? nullptr : new T[pos_size]),
        dqpos(fused ? nullptr : new T[pos_size]);
    const int slot = omp_get_thread_num();
#pragma omp for schedule(dynamic)
    for (int64_t h = 0; h < H; ++h) {
      if constexpr (std::is_same_v<T, float>)
        if (fused)
          transpose_head(tables.pos(slot), tables.ld_pos, pos_ext + h * dh, dl, n_rows, dh, false);
      for (int64_t b = 0; b < B; ++b) {
        if constexpr (std::is_same_v<T, float>)
          if (fused)
            transpose_head(tables.khat(slot), tables.ld_khat, khat + b * n_slots * dl + h * dh, dl,
                           n_slots, dh, false);
        for (int64_t k = 0; k < tiling.n_tiles; ++k) {
          const int64_t ho = h * dh;
          const ChunkTileGeometry g(s, tiling, k, n_slots);
          const int rows = static_cast<int>(g.rows);
          const T* qt = q + (b * Tn + g.t0) * dl + ho;
          const T* go = dout + (b * Tn + g.t0) * dl + ho;
          const T* kb = khat + b * n_slots * dl + ho;
          const T* vb = vhat + b * n_slots * dl + ho;
          T* dqt = dq ? dq + (b * Tn + g.t0) * dl + ho : nullptr;
          for (int64_t j0 = 0; j0 < g.nv_max; j0 += kSlotBlock) {
            const SlotBlock blk(g, j0, n_pos);
            const int w = static_cast<int>(blk.width), ids = static_cast<int>(blk.n_ids);
            if constexpr (std::is_same_v<T, float>) {
              if (fused) {
                fused_block_scores(*lanes, probs.get(), qt, tables.khat(slot), tables.ld_khat,
                                   tables.pos(slot), tables.ld_pos, g, blk, n_pos, pad, s);
                cpu::gemm_tile(false, true, rows, w, idh, T(1), go, idl, vb + j0 * dl, idl, T(0),
                               dprobs.get(), w);
                fused_block_backward(*lanes, probs.get(), dprobs.get(), dqt, dkhat, dvhat, dpos_ext,
                                     qt, go, kb, pos_ext, lse, delta, g, blk, b, h, n_slots, n_pos,
                                     pad, s);
                continue;
              }
            }
            chunk_block_scores(probs.get(), qpos.get(), qt, kb, pos_rev + ho, g, blk, n_pos, s);
            cpu::gemm_tile(false, true, rows, w, idh, T(1), go, idl, vb + j0 * dl, idl, T(0),
                           dprobs.get(), w);
            for (int64_t i = 0; i < g.rows; ++i) {
              const int64_t li = (b * H + h) * Tn + g.t0 + i;
              const int64_t n = blk.visible(s, g, i);
              T* p = probs.get() + i * blk.width;
              T* dp = dprobs.get() + i * blk.width;
              T* dqp = dqpos.get() + i * blk.n_ids;  // dqp[hi - id]
              if (n == 0) {
                std::fill(dqp, dqp + blk.n_ids, T(0));
              } else {
                cpu::softmax_backward_row(p, dp, n, lse[li], delta[li]);  // dp becomes ds
                // Row i's positional gradient: slot j's ds goes to id top - j, i.e. column
                // base + j, one slot per column; ids past the last row of pos were clamped to
                // it (column hi - (n_pos - 1)). Every column is written once, so the block
                // needs no zeroing pass. When khat ends before the slots the row may see, all
                // of them can be clamped: the unclamped columns are then empty.
                const int64_t top = g.top(s, i) - j0;
                const int64_t unclamped_from = std::clamp<int64_t>(top - (n_pos - 1), 0, n);
                const int64_t base = blk.hi - top;
                const int64_t first_col = std::clamp<int64_t>(base + unclamped_from, 0, blk.n_ids);
                const int64_t end_col = std::clamp<int64_t>(base + n, first_col, blk.n_ids);
                std::fill(dqp, dqp + first_col, T(0));
                if (unclamped_from < n) std::copy(dp + unclamped_from, dp + n, dqp + first_col);
                std::fill(dqp + end_col, dqp + blk.n_ids, T(0));
                if (unclamped_from > 0) {
                  T clamped = 0;
                  for (int64_t j = 0; j < unclamped_from; ++j) clamped += dp[j];
                  dqp[blk.hi - (n_pos - 1)] += clamped;
                }
              }
              std::fill(p + n, p + blk.width, T(0));
              std::fill(dp + n, dp + blk.width, T(0));
            }
            if (dqt) {
              cpu::gemm_tile(false, false, rows, idh, w, T(1), dprobs.get(), w, kb + j0 * dl, idl,
                             T(1), dqt, idl);
              cpu::gemm_tile(false, false, rows, idh, ids, T(1), dqpos.get(), ids,
                             pos_rev + blk.reversed_first(n_pos) * dl + ho, idl, T(1), dqt, idl);
            }
            if (dvhat)
              cpu::gemm_tile(true, false, w, idh, rows, T(1), probs.get(), w, go, idl, T(1),
                             dvhat + (b * n_slots + j0) * dl + ho, idl);
            if (dkhat)
              cpu::gemm_tile(true, false, w, idh, rows, T(1), dprobs.get(), w, qt, idl, T(1),
                             dkhat + (b * n_slots + j0) * dl + ho, idl);
            if (dpos)
              cpu::gemm_tile(true, false, ids, idh, rows, T(1), dqpos.get(), ids, qt, idl, T(1),
                             dpos_rev + (blk.reversed_first(n_pos) * dl + ho), idl);
          }
        }
      }
    }
  }
  if (dpos) {
#pragma omp parallel for schedule(static)
    for (int64_t k = 0; k < n_pos; ++k) {
      const T* src = dpos_rev + k * dl;
      T* dst = dpos + (n_pos - 1 - k) * dl;
      for (int64_t e = 0; e < dl; ++e) dst[e] += src[e];
    }
    // The clamped ids' rows (written by the fused path only) belong to the last row of pos.
    for (int64_t m = 0; m < pad; ++m)
      for (int64_t e = 0; e < dl; ++e) dpos[(n_pos - 1) * dl + e] += dpos_ext[m * dl + e];
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
