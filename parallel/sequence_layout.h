// Which positions of a block (and of a cache, M = T under sp) each sequence-parallel rank holds
// (docs/DESIGN.md section 3, "What each rank holds"). The block is cut into equal slices:
//   contiguous  sp slices, rank s holds slice s;
//   zigzag      2 sp slices, rank s holds slices s and 2 sp - 1 - s, so that every rank's
//               queries see the same number of compressed slots (balanced work).
// A rank's rows are its slices in that order: a list of segments, each a contiguous run of
// global positions. Contiguous is the one-segment case, so every user handles both alike.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "parallel/topology.h"

namespace tls {

// A contiguous run of positions: local rows [row0, row0 + n) are global positions
// [t0, t0 + n) of the block (or of the cache).
struct Segment {
  int64_t row0 = 0, t0 = 0, n = 0;
};

class SequenceLayout {
 public:
  // `tokens`: the global length being dealt (T, or M for the caches); sp ranks.
  SequenceLayout(SpOrder order, int sp, int64_t tokens);
  static SequenceLayout of(const Layout& layout, int64_t tokens) {
    return SequenceLayout(layout.sp_order, layout.sp, tokens);
  }

  int slices() const { return order_ == SpOrder::zigzag ? 2 * sp_ : sp_; }
  int64_t slice_length() const { return tokens_ / slices(); }
  int64_t local_length() const { return tokens_ / sp_; }
  // The slices rank holds, in local row order.
  std::vector<int> slices_of(int rank) const;
  // The rank holding slice g, and where g is in that rank's list.
  int owner(int slice) const;
  int local_index(int slice) const;
  std::vector<Segment> segments(int rank) const;
  // The global position of a local row of rank.
  int64_t global_position(int rank, int64_t row) const;

 private:
  SpOrder order_;
  int sp_;
  int64_t tokens_;
};

const char* sp_order_name(SpOrder order);

}  // namespace tls
