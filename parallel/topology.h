// Topology: the process grid of docs/DESIGN.md section 3. World = dp x sp x tp with tp fastest,
// then sp, then dp, so tensor-parallel peers are neighbouring ranks (the same node). Each rank has
// a communicator for its tp group, its sp group, its dp group and its dp x sp group (the ranks
// holding the same parameter shard, over which gradients are summed).
#pragma once

#include <memory>

#include "parallel/comm.h"

namespace tls {

// How the block's positions are dealt to the sp ranks (parallel/sequence_layout.h).
enum class SpOrder { contiguous, zigzag };

struct Layout {
  int tp = 1, sp = 1, dp = 1;
  SpOrder sp_order = SpOrder::contiguous;
  int world() const { return tp * sp * dp; }
};

class Topology {
 public:
  // One process: every group is a SelfComm.
  static Topology single();

  Layout layout;
  int world_rank = 0;
  int tp_rank = 0, sp_rank = 0, dp_rank = 0;
  std::shared_ptr<Comm> world, tp, sp, dp, dp_sp;

  bool is_single() const { return layout.world() == 1; }
  // Whether this rank writes a tensor to a checkpoint: parameters and optimizer state are the
  // same on every dp and sp rank, and tp-replicated ones on every tp rank too.
  bool writes_parameter(bool tp_sharded) const {
    return dp_rank == 0 && sp_rank == 0 && (tp_sharded || tp_rank == 0);
  }
};

}  // namespace tls
