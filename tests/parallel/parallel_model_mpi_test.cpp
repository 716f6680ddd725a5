// mpi-ranks: 2 4 8
// Every parallel layout computes the same function as one process (docs/DESIGN.md section 3): for
// the layouts (tp, sp, dp) that fit the world size, the loss, every parameter gradient and the
// parameters after five AdamW steps equal a single-process run on every rank, on golden files
// and on random configs, in float64 and float32, with dropout off and on, under both sp layouts
// (contiguous, and zigzag wherever its half-slices fit).
#include <gtest/gtest.h>

#include "support/parallel_model_case.h"

namespace tls::testing {
namespace {

TEST(ParallelModel, GoldenTpReadyFloat64) {
  compare(golden_scenario("tp_ready.h5"), DType::f64, 1e-10, Device::cpu);
}
TEST(ParallelModel, GoldenSp4ReadyFloat64) {
  compare(golden_scenario("sp4_ready.h5"), DType::f64, 1e-10, Device::cpu);
}
TEST(ParallelModel, RandomPreLnFloat64) {
  compare(random_scenario(false, 0.0), DType::f64, 1e-10, Device::cpu);
}
TEST(ParallelModel, RandomPostLnDropoutFloat64) {
  compare(random_scenario(true, 0.1), DType::f64, 1e-10, Device::cpu);
}
// Recomputation in the backward repeats the halo exchanges, chunk gathers and tp all-reduces of
// the forward in the same order on every rank. Pieces of 8 tokens: four per block in one
// process, two per slice at sp = 2 (the second piece's window reaching into the first), one at
// sp = 4 and 8.
TEST(ParallelModel, RandomPostLnDropoutCheckpointedFloat64) {
  Scenario s = random_scenario(true, 0.1);
  s.name += " checkpointed";
  s.checkpointing = true;
  s.recompute_piece = 8;
  compare(s, DType::f64, 1e-10, Device::cpu);
}
TEST(ParallelModel, RandomPreLnDropoutCheckpointedFloat64) {
  Scenario s = random_scenario(false, 0.1);
  s.name += " checkpointed";
  s.checkpointing = true;
  s.recompute_piece = 8;
  compare(s, DType::f64, 1e-10, Device::cpu);
}
// A window of 4 lets the zigzag layout run at sp = 4 too (half-slices of 4) and at sp = 2 with
// two pieces per half-slice, the second's window reaching into the first.
TEST(ParallelModel, RandomPreLnDropoutCheckpointedShortWindowFloat64) {
  Scenario s = random_scenario(false, 0.1);
  s.name += " checkpointed w=4";
  s.cfg.window_len = 4;
  s.checkpointing = true;
  s.recompute_piece = 4;
  compare(s, DType::f64, 1e-10, Device::cpu);
}
TEST(ParallelModel, RandomPostLnShortWindowFloat32) {
  Scenario s = random_scenario(true, 0.1);
  s.name += " w=4";
  s.cfg.window_len = 4;
  compare(s, DType::f32, 1e-5, Device::cpu);
}
TEST(ParallelModel, RandomPreLnDropoutFloat32) {
  compare(random_scenario(false, 0.1), DType::f32, 1e-5, Device::cpu);
}

}  // namespace
}  // namespace tls::testing
