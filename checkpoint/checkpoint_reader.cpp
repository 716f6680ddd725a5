// load_checkpoint: plan the reads (every dataset this rank needs and its block), validate the
// plan against the file's metadata, agree across ranks, read, agree again.
#include "checkpoint/checkpoint_reader.h"

#include <charconv>
#include <cstring>
#include <filesystem>
#include <map>
#include <sstream>

#include "checkpoint/golden.h"
#include "kernels/error.h"
#include "parallel/rank_agreement.h"

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

// The part of one source of a virtual dataset that a read needs: `start`/`count` in the source
// dataset, `offset` of that block inside the rank's slab.
struct Piece {
  const Hdf5Reader* part = nullptr;
  std::string dataset;
  std::vector<int64_t> start, count, offset;
};

// One dataset to read into one local tensor: straight from the checkpoint (version 1) or, for a
// virtual dataset, from the part files its pieces name.
struct PlannedRead {
  std::string dataset;
  Hyperslab slab;
  Tensor* target;
  std::vector<Piece> pieces = {};
  // A slab that is only some rows of the target (a run of a cache's positions): read into
  // `part`, then copied to the target's rows from row0 on.
  Tensor part = {};
  int64_t row0 = 0;
};

// The part files of one checkpoint, each opened once.
class PartFiles {
 public:
  explicit PartFiles(std::string checkpoint) : checkpoint_(std::move(checkpoint)) {}
  const Hdf5Reader& open(const std::string& name, const std::string& dataset) {
    auto found = files_.find(name);
    if (found != files_.end()) return *found->second;
    const std::string where = "checkpoint '" + checkpoint_ + "': dataset '" + dataset + "': ";
    // A damaged checkpoint must not send the reader to another directory.
    if (name.empty() || name.find('/') != std::string::npos || name == "." || name == "..")
      throw Error(where + "part file name '" + printable(name) + "' is not a file name");
    const std::string path =
        (std::filesystem::path(directory_of_file(checkpoint_)) / name).string();
    if (!std::filesystem::exists(path)) throw Error(where + "part file '" + path + "' is missing");
    try {
      return *files_.emplace(name, std::make_unique<Hdf5Reader>(path)).first->second;
    } catch (const Error& e) {
      throw Error(where + "part file '" + path + "' is damaged: " + e.what());
    }
  }

 private:
  static std::string directory_of_file(const std::string& path) {
    const std::string dir = std::filesystem::path(path).parent_path().string();
    return dir.empty() ? "." : dir;
  }
  std::string checkpoint_;
  std::map<std::string, std::unique_ptr<Hdf5Reader>> files_;
};

// Copies a row-major block of shape `count` into a row-major buffer of shape `outer`, at `offset`.
void place_block(const char* block, const std::vector<int64_t>& count, char* out,
                 const std::vector<int64_t>& outer, const std::vector<int64_t>& offset,
                 size_t element) {
  const size_t n = count.size();
  if (n == 0) {
    std::memcpy(out, block, element);
    return;
  }
  std::vector<int64_t> stride(n, 1);  // of `outer`, in elements
  for (size_t i = n - 1; i-- > 0;) stride[i] = stride[i + 1] * outer[i + 1];
  int64_t rows = 1;
  for (size_t i = 0; i + 1 < n; ++i) rows *= count[i];
  const size_t row_bytes = static_cast<size_t>(count[n - 1]) * element;
  std::vector<int64_t> index(n, 0);
  for (int64_t r = 0; r < rows; ++r) {
    int64_t rest = r, at = offset[n - 1];
    for (size_t i = n - 1; i-- > 0;) {
      index[i] = rest % count[i];
      rest /= count[i];
      at += (index[i] + offset[i]) * stride[i];
    }
    std::memcpy(out + static_cast<size_t>(at) * element, block + static_cast<size_t>(r) * row_bytes,
                row_bytes);
  }
}

void read_pieces(const PlannedRead& r, const std::string& checkpoint, hid_t mem_type,
                 size_t element, char* out) {
  std::vector<char> block;
  for (const Piece& p : r.pieces) {
    int64_t n = 1;
    for (int64_t c : p.count) n *= c;
    const bool whole = p.count == r.slab.count;
    if (!whole) block.resize(static_cast<size_t>(n) * element);
    try {
      p.part->read_block(p.dataset, p.start, p.count, mem_type, whole ? out : block.data());
    } catch (const Error& e) {
      throw Error("checkpoint '" + checkpoint + "': dataset '" + r.dataset + "': " + e.what());
    }
    if (!whole) place_block(block.data(), p.count, out, r.slab.count, p.offset, element);
  }
}

void read_rows_into(const Hdf5Reader& file, const PlannedRead& r, Ops& ops, Tensor& x);

void read_into(const Hdf5Reader& file, const PlannedRead& r, Ops& ops) {
  if (!r.part.defined()) {
    read_rows_into(file, r, ops, *r.target);
    return;
  }
  Tensor part = r.part;
  read_rows_into(file, r, ops, part);
  ops.copy_rows(*r.target, r.row0, part, 0, part.dim(1));
}

void read_rows_into(const Hdf5Reader& file, const PlannedRead& r, Ops& ops, Tensor& x) {
  const bool direct = x.device() == Device::cpu && x.dtype() != DType::i32;
  const hid_t mem_type = direct && x.dtype() == DType::f32 ? H5T_NATIVE_FLOAT : H5T_NATIVE_DOUBLE;
  if (!r.pieces.empty()) {
    if (direct) {
      read_pieces(r, file.path(), mem_type, dtype_size(x.dtype()), static_cast<char*>(x.raw()));
      return;
    }
    std::vector<double> host(static_cast<size_t>(x.numel()));
    read_pieces(r, file.path(), H5T_NATIVE_DOUBLE, sizeof(double),
                reinterpret_cast<char*>(host.data()));
    ops.from_host(x, host);
    return;
  }
  if (direct) {
    file.read_block(r.dataset, r.slab.start, r.slab.count, mem_type, x.raw());
    return;
  }
  std::vector<double> host(static_cast<size_t>(x.numel()));
  file.read_block(r.dataset, r.slab.start, r.slab.count, H5T_NATIVE_DOUBLE, host.data());
  ops.from_host(x, host);
}

// The pieces of the part files that hold this read's slab; refuses missing or damaged parts,
// sources of the wrong shape, and slabs the parts do not cover.
void plan_pieces(const Hdf5Reader& file, const CheckpointInfo& info, PlannedRead& r,
                 const std::vector<VirtualSource>& sources, PartFiles& parts) {
  const std::string where = "checkpoint '" + info.path + "': dataset '" + r.dataset + "': ";
  const size_t n = r.slab.shape.size();
  int64_t covered = 0, needed = 1;
  for (int64_t c : r.slab.count) needed *= c;
  for (const VirtualSource& s : sources) {
    if (s.start.size() != n) throw Error(where + "a mapping has the wrong rank");
    Piece p;
    int64_t volume = 1;
    for (size_t i = 0; i < n; ++i) {
      const int64_t lo = std::max(s.start[i], r.slab.start[i]);
      const int64_t hi = std::min(s.start[i] + s.count[i], r.slab.start[i] + r.slab.count[i]);
      volume *= std::max<int64_t>(0, hi - lo);
      p.start.push_back(lo - s.start[i]);
      p.count.push_back(std::max<int64_t>(0, hi - lo));
      p.offset.push_back(lo - r.slab.start[i]);
    }
    if (volume == 0 && n > 0) continue;
    const Hdf5Reader& part = parts.open(s.file, r.dataset);
    const std::string in_part = "part file '" + part.path() + "' ";
    if (!part.has_dataset(s.dataset))
      throw Error(where + in_part + "has no dataset '" + printable(s.dataset) + "'");
    if (part.dataset_shape(s.dataset) != s.count)
      throw Error(where + in_part + "holds a block of shape " +
                  shape_text(part.dataset_shape(s.dataset)) + ", the checkpoint maps " +
                  shape_text(s.count));
    if (part.float_size(s.dataset) == 0)
      throw Error(where + in_part + "does not hold floating-point numbers");
    if (info.checksummed && !part.has_checksum(s.dataset))
      throw Error(where + in_part + "has no Fletcher32 checksum");
    p.part = &part;
    p.dataset = s.dataset;
    r.pieces.push_back(std::move(p));
    covered += volume;
  }
  (void)file;
  if (covered != needed)  // never read a gap as HDF5's fill value
    throw Error(where + "the part files hold " + std::to_string(covered) + " of the " +
                std::to_string(needed) + " values this rank needs");
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
                                    const Topology& t, const LoadOptions& options, Ops& ops) {
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
      const std::vector<CacheBlock> runs =
          cache_blocks(cache, t, c.training.batch_size, c.config.mem_len);
      for (const CacheBlock& run : runs) {
        PlannedRead read{"/state/cache/layers." + std::to_string(l), run.slab, &cache};
        if (runs.size() > 1) {
          read.part = ops.empty(run.slab.count, cache.dtype());
          read.row0 = run.row0;
        }
        reads.push_back(std::move(read));
      }
    }
  }
  return reads;
}

void check_datasets(const Hdf5Reader& file, const CheckpointInfo& info,
                    std::vector<PlannedRead>& reads, const LoadOptions& options, PartFiles& parts) {
  const std::string where = "checkpoint '" + info.path + "': ";
  if (!options.weights_only && !info.has_state)
    throw Error(where + "no group '/state' with the attribute 'step' (not a resumable checkpoint)");
  for (PlannedRead& r : reads) {
    if (!file.has_dataset(r.dataset)) throw Error(where + "dataset '" + r.dataset + "' is missing");
    const std::vector<int64_t> shape = file.dataset_shape(r.dataset);
    if (shape != r.slab.shape)
      throw Error(where + "dataset '" + r.dataset + "' has shape " + shape_text(shape) +
                  ", expected " + shape_text(r.slab.shape));
    if (file.float_size(r.dataset) == 0)
      throw Error(where + "dataset '" + r.dataset + "' does not hold floating-point numbers");
    const std::vector<VirtualSource> sources = file.virtual_sources(r.dataset);
    if (!sources.empty()) {
      plan_pieces(file, info, r, sources, parts);
    } else if (info.checksummed && !file.has_checksum(r.dataset)) {
      throw Error(where + "dataset '" + r.dataset + "' has no Fletcher32 checksum");
    }
    int64_t n = 1;
    for (int64_t d : r.slab.count) n *= d;
    if (n != (r.part.defined() ? r.part : *r.target).numel())
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
  PartFiles parts(path);
  CheckpointInfo info;
  std::vector<PlannedRead> reads;
  std::string error = error_message_of([&] {
    file = std::make_unique<Hdf5Reader>(path);
    info = read_checkpoint_info(*file);
    check_hyperparameters(info, contents.config, options);
    reads = plan_reads(info, contents, t, options, ops);
    check_datasets(*file, info, reads, options, parts);
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
