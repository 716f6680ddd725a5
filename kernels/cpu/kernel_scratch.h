// Host tensors some CPU kernels allocate for the length of one call, beyond their per-thread tiles
// (whose size does not depend on the problem): the attention kernels' reversed positional tables
// and their gradients, and the LayerNorm backward's per-block column sums. The kernels take these
// shapes from here and AllocationOnlyOps (kernels/allocation_only_ops.cpp) allocates the same, so
// memory sizing counts them: at 1.5 M tokens the compressed part's two tables are 0.4 GiB.
#pragma once

#include <cstdint>
#include <vector>

#include "kernels/ops.h"

namespace tls::cpu::scratch {

// The window part's R with its rows reversed, per head [H, w, d_h] (and its gradient, backward).
inline std::vector<int64_t> window_reversed_rel(const AttentionShape& s) {
  return {s.n_head, s.window, s.d_head};
}

// The compressed part's pos [n_pos, H d_h] with its rows reversed (and its gradient, backward).
inline std::vector<int64_t> chunk_reversed_pos(int64_t n_pos, const AttentionShape& s) {
  return {n_pos, s.n_head * s.d_head};
}

// Rows per block of the float32 LayerNorm backward's dgamma/dbeta sums, and the sums' shape
// [blocks, cols] (float64, two of them).
constexpr int64_t kLayerNormRowBlock = 256;
inline std::vector<int64_t> layernorm_block_sums(int64_t rows, int64_t cols) {
  return {(rows + kLayerNormRowBlock - 1) / kLayerNormRowBlock, cols};
}

}  // namespace tls::cpu::scratch
