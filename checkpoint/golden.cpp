// config_from_attributes: the model hyperparameters stored as root attributes of a checkpoint.
// Shared by checkpoint loading, `inspect` and the tests that read the golden files.
#include "checkpoint/golden.h"

#include "kernels/error.h"

namespace tls {
namespace {

bool read_bool(const Hdf5Reader& file, const char* name) {
  int64_t value = file.int_attribute("/", name);
  if (value != 0 && value != 1) {
    throw Error("HDF5 file '" + file.path() + "': attribute '" + name + "' is " +
                std::to_string(value) + ", expected 0 or 1");
  }
  return value == 1;
}

}  // namespace

ModelConfig config_from_attributes(const Hdf5Reader& file) {
  if (!file.has_attribute("format")) {
    throw Error("'" + file.path() + "' is not a tls_dist checkpoint (no 'format' attribute)");
  }
  std::string format = file.string_attribute("/", "format");
  if (format != kCheckpointFormat) {
    throw Error("'" + file.path() + "' has format '" + printable(format) + "', expected '" +
                kCheckpointFormat + "'");
  }
  int64_t version = file.int_attribute("/", "format_version");
  if (version < kOldestCheckpointFormatVersion || version > kCheckpointFormatVersion) {
    throw Error("'" + file.path() + "' has format_version " + std::to_string(version) +
                "; this tls_dist reads versions " + std::to_string(kOldestCheckpointFormatVersion) +
                " to " + std::to_string(kCheckpointFormatVersion));
  }
  ModelConfig c;
  c.vocab_size = file.int_attribute("/", "vocab_size");
  c.n_layer = file.int_attribute("/", "n_layer");
  c.d_model = file.int_attribute("/", "d_model");
  c.n_head = file.int_attribute("/", "n_head");
  c.d_inner = file.int_attribute("/", "d_inner");
  c.chunk_size = file.int_attribute("/", "chunk_size");
  c.chunk_rank = file.int_attribute("/", "chunk_rank");
  c.window_len = file.int_attribute("/", "window_len");
  c.mem_len = file.int_attribute("/", "mem_len");
  c.tokens_per_sample = file.int_attribute("/", "tokens_per_sample");
  c.pre_ln = read_bool(file, "pre_ln");
  c.use_gelu = read_bool(file, "use_gelu");
  c.use_bias = read_bool(file, "use_bias");
  c.clamp_len = file.int_attribute("/", "clamp_len");
  c.cpos_clamp_len = file.int_attribute("/", "cpos_clamp_len");
  c.dropout = file.has_attribute("dropout") ? file.double_attribute("/", "dropout") : 0.0;
  c.emb_dropout =
      file.has_attribute("emb_dropout") ? file.double_attribute("/", "emb_dropout") : 0.0;
  return c;
}

std::vector<std::pair<std::string, int64_t>> hyperparameter_attributes(const ModelConfig& c) {
  auto clamp = [](int64_t v) { return v > 0 ? v : int64_t{-1}; };
  return {{"vocab_size", c.vocab_size},
          {"n_layer", c.n_layer},
          {"d_model", c.d_model},
          {"n_head", c.n_head},
          {"d_inner", c.d_inner},
          {"chunk_size", c.chunk_size},
          {"chunk_rank", c.chunk_rank},
          {"window_len", c.window_len},
          {"mem_len", c.mem_len},
          {"tokens_per_sample", c.tokens_per_sample},
          {"pre_ln", c.pre_ln ? 1 : 0},
          {"use_gelu", c.use_gelu ? 1 : 0},
          {"use_bias", c.use_bias ? 1 : 0},
          {"clamp_len", clamp(c.clamp_len)},
          {"cpos_clamp_len", clamp(c.cpos_clamp_len)}};
}

}  // namespace tls
