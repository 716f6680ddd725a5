// Which positions each sp rank holds (parallel/sequence_layout.h): contiguous slices, and the
// zigzag layout's two slices per rank, whose compressed work (cache slices seen plus block
// slices before each query slice) is the same on every rank.
#include "parallel/sequence_layout.h"

#include <gtest/gtest.h>

#include <set>

#include "kernels/error.h"

namespace tls {
namespace {

TEST(SequenceLayout, ContiguousIsOneSegmentPerRank) {
  const SequenceLayout l(SpOrder::contiguous, 4, 32);
  EXPECT_EQ(l.slices(), 4);
  for (int s = 0; s < 4; ++s) {
    const std::vector<Segment> segs = l.segments(s);
    ASSERT_EQ(segs.size(), 1u);
    EXPECT_EQ(segs[0].row0, 0);
    EXPECT_EQ(segs[0].t0, 8 * s);
    EXPECT_EQ(segs[0].n, 8);
    EXPECT_EQ(l.owner(s), s);
    EXPECT_EQ(l.global_position(s, 5), 8 * s + 5);
  }
}

TEST(SequenceLayout, ZigzagHoldsSlicesSAnd2spMinus1MinusS) {
  const int sp = 4;
  const SequenceLayout l(SpOrder::zigzag, sp, 64);
  EXPECT_EQ(l.slices(), 8);
  EXPECT_EQ(l.slice_length(), 8);
  std::set<int64_t> seen;
  for (int s = 0; s < sp; ++s) {
    const std::vector<Segment> segs = l.segments(s);
    ASSERT_EQ(segs.size(), 2u);
    EXPECT_EQ(segs[0].t0, 8 * s);
    EXPECT_EQ(segs[1].t0, 8 * (2 * sp - 1 - s));
    EXPECT_EQ(segs[1].row0, 8);
    for (int g : l.slices_of(s)) {
      EXPECT_EQ(l.owner(g), s);
      EXPECT_EQ(l.slices_of(s)[static_cast<size_t>(l.local_index(g))], g);
    }
    for (int64_t r = 0; r < 16; ++r) seen.insert(l.global_position(s, r));
    // Compressed work with M = T: every query slice sees the 2sp cache slices and the block
    // slices before it, so the sum over a rank's two slices is the same everywhere.
    int work = 0;
    for (int g : l.slices_of(s)) work += 2 * sp + g;
    EXPECT_EQ(work, 4 * sp + 2 * sp - 1) << "rank " << s;
  }
  EXPECT_EQ(seen.size(), 64u);  // every position once
}

TEST(SequenceLayout, RefusesPositionsThatDoNotSplit) {
  EXPECT_THROW(SequenceLayout(SpOrder::zigzag, 4, 36), Error);
  EXPECT_NO_THROW(SequenceLayout(SpOrder::contiguous, 4, 36));
}

}  // namespace
}  // namespace tls
