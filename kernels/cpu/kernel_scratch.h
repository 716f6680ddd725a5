// Host tensors some CPU kernels allocate for the length of one call, beyond their per-thread tiles
// (whose size does not depend on the problem): the attention kernels' reversed positional tables
// and their gradients, and the LayerNorm backward's per-block column sums. The kernels take these
// shapes from here and AllocationOnlyOps (kernels/allocation_only_ops.cpp) allocates the same, so
// memory sizing counts them. The compressed part's tables span one call's ids, which the layers
// keep to (query chunks + slot chunks) r rows (layers/chunk_attention_ring.h, chunk_call).
#pragma once

#include <cstdint>
#include <vector>

#include "kernels/ops.h"

namespace tls::cpu::scratch {

// The window part's R with its rows reversed, per head [H, w, d_h] (and its gradient, backward).
inline std::vector<int64_t> window_reversed_rel(const AttentionShape& s) {
  return {s.n_head, s.window, s.d_head};
}

// Relative ids past the last row of pos that the compressed part's queries reach (they are
// clamped to it): the ids go up to g_q r - 1 for the last query chunk.
inline int64_t chunk_clamped_ids(int64_t n_pos, const AttentionShape& s) {
  const int64_t top = (s.first_query_chunk + s.tokens / s.chunk_size) * s.chunk_rank - 1;
  return top > n_pos - 1 ? top - (n_pos - 1) : 0;
}

// The compressed part's pos [n_pos, H d_h] with its rows reversed, after one copy of its last
// row per clamped id, so every id a query reaches has its own row (and its gradient, backward).
inline std::vector<int64_t> chunk_reversed_pos(int64_t n_pos, const AttentionShape& s) {
  return {chunk_clamped_ids(n_pos, s) + n_pos, s.n_head * s.d_head};
}

// The fused compressed-attention path (float32 on AVX-512 or AVX2, chunk_fused_kernels.h) also
// reads one head's khat [n_slots, d_h] and reversed pos transposed, [d_h][>= n_slots] and
// [d_h][>= rows of chunk_reversed_pos], for `heads_at_once` heads: 1 in the forward (one head at a
// time, its tiles over the threads), one per thread in the backward (threads own heads).
// Their rows are padded to an odd number of 64-byte lines: the kernel reads a column of d_h rows,
// and at a power-of-two stride those rows would share a few cache sets and evict each other.
inline int64_t chunk_transposed_row(int64_t columns) {
  const int64_t lines = (columns + 15) / 16;
  return 16 * (lines % 2 == 0 ? lines + 1 : lines);
}
inline std::vector<int64_t> chunk_transposed_khat(int64_t n_slots, int64_t heads_at_once,
                                                  const AttentionShape& s) {
  return {heads_at_once, s.d_head, chunk_transposed_row(n_slots)};
}
inline std::vector<int64_t> chunk_transposed_pos(int64_t n_pos, int64_t heads_at_once,
                                                 const AttentionShape& s) {
  return {heads_at_once, s.d_head, chunk_transposed_row(chunk_reversed_pos(n_pos, s)[0])};
}

// Rows per block of the float32 LayerNorm backward's dgamma/dbeta sums, and the sums' shape
// [blocks, cols] (float64, two of them).
constexpr int64_t kLayerNormRowBlock = 256;
inline std::vector<int64_t> layernorm_block_sums(int64_t rows, int64_t cols) {
  return {(rows + kLayerNormRowBlock - 1) / kLayerNormRowBlock, cols};
}

}  // namespace tls::cpu::scratch
