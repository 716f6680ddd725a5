// placement_warning: the start-up verdict on ranks' CPU masks and thread counts.
#include "runtime/placement.h"

#include <gtest/gtest.h>

namespace tls {
namespace {

bool has(const std::string& text, const std::string& part) {
  return text.find(part) != std::string::npos;
}

TEST(Placement, CpuListFoldsRuns) {
  EXPECT_EQ(cpu_list({3, 0, 1, 2, 6, 8, 9}), "0-3,6,8-9");
  EXPECT_EQ(cpu_list({5}), "5");
  EXPECT_EQ(cpu_list({}), "");
}

TEST(Placement, OneThreadPerBoundCoreIsFine) {
  // mpirun -np 2 (binds to core) with one thread each.
  EXPECT_EQ(placement_warning("a", {{0, {0}, 1}, {1, {1}, 1}}, 2), "");
}

TEST(Placement, UnboundRanksThatFitTheNodeAreFine) {
  // --bind-to none: both ranks may run anywhere, 2 threads on 2 CPUs.
  EXPECT_EQ(placement_warning("a", {{0, {0, 1}, 1}, {1, {0, 1}, 1}}, 2), "");
  EXPECT_EQ(placement_warning("a", {{0, {0, 1, 2, 3}, 2}, {1, {0, 1, 2, 3}, 2}}, 4), "");
  // One rank, unbound, as many threads as CPUs.
  EXPECT_EQ(placement_warning("a", {{0, {0, 1}, 2}}, 2), "");
}

TEST(Placement, DisjointMasksEachWideEnoughAreFine) {
  // --map-by ppr:2:node:PE=2 on 4 cores.
  EXPECT_EQ(placement_warning("a", {{0, {0, 1}, 2}, {1, {2, 3}, 2}}, 4), "");
}

TEST(Placement, TwoThreadsBoundToOneCoreWarnAndNameTheBinding) {
  // mpirun -np 1 binds to one core; OMP_NUM_THREADS=2.
  const std::string w = placement_warning("host7", {{0, {1}, 2}}, 2);
  EXPECT_TRUE(has(w, "node host7 (ranks 0)")) << w;
  EXPECT_TRUE(has(w, "rank 0: 2 threads on CPU(s) 1")) << w;
  EXPECT_TRUE(has(w, "--bind-to none")) << w;
  EXPECT_TRUE(has(w, "--map-by ppr:1:node:PE=2")) << w;
  EXPECT_TRUE(has(w, "--cpus-per-task=2")) << w;
  EXPECT_EQ(w.find('\n'), std::string::npos) << "one line";
}

TEST(Placement, NamesEveryCrampedRankAndEveryRankOfTheNode) {
  const std::string w = placement_warning("n1", {{4, {0}, 2}, {5, {1, 2}, 2}, {6, {3}, 2}}, 8);
  EXPECT_TRUE(has(w, "(ranks 4,5,6)")) << w;
  EXPECT_TRUE(has(w, "rank(s) 4,6 ")) << w;
  EXPECT_TRUE(has(w, "--map-by ppr:3:node:PE=2")) << w;
}

TEST(Placement, OverlappingMasksThatCoverTooFewCpusWarn) {
  // Two ranks bound to the same core (e.g. a wrong rankfile), one thread each.
  const std::string w = placement_warning("a", {{0, {0}, 1}, {1, {0}, 1}}, 2);
  EXPECT_TRUE(has(w, "overlap and cover 1 CPU(s) (0) for 2 threads")) << w;
  EXPECT_TRUE(has(w, "--map-by ppr:2:node:PE=1")) << w;
}

TEST(Placement, MoreThreadsThanTheNodeHasAsksForFewerThreads) {
  // Unbound, 2 ranks x 2 threads on 2 CPUs: no binding helps.
  const std::string w = placement_warning("a", {{0, {0, 1}, 2}, {1, {0, 1}, 2}}, 2);
  EXPECT_TRUE(has(w, "for 4 threads together")) << w;
  EXPECT_TRUE(has(w, "the node has 2 CPU(s) for 2 rank(s) x 2 threads")) << w;
  EXPECT_TRUE(has(w, "lower OMP_NUM_THREADS to 1")) << w;
  EXPECT_FALSE(has(w, "--map-by")) << w;
}

TEST(Placement, NoRanksNoWarning) { EXPECT_EQ(placement_warning("a", {}, 2), ""); }

}  // namespace
}  // namespace tls
