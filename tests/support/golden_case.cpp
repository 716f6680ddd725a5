#include "support/golden_case.h"

#include "checkpoint/golden.h"
#include "runtime/error.h"

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

}  // namespace tls::testing
