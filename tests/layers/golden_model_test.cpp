// The whole model against the float64 golden files (tests/golden/README.md): every block in
// order with the caches carried, in float64 and float32. Log-probabilities and losses relative to
// their scale, caches, and every parameter gradient relative to the block's largest gradient.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>

#include "support/golden_case.h"

namespace tls::testing {
namespace {

struct Tolerance {
  double logprobs, grads;
};

void check_golden(const std::string& file, DType dtype, Tolerance tol) {
  auto ops = make_cpu_ops();
  GoldenCase g(golden_path(file));
  TransformerLSModel model(*ops, g.config, dtype);
  g.load_weights(*ops, model);
  ModelState state = model.initial_state(g.batch);
  PassContext ctx;  // evaluation: no dropout
  for (int64_t i = 0; i < g.n_blocks; ++i) {
    SCOPED_TRACE(file + " block " + std::to_string(i));
    const std::string blk = "/golden/block_" + std::to_string(i);
    ModelSaved saved;
    model.zero_grad();
    double nll =
        model.forward(g.block_inputs(*ops, i), g.block_targets(*ops, i), state, saved, ctx);
    const double loss = nll / static_cast<double>(saved.n_targets);
    const double want_loss = g.expected(blk + "/loss")[0];
    EXPECT_LE(std::abs(loss - want_loss) / std::abs(want_loss), tol.logprobs);
    EXPECT_LE(relative_error(ops->to_host(saved.logprobs), g.expected(blk + "/logprobs")),
              tol.logprobs);
    for (int64_t l = 0; l < g.config.n_layer; ++l)
      EXPECT_LE(relative_error(ops->to_host(state.caches[static_cast<size_t>(l)]),
                               g.expected(blk + "/cache/layers." + std::to_string(l))),
                tol.logprobs)
          << "cache of layer " << l;

    model.backward(saved, 1.0 / static_cast<double>(saved.n_targets), ctx);
    double grad_scale = 0, worst_grad = 0;
    for (Parameter* p : model.parameters())
      for (double v : g.expected(blk + "/grad/" + p->name))
        grad_scale = std::max(grad_scale, std::abs(v));
    for (Parameter* p : model.parameters()) {
      std::vector<double> got = ops->to_host(p->grad), want = g.expected(blk + "/grad/" + p->name);
      ASSERT_EQ(got.size(), want.size()) << p->name;
      double err = 0;
      for (size_t k = 0; k < got.size(); ++k) err = std::max(err, std::abs(got[k] - want[k]));
      EXPECT_LE(err / grad_scale, tol.grads) << p->name;
      worst_grad = std::max(worst_grad, err / grad_scale);
    }
    std::printf("  %s %s block %lld: loss %.12f (golden %.12f), worst gradient error %.3g\n",
                file.c_str(), dtype_name(dtype), static_cast<long long>(i), loss, want_loss,
                worst_grad);
  }
}

class GoldenModel : public ::testing::TestWithParam<std::string> {};

TEST_P(GoldenModel, Float64MatchesGolden) { check_golden(GetParam(), DType::f64, {1e-9, 1e-8}); }
TEST_P(GoldenModel, Float32MatchesGolden) { check_golden(GetParam(), DType::f32, {2e-4, 1e-3}); }

INSTANTIATE_TEST_SUITE_P(AllFiles, GoldenModel, ::testing::ValuesIn(golden_files()),
                         [](const auto& info) {
                           std::string n = info.param.substr(0, info.param.find('.'));
                           return n;
                         });

}  // namespace
}  // namespace tls::testing
