#include "support/golden_case.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>

#include "checkpoint/golden.h"
#include "kernels/error.h"

namespace tls::testing {

std::string golden_path(const std::string& file) {
  return std::string(TLS_GOLDEN_DIR) + "/" + file;
}

std::vector<std::string> golden_files() {
  return {"tiny_preln.h5", "postln_relu_bias_clamp.h5", "sp4_ready.h5", "long_mem.h5",
          "tp_ready.h5"};
}

GoldenCase::GoldenCase(const std::string& path) : file(std::make_unique<Hdf5Reader>(path)) {
  config = config_from_attributes(*file);
  batch = file->int_attribute("/golden", "batch");
  n_blocks = file->int_attribute("/golden", "n_blocks");
  tokens = file->read_ints("/golden/tokens");
}

void GoldenCase::load_weights(Ops& ops, TransformerLSModel& model) const {
  for (Parameter* p : model.parameters()) {
    const std::string dataset = "/model/" + p->name;
    if (!file->has_dataset(dataset)) throw Error("golden file lacks " + dataset);
    if (file->dataset_shape(dataset) != p->full_shape)
      throw Error("golden " + dataset + " has an unexpected shape");
    ops.from_host(p->value, file->read_doubles(dataset));
  }
}

static Tensor block_slice(Ops& ops, const GoldenCase& g, int64_t block, int64_t shift) {
  const int64_t T = g.config.tokens_per_sample, row = g.n_blocks * T + 1;
  std::vector<double> values;
  for (int64_t b = 0; b < g.batch; ++b)
    for (int64_t t = 0; t < T; ++t)
      values.push_back(g.tokens[static_cast<size_t>(b * row + block * T + t + shift)]);
  Tensor out = ops.empty({g.batch, T}, DType::i32);
  ops.from_host(out, values);
  return out;
}

Tensor GoldenCase::block_inputs(Ops& ops, int64_t block) const {
  return block_slice(ops, *this, block, 0);
}
Tensor GoldenCase::block_targets(Ops& ops, int64_t block) const {
  return block_slice(ops, *this, block, 1);
}

std::vector<double> GoldenCase::expected(const std::string& dataset) const {
  return file->read_doubles(dataset);
}

void check_golden(Ops& ops, const std::string& file, DType dtype, GoldenTolerance tol) {
  const char* device = ops.device() == Device::cuda ? "cuda" : "cpu";
  GoldenCase g(golden_path(file));
  TransformerLSModel model(ops, g.config, dtype);
  g.load_weights(ops, model);
  ModelState state = model.initial_state(g.batch);
  PassContext ctx;  // evaluation: no dropout
  for (int64_t i = 0; i < g.n_blocks; ++i) {
    SCOPED_TRACE(file + " " + dtype_name(dtype) + " on " + device + ", block " + std::to_string(i));
    const std::string blk = "/golden/block_" + std::to_string(i);
    ModelSaved saved;
    model.zero_grad();
    double nll = model.forward(g.block_inputs(ops, i), g.block_targets(ops, i), state, saved, ctx);
    const double loss = nll / static_cast<double>(saved.n_targets);
    const double want_loss = g.expected(blk + "/loss")[0];
    EXPECT_LE(std::abs(loss - want_loss) / std::abs(want_loss), tol.logprobs);
    EXPECT_LE(relative_error(ops.to_host(saved.logprobs), g.expected(blk + "/logprobs")),
              tol.logprobs);
    for (int64_t l = 0; l < g.config.n_layer; ++l)
      EXPECT_LE(relative_error(ops.to_host(state.caches[static_cast<size_t>(l)]),
                               g.expected(blk + "/cache/layers." + std::to_string(l))),
                tol.logprobs)
          << "cache of layer " << l;

    model.backward(saved, 1.0 / static_cast<double>(saved.n_targets), ctx);
    double grad_scale = 0, worst_grad = 0;
    for (Parameter* p : model.parameters())
      for (double v : g.expected(blk + "/grad/" + p->name))
        grad_scale = std::max(grad_scale, std::abs(v));
    for (Parameter* p : model.parameters()) {
      std::vector<double> got = ops.to_host(p->grad), want = g.expected(blk + "/grad/" + p->name);
      ASSERT_EQ(got.size(), want.size()) << p->name;
      double err = 0;
      for (size_t k = 0; k < got.size(); ++k) err = std::max(err, std::abs(got[k] - want[k]));
      EXPECT_LE(err / grad_scale, tol.grads) << p->name;
      worst_grad = std::max(worst_grad, err / grad_scale);
    }
    std::printf("  %s %s on %s, block %lld: loss %.12f (golden %.12f), worst gradient error %.3g\n",
                file.c_str(), dtype_name(dtype), device, static_cast<long long>(i), loss, want_loss,
                worst_grad);
  }
}

}  // namespace tls::testing
