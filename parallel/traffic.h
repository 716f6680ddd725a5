// Bytes this rank sends, by kind of exchange, for the benchmarks' traffic tables. Point-to-point
// sends are counted exactly; collectives by what a ring algorithm sends per rank (all-gather:
// (n-1) local blocks; reduce-scatter: (n-1) blocks; all-reduce: 2 (n-1)/n of the buffer).
#pragma once

#include <cstdint>

namespace tls {

struct TrafficCounters {
  int64_t halo = 0;       // halo_exchange, forward and backward
  int64_t chunks = 0;     // the compressed slots round the sp ring (layers/chunk_attention_ring)
  int64_t tensor = 0;     // tp all-reduces (mappings, split LayerNorm statistics)
  int64_t gradients = 0;  // reduce_gradients
};

inline TrafficCounters& traffic() {
  static TrafficCounters counters;
  return counters;
}

inline int64_t ring_allreduce_bytes(int64_t bytes, int ranks) {
  return ranks > 1 ? 2 * (ranks - 1) * bytes / ranks : 0;
}

}  // namespace tls
