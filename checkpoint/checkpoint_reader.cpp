// load_checkpoint: plan the reads (every dataset this rank needs and its block), validate the
// plan against the file's metadata, agree across ranks, read, agree again.
#include "checkpoint/checkpoint_reader.h"

#include <charconv>
#include <sstream>

#include "checkpoint/golden.h"
#include "parallel/rank_agreement.h"
#include "kernels/error.h"

namespace tls {
namespace {

std::string shape_text(const std::vector<int64_t>& shape) {
  std::ostringstream out;
  out << "[";
  for (size_t i = 0; i < shape.size(); ++i) out << (i ? ", " : "") << shape[i];
  out << "]";
  return out.str();
}

std::string number_text(double x) {  // the shortest text that reads back as x
  char text[32];
  const auto end = std::to_chars(text, text + sizeof(text), x).ptr;
  return std::string(text, end);
}

// One dataset to read into one local tensor.
struct PlannedRead {
  std::string dataset;
  Hyperslab slab;
  Tensor* target;
};

void read_into(const Hdf5Reader& file, const PlannedRead& r, Ops& ops) {
  Tensor& x = *r.target;
  if (x.device() == Device::cpu && x.dtype() != DType::i32) {
    file.read_block(r.dataset, r.slab.start, r.slab.count,
                    x.dtype() == DType::f64 ? H5T_NATIVE_DOUBLE : H5T_NATIVE_FLOAT, x.raw());
    return;
  }
  std::vector<double> host(static_cast<size_t>(x.numel()));
  file.read_block(r.dataset, r.slab.start, r.slab.count, H5T_NATIVE_DOUBLE, host.data());
  ops.from_host(x, host);
}

void check_hyperparameters(const CheckpointInfo& info, const ModelConfig& run,
                           const LoadOptions& options) {
  const auto stored = hyperparameter_attributes(info.config);
  const auto wanted = hyperparameter_attributes(run);
  for (size_t i = 0; i < stored.size(); ++i) {
    const std::string& name = stored[i].first;
    if (stored[i].second == wanted[i].second) continue;
    if (options.allow_length_change && (name == "tokens_per_sample" || name == "mem_len")) continue;
    throw Error("checkpoint '" + info.path + "': attribute '" + name + "' is " +
                std::to_string(stored[i].second) + " in the file but " +
                std::to_string(wanted[i].second) + " in this run");
  }
  if (options.weights_only) return;
  const std::pair<const char*, double> rates[] = {
      {"dropout", info.config.dropout - run.dropout},
      {"emb_dropout", info.config.emb_dropout - run.emb_dropout}};
  for (const auto& [name, difference] : rates) {
    if (difference == 0.0) continue;
    const bool emb = std::string(name) == "emb_dropout";
    throw Error("checkpoint '" + info.path + "': attribute '" + name + "' is " +
                number_text(emb ? info.config.emb_dropout : info.config.dropout) +
                " in the file but " + number_text(emb ? run.emb_dropout : run.dropout) +
                " in this run");
  }
}

std::vector<PlannedRead> plan_reads(const CheckpointInfo& info, CheckpointContents& c,
                                    const Topology& t, const LoadOptions& options) {
  std::vector<PlannedRead> reads;
  for (Parameter* p : c.params)
    reads.push_back({"/model/" + p->name, parameter_slab(*p), &p->value});
  if (options.weights_only) return reads;
  if (c.has_optimizer()) {
    for (size_t i = 0; i < c.params.size(); ++i) {
      const Hyperslab slab = parameter_slab(*c.params[i]);
      reads.push_back({"/optimizer/exp_avg/" + c.params[i]->name, slab, &(*c.exp_avg)[i]});
      reads.push_back({"/optimizer/exp_avg_sq/" + c.params[i]->name, slab, &(*c.exp_avg_sq)[i]});
    }
  }
  const bool same_lengths = info.config.mem_len == c.config.mem_len &&
                            info.config.tokens_per_sample == c.config.tokens_per_sample;
  if (c.caches != nullptr && same_lengths) {
    for (size_t l = 0; l < c.caches->size(); ++l) {
      Tensor& cache = (*c.caches)[l];
      reads.push_back({"/state/cache/layers." + std::to_string(l),
                       cache_slab(cache, t, c.training.batch_size, c.config.mem_len), &cache});
    }
  }
  return reads;
}

void check_datasets(const Hdf5Reader& file, const CheckpointInfo& info,
                    const std::vector<PlannedRead>& reads, const LoadOptions& options) {
  const std::string where = "checkpoint '" + info.path + "': ";
  if (!options.weights_only && !info.has_state)
    throw Error(where + "no group '/state' with the attribute 'step' (not a resumable checkpoint)");
  for (const PlannedRead& r : reads) {
    if (!file.has_dataset(r.dataset)) throw Error(where + "dataset '" + r.dataset + "' is missing");
    const std::vector<int64_t> shape = file.dataset_shape(r.dataset);
    if (shape != r.slab.shape)
      throw Error(where + "dataset '" + r.dataset + "' has shape " + shape_text(shape) +
                  ", expected " + shape_text(r.slab.shape));
    if (file.float_size(r.dataset) == 0)
      throw Error(where + "dataset '" + r.dataset + "' does not hold floating-point numbers");
    if (info.checksummed && !file.has_checksum(r.dataset))
      throw Error(where + "dataset '" + r.dataset + "' has no Fletcher32 checksum");
    int64_t n = 1;
    for (int64_t d : r.slab.count) n *= d;
    if (n != r.target->numel())
      throw Error(where + "dataset '" + r.dataset + "': this rank's block " +
                  shape_text(r.slab.count) + " does not fit its tensor " +
                  r.target->shape_string());
  }
}

}  // namespace

CheckpointInfo read_checkpoint_info(const Hdf5Reader& file) {
  CheckpointInfo info;
  info.path = file.path();
  info.config = config_from_attributes(file);  // format, version, hyperparameters
  auto int_or = [&](const char* name, int64_t fallback) {
    return file.has_attribute(name) ? file.int_attribute("/", name) : fallback;
  };
  info.layout.tp = static_cast<int>(int_or("tp", 1));
  info.layout.sp = static_cast<int>(int_or("sp", 1));
  info.layout.dp = static_cast<int>(int_or("dp", 1));
  if (file.has_attribute("precision")) info.precision = file.string_attribute("/", "precision");
  info.checksummed =
      file.has_attribute("checksum") && file.string_attribute("/", "checksum") == "fletcher32";
  info.has_optimizer = file.has_group("/optimizer");
  info.has_state = file.has_attribute("/state", "step");
  if (info.has_state) info.step = file.int_attribute("/state", "step");
  info.has_training = file.has_attribute("batch_size");
  if (info.has_training) {
    TrainSettings& s = info.training;
    s.seed = static_cast<uint64_t>(file.int_attribute("/", "seed"));
    s.batch_size = file.int_attribute("/", "batch_size");
    s.update_freq = int_or("update_freq", 1);  // absent before --update-freq existed: 1
    s.optimizer.lr = file.double_attribute("/", "lr");
    s.optimizer.warmup_updates = file.int_attribute("/", "warmup_updates");
    s.optimizer.weight_decay = file.double_attribute("/", "weight_decay");
    s.optimizer.clip_norm = file.double_attribute("/", "clip_norm");
    s.optimizer.beta1 = file.double_attribute("/", "adam_beta1");
    s.optimizer.beta2 = file.double_attribute("/", "adam_beta2");
    s.optimizer.eps = file.double_attribute("/", "adam_eps");
  }
  info.data_bytes = int_or("data_bytes", -1);
  info.data_digest = int_or("data_digest", 0);
  if (file.has_attribute("valid_loss")) info.valid_loss = file.double_attribute("/", "valid_loss");
  return info;
}

CheckpointInfo read_checkpoint_info(const std::string& path) {
  return read_checkpoint_info(Hdf5Reader(path));
}

CheckpointInfo load_checkpoint(const std::string& path, CheckpointContents& contents,
                               const Topology& t, Ops& ops, const LoadOptions& options) {
  std::unique_ptr<Hdf5Reader> file;
  CheckpointInfo info;
  std::vector<PlannedRead> reads;
  std::string error = error_message_of([&] {
    file = std::make_unique<Hdf5Reader>(path);
    info = read_checkpoint_info(*file);
    check_hyperparameters(info, contents.config, options);
    reads = plan_reads(info, contents, t, options);
    check_datasets(*file, info, reads, options);
  });
  throw_if_any_rank_failed(*t.world, error);
  error = error_message_of([&] {
    for (const PlannedRead& r : reads) read_into(*file, r, ops);
  });
  throw_if_any_rank_failed(*t.world, error);
  if (!options.weights_only) contents.step = info.step;
  return info;
}

}  // namespace tls
