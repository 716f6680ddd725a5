// The whole model against the float64 golden files (tests/golden/README.md) on the CPU backend:
// every block in order with the caches carried, in float64 and float32. Log-probabilities and
// losses relative to their scale, caches, and every parameter gradient relative to the block's
// largest gradient (check_golden, tests/support/golden_case.h; tests/layers/cuda_model_test.cpp
// runs the same check on the CUDA backend).
#include <gtest/gtest.h>

#include "support/golden_case.h"

namespace tls::testing {
namespace {

class GoldenModel : public ::testing::TestWithParam<std::string> {};

TEST_P(GoldenModel, Float64MatchesGolden) {
  auto ops = make_cpu_ops();
  check_golden(*ops, GetParam(), DType::f64, kGoldenFloat64);
}
TEST_P(GoldenModel, Float32MatchesGolden) {
  auto ops = make_cpu_ops();
  check_golden(*ops, GetParam(), DType::f32, kGoldenFloat32);
}

INSTANTIATE_TEST_SUITE_P(AllFiles, GoldenModel, ::testing::ValuesIn(golden_files()),
                         [](const auto& info) {
                           std::string n = info.param.substr(0, info.param.find('.'));
                           return n;
                         });

}  // namespace
}  // namespace tls::testing
