// The short-term (sliding window) part of LS attention, docs/DESIGN.md section 1.1.
//
// Query t sees the w keys at distances delta = 0 .. w-1 back (itself included). Its score is
//   s[t, delta] = (q_t + r_w_bias) . K[t - delta] + (q_t + r_r_bias) . R[delta]
// The forward returns this part's own softmax output and log-sum-exp; the joint softmax with the
// compressed part is formed by attention_merge. The backward takes the merged lse and
// delta = rowsum(dout * out), so p = exp(s - lse) is the joint probability and
//   ds = p * (dout . V - delta).
// No T x T matrix exists: a tile of queries keeps its L x (L + w - 1) band of scores in a
// per-thread buffer, and the backward recomputes them.
#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "kernels/cpu/blas_tiles.h"
#include "kernels/cpu/cpu_ops.h"
#include "kernels/cpu/kernel_scratch.h"
#include "kernels/cpu/softmax_row.h"
#include "kernels/cpu/vector_exp.h"
#include "kernels/error.h"

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
    if (t.dtype() != q.dtype())
      throw Error(std::string("window_attention: ") + name + " dtype differs");
  };
  expect(q, {s.batch, s.tokens, dl}, "q");
  expect(keys, {s.batch, s.window + s.tokens, dl}, "keys");
  expect(values, {s.batch, s.window + s.tokens, dl}, "values");
  expect(rel, {s.window, dl}, "rel");
}

// Queries are processed in tiles of L rows: the tile's keys are the band of L + w - 1 rows
// before and at its queries, so the content scores of a tile are one GEMM against the band.
// Query i of the tile sees band rows i .. i + w - 1 (delta = i + w - 1 - j for band row j), its
// segment of the band. With R stored reversed (row w - 1 - delta first), the positional score of
// band row i + j' is qr_i . Rrev[j']: the segments of all rows form one [L, w] matrix of leading
// dimension nb + 1 inside the [L, nb] band, so the positional GEMM adds straight onto the content
// scores, the softmax runs on contiguous segments, and the band (zero outside the segments) is
// the probability matrix of the P V GEMM. L ~ w/2 keeps the band's wasted work small and the
// GEMMs large enough.
struct WindowTiling {
  int64_t tile;  // L
  explicit WindowTiling(int64_t w, int64_t tokens) : tile(std::clamp<int64_t>(w / 2, 16, 128)) {
    tile = std::min(tile, tokens);
  }
};

// rel [w, dl] with its rows reversed, per head: out[(h w + j) dh + e] = rel[(w - 1 - j) dl + h dh +
// e] (a host tensor: see kernel_scratch.h).
template <class T>
Tensor reversed_rel_by_head(const T* rel, const AttentionShape& s) {
  const int64_t w = s.window, dh = s.d_head, dl = s.n_head * dh;
  Tensor out = Tensor::empty(cpu::scratch::window_reversed_rel(s), dtype_of<T>());
  T* o = out.data<T>();
  for (int64_t h = 0; h < s.n_head; ++h)
    for (int64_t j = 0; j < w; ++j)
      std::copy_n(rel + (w - 1 - j) * dl + h * dh, dh, o + (h * w + j) * dh);
  return out;
}

template <class T>
struct WindowTile {
  int64_t t0 = 0, len = 0, band = 0;  // first query, queries in the tile, band rows (nb)
  std::vector<T> qw, qr, scores;      // scores: [len, nb], each row's segment at offset i
  WindowTile(int64_t max_len, int64_t w, int64_t dh)
      : qw(static_cast<size_t>(max_len * dh)),
        qr(qw.size()),
        scores(static_cast<size_t>(max_len * (max_len + w - 1))) {}
  T* segment(int64_t i) { return scores.data() + i * (band + 1); }
  int segment_ld() const { return static_cast<int>(band + 1); }
};

// Zeroes row i of a [L, nb] band outside its segment [i, i + w).
template <class T>
void clear_outside_segment(T* band_row, int64_t i, int64_t nb, int64_t w) {
  std::fill(band_row, band_row + i, T(0));
  std::fill(band_row + i + w, band_row + nb, T(0));
}

// Scores of a tile into tile.scores (unnormalised logits on the segments), using q + biases.
// rel_rev_h: this head's reversed R, [w, dh].
template <class T>
void window_tile_scores(WindowTile<T>& tile, const T* q, const T* keys, const T* rel_rev_h,
                        const T* rw, const T* rr, int64_t b, int64_t ho, const AttentionShape& s) {
  const int64_t Tn = s.tokens, dh = s.d_head, w = s.window, dl = s.n_head * dh;
  const int64_t L = tile.len, nb = L + w - 1;
  tile.band = nb;
  for (int64_t i = 0; i < L; ++i) {
    const T* qt = q + (b * Tn + tile.t0 + i) * dl + ho;
    for (int64_t e = 0; e < dh; ++e) {
      tile.qw[i * dh + e] = qt[e] + rw[ho + e];
      tile.qr[i * dh + e] = qt[e] + rr[ho + e];
    }
  }
  const T* band = keys + (b * (w + Tn) + tile.t0 + 1) * dl + ho;
  const int iL = static_cast<int>(L), inb = static_cast<int>(nb), idh = static_cast<int>(dh),
            idl = static_cast<int>(dl), iw = static_cast<int>(w);
  cpu::gemm_tile(false, true, iL, inb, idh, T(1), tile.qw.data(), idh, band, idl, T(0),
                 tile.scores.data(), inb);
  cpu::gemm_tile(false, true, iL, iw, idh, T(1), tile.qr.data(), idh, rel_rev_h, idh, T(1),
                 tile.segment(0), tile.segment_ld());
}

template <class T>
void window_forward(T* out, T* lse, const T* q, const T* keys, const T* values, const T* rel,
                    const T* rw, const T* rr, const AttentionShape& s) {
  const int64_t B = s.batch, Tn = s.tokens, H = s.n_head, dh = s.d_head, w = s.window;
  const int64_t dl = H * dh;
  const WindowTiling tiling(w, Tn);
  const int64_t n_tiles = (Tn + tiling.tile - 1) / tiling.tile;
  const Tensor rel_reversed = reversed_rel_by_head(rel, s);
  const T* rel_rev = rel_reversed.data<T>();
#pragma omp parallel
  {
    WindowTile<T> tile(tiling.tile, w, dh);
#pragma omp for collapse(3) schedule(dynamic)
    for (int64_t b = 0; b < B; ++b)
      for (int64_t h = 0; h < H; ++h)
        for (int64_t k = 0; k < n_tiles; ++k) {
          const int64_t ho = h * dh;
          tile.t0 = k * tiling.tile;
          tile.len = std::min(tiling.tile, Tn - tile.t0);
          window_tile_scores(tile, q, keys, rel_rev + h * w * dh, rw, rr, b, ho, s);
          const int64_t nb = tile.band;
          for (int64_t i = 0; i < tile.len; ++i) {
            lse[(b * H + h) * Tn + tile.t0 + i] = cpu::softmax_in_place(tile.segment(i), w);
            clear_outside_segment(tile.scores.data() + i * nb, i, nb, w);
          }
          const T* vband = values + (b * (w + Tn) + tile.t0 + 1) * dl + ho;
          cpu::gemm_tile(false, false, static_cast<int>(tile.len), static_cast<int>(dh),
                         static_cast<int>(nb), T(1), tile.scores.data(), static_cast<int>(nb),
                         vband, static_cast<int>(dl), T(0), out + (b * Tn + tile.t0) * dl + ho,
                         static_cast<int>(dl));
        }
  }
}

template <class T>
void window_backward(T* dq, T* dkeys, T* dvalues, T* drel, T* drw, T* drr, const T* dout,
                     const T* lse, const T* delta, const T* q, const T* keys, const T* values,
                     const T* rel, const T* rw, const T* rr, const AttentionShape& s) {
  const int64_t B = s.batch, Tn = s.tokens, H = s.n_head, dh = s.d_head, w = s.window;
  const int64_t dl = H * dh;
  const WindowTiling tiling(w, Tn);
  const int64_t n_tiles = (Tn + tiling.tile - 1) / tiling.tile;
  const Tensor rel_reversed = reversed_rel_by_head(rel, s);
  const T* rel_rev = rel_reversed.data<T>();
  // The gradient of the reversed R, per head; added to drel (rows reversed back) at the end.
  Tensor drel_reversed;
  if (drel) drel_reversed = Tensor::zeros(cpu::scratch::window_reversed_rel(s), dtype_of<T>());
  T* drel_rev = drel ? drel_reversed.data<T>() : nullptr;
  // Threads own heads: the band rows of neighbouring tiles overlap, and rel / the biases are
  // shared by every query of a head, so one thread writes all of a head's gradients.
#pragma omp parallel
  {
    WindowTile<T> tile(tiling.tile, w, dh);
    std::vector<T> dband(tile.scores.size());  // dP, then dS, on the band layout
    std::vector<T> dq_part(static_cast<size_t>(tiling.tile * dh));
#pragma omp for schedule(dynamic)
    for (int64_t h = 0; h < H; ++h)
      for (int64_t b = 0; b < B; ++b)
        for (int64_t k = 0; k < n_tiles; ++k) {
          const int64_t ho = h * dh;
          const T* rel_rev_h = rel_rev + h * w * dh;
          tile.t0 = k * tiling.tile;
          tile.len = std::min(tiling.tile, Tn - tile.t0);
          const int64_t L = tile.len;
          window_tile_scores(tile, q, keys, rel_rev_h, rw, rr, b, ho, s);
          const int64_t nb = tile.band;
          const int iL = static_cast<int>(L), inb = static_cast<int>(nb),
                    idh = static_cast<int>(dh), idl = static_cast<int>(dl),
                    iw = static_cast<int>(w), seg_ld = tile.segment_ld();
          const int64_t band_row = b * (w + Tn) + tile.t0 + 1;
          const T* kband = keys + band_row * dl + ho;
          const T* vband = values + band_row * dl + ho;
          const T* go = dout + (b * Tn + tile.t0) * dl + ho;
          // dP over the band: dout . V for every band row.
          cpu::gemm_tile(false, true, iL, inb, idh, T(1), go, idl, vband, idl, T(0), dband.data(),
                         inb);
          // P = exp(s - lse) and dS = P (dP - delta) on the segments, zero elsewhere.
          for (int64_t i = 0; i < L; ++i) {
            const int64_t li = (b * H + h) * Tn + tile.t0 + i;
            cpu::softmax_backward_row(tile.segment(i), dband.data() + i * (nb + 1), w, lse[li],
                                      delta[li]);
            clear_outside_segment(tile.scores.data() + i * nb, i, nb, w);
            clear_outside_segment(dband.data() + i * nb, i, nb, w);
          }
          if (dvalues)
            cpu::gemm_tile(true, false, inb, idh, iL, T(1), tile.scores.data(), inb, go, idl, T(1),
                           dvalues + band_row * dl + ho, idl);
          if (dkeys)
            cpu::gemm_tile(true, false, inb, idh, iL, T(1), dband.data(), inb, tile.qw.data(), idh,
                           T(1), dkeys + band_row * dl + ho, idl);
          if (drel)
            cpu::gemm_tile(true, false, iw, idh, iL, T(1), dband.data(), seg_ld, tile.qr.data(),
                           idh, T(1), drel_rev + h * w * dh, idh);
          // dq (and the biases, which enter like q): content part against the band, positional
          // part against the reversed R.
          for (int pass = 0; pass < 2; ++pass) {
            if (pass == 0)
              cpu::gemm_tile(false, false, iL, idh, inb, T(1), dband.data(), inb, kband, idl, T(0),
                             dq_part.data(), idh);
            else
              cpu::gemm_tile(false, false, iL, idh, iw, T(1), dband.data(), seg_ld, rel_rev_h, idh,
                             T(0), dq_part.data(), idh);
            T* dbias = pass == 0 ? drw : drr;
            for (int64_t i = 0; i < L; ++i)
              for (int64_t e = 0; e < dh; ++e) {
                const T g = dq_part[i * dh + e];
                if (dq) dq[(b * Tn + tile.t0 + i) * dl + ho + e] += g;
                if (dbias) dbias[ho + e] += g;
              }
          }
        }
  }
  if (drel)
    for (int64_t h = 0; h < H; ++h)
      for (int64_t j = 0; j < w; ++j) {
        const T* src = drel_rev + (h * w + j) * dh;
        T* dst = drel + (w - 1 - j) * dl + h * dh;
        for (int64_t e = 0; e < dh; ++e) dst[e] += src[e];
      }
}

template <class T>
T* ptr_or_null(const Tensor& t) {
  return t.defined() ? t.data<T>() : nullptr;
}

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
                    dout.data<double>(), lse.data<double>(), delta.data<double>(), q.data<double>(),
                    keys.data<double>(), values.data<double>(), rel.data<double>(),
                    r_w_bias.data<double>(), r_r_bias.data<double>(), s);
  else
    window_backward(ptr_or_null<float>(dq), ptr_or_null<float>(dkeys), ptr_or_null<float>(dvalues),
                    ptr_or_null<float>(drel), ptr_or_null<float>(dr_w_bias),
                    ptr_or_null<float>(dr_r_bias), dout.data<float>(), lse.data<float>(),
                    delta.data<float>(), q.data<float>(), keys.data<float>(), values.data<float>(),
                    rel.data<float>(), r_w_bias.data<float>(), r_r_bias.data<float>(), s);
}

}  // namespace tls
