// save_checkpoint: validate what this rank holds (collectively agreed), write the file through
// Hdf5Writer, then the durable rename. Layout of the file: checkpoint_contents.h.
#include "checkpoint/checkpoint_writer.h"

#include <cmath>

#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <filesystem>

#include "checkpoint/durable_files.h"
#include "checkpoint/golden.h"
#include "checkpoint/hdf5_writer.h"
#include "parallel/rank_agreement.h"
#include "parallel/fault_injection.h"
#include "parallel/mpi_comm.h"
#include "kernels/error.h"

namespace tls {
namespace {

MPI_Comm world_handle(const Topology& t) {
  auto* mpi = dynamic_cast<MpiComm*>(t.world.get());
  return mpi != nullptr ? mpi->handle() : MPI_COMM_NULL;
}

// A name shared by every rank: rank 0's process id.
std::string temporary_path(const std::string& path, MPI_Comm comm) {
  long id = static_cast<long>(::getpid());
  if (comm != MPI_COMM_NULL) MPI_Bcast(&id, 1, MPI_LONG, 0, comm);
  return path + ".tmp-" + std::to_string(id);
}

int64_t numel(const std::vector<int64_t>& shape) {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}

// Checks that every tensor this rank holds matches the block it is to write.
std::string check_contents(const CheckpointContents& c, const Topology& t) {
  return error_message_of([&] {
    const size_t n = c.params.size();
    if (c.has_optimizer() && (c.exp_avg->size() != n || c.exp_avg_sq->size() != n))
      throw Error("checkpoint: the optimizer's moments do not match the parameter list");
    for (size_t i = 0; i < n; ++i) {
      const Parameter& p = *c.params[i];
      const int64_t want = numel(parameter_slab(p).count);
      bool ok = p.value.numel() == want;
      if (c.has_optimizer())
        ok = ok && (*c.exp_avg)[i].numel() == want && (*c.exp_avg_sq)[i].numel() == want;
      if (!ok)
        throw Error("checkpoint: parameter '" + p.name + "' holds " +
                    std::to_string(p.value.numel()) + " values, its block has " +
                    std::to_string(want));
    }
    if (c.caches == nullptr) return;
    if (static_cast<int64_t>(c.caches->size()) != c.config.n_layer)
      throw Error("checkpoint: expected one cache per layer");
    for (const Tensor& cache : *c.caches) {
      if (cache.rank() != 3 || cache.dim(0) * t.layout.dp != c.training.batch_size ||
          cache.dim(1) * t.layout.sp != c.config.mem_len || cache.dim(2) != c.config.d_model)
        throw Error("checkpoint: a cache of shape " + cache.shape_string() +
                    " is not this rank's slice of [" + std::to_string(c.training.batch_size) +
                    ", " + std::to_string(c.config.mem_len) + ", " +
                    std::to_string(c.config.d_model) + "]");
    }
  });
}

// Writes one tensor: this rank's block when `mine`, else nothing (it still takes part).
void write_tensor(Hdf5Writer& w, Ops& ops, const std::string& path, DType file_type,
                  const Hyperslab& slab, const Tensor& local, bool mine) {
  if (!mine || local.device() == Device::cpu) {
    w.write(path, file_type, slab.shape, slab.start, slab.count, local.dtype(),
            mine ? local.raw() : nullptr);
    return;
  }
  // Device tensors go through the host, converted to the file's type there: parallel HDF5 writes
  // a filtered (checksummed) dataset only collectively, and a type conversion on the way would
  // break collective I/O.
  const std::vector<double> host = ops.to_host(local);
  auto write_as = [&](auto element) {
    using E = decltype(element);
    const std::vector<E> converted(host.begin(), host.end());
    w.write(path, file_type, slab.shape, slab.start, slab.count, file_type, converted.data());
  };
  switch (file_type) {
    case DType::f32:
      return write_as(float{});
    case DType::f64:
      return write_as(double{});
    case DType::i32:
      return write_as(int32_t{});
  }
}

void write_attributes(Hdf5Writer& w, const CheckpointContents& c, const Topology& t) {
  w.attribute("/", "format", std::string(kCheckpointFormat));
  w.attribute("/", "format_version", kCheckpointFormatVersion);
  for (const auto& [name, value] : hyperparameter_attributes(c.config))
    w.attribute("/", name, value);
  w.attribute("/", "dropout", c.config.dropout);
  w.attribute("/", "emb_dropout", c.config.emb_dropout);
  w.attribute("/", "precision", c.precision());
  w.attribute("/", "checksum", std::string("fletcher32"));
  w.attribute("/", "tp", int64_t{t.layout.tp});
  w.attribute("/", "sp", int64_t{t.layout.sp});
  w.attribute("/", "dp", int64_t{t.layout.dp});
  const TrainSettings& s = c.training;
  w.attribute("/", "seed", static_cast<int64_t>(s.seed));
  w.attribute("/", "batch_size", s.batch_size);
  w.attribute("/", "update_freq", s.update_freq);
  w.attribute("/", "lr", s.optimizer.lr);
  w.attribute("/", "warmup_updates", s.optimizer.warmup_updates);
  w.attribute("/", "weight_decay", s.optimizer.weight_decay);
  w.attribute("/", "clip_norm", s.optimizer.clip_norm);
  w.attribute("/", "adam_beta1", s.optimizer.beta1);
  w.attribute("/", "adam_beta2", s.optimizer.beta2);
  w.attribute("/", "adam_eps", s.optimizer.eps);
  w.attribute("/", "data_bytes", c.data_bytes);
  w.attribute("/", "data_digest", c.data_digest);
  if (std::isfinite(c.valid_loss)) w.attribute("/", "valid_loss", c.valid_loss);
}

void write_contents(Hdf5Writer& w, const CheckpointContents& c, const Topology& t, Ops& ops) {
  const DType file_type = c.dtype == DType::f64 ? DType::f64 : DType::f32;
  const int abort_rank = fault_rank("save");
  write_attributes(w, c, t);
  w.group("/model");
  for (size_t i = 0; i < c.params.size(); ++i) {
    if (i == c.params.size() / 2 && abort_rank == t.world_rank) {
      std::fprintf(stderr, "%s: rank %d aborts halfway through the save\n", kFaultInjectVariable,
                   t.world_rank);
      std::abort();
    }
    const Parameter& p = *c.params[i];
    write_tensor(w, ops, "/model/" + p.name, file_type, parameter_slab(p), p.value,
                 t.writes_parameter(p.tp_sharded()));
  }
  if (c.has_optimizer()) {
    w.group("/optimizer");
    for (const char* which : {"exp_avg", "exp_avg_sq"}) {
      const std::string group = std::string("/optimizer/") + which;
      const std::vector<Tensor>& moments =
          which == std::string("exp_avg") ? *c.exp_avg : *c.exp_avg_sq;
      w.group(group);
      for (size_t i = 0; i < c.params.size(); ++i) {
        const Parameter& p = *c.params[i];
        write_tensor(w, ops, group + "/" + p.name, file_type, parameter_slab(p), moments[i],
                     t.writes_parameter(p.tp_sharded()));
      }
    }
  }
  w.group("/state");
  w.attribute("/state", "step", c.step);
  if (c.caches == nullptr) return;
  w.group("/state/cache");
  for (size_t l = 0; l < c.caches->size(); ++l) {
    const Tensor& cache = (*c.caches)[l];
    write_tensor(w, ops, "/state/cache/layers." + std::to_string(l), file_type,
                 cache_slab(cache, t, c.training.batch_size, c.config.mem_len), cache,
                 t.tp_rank == 0);
  }
}

std::string megabytes(int64_t bytes) {
  char text[32];
  std::snprintf(text, sizeof text, "%.1f MB", static_cast<double>(bytes) / 1e6);
  return text;
}

// Rank 0's verdict on whether the file fits where it goes ("" when it does or cannot be told).
std::string space_problem(const std::string& path, int64_t needed) {
  if (fault_switch_on("save_no_space_check")) return "";
  const int64_t free = free_bytes(directory_of(path));
  if (free < 0 || free >= needed) return "";
  return "not enough space to save checkpoint '" + path + "': it needs about " + megabytes(needed) +
         " and the file system holding '" + directory_of(path) + "' has " + megabytes(free) +
         " free";
}

}  // namespace

int64_t checkpoint_file_bytes(const CheckpointContents& c, const Topology& t) {
  const int64_t element = c.dtype == DType::f64 ? 8 : 4;
  int64_t bytes = int64_t{1} << 16, datasets = 0;  // superblock, groups and attributes
  const int64_t copies = c.has_optimizer() ? 3 : 1;
  for (const Parameter* p : c.params) {
    bytes += copies * element * numel(parameter_slab(*p).shape);
    datasets += copies;
  }
  if (c.caches != nullptr) {
    for (const Tensor& cache : *c.caches) {
      bytes += element * numel(cache_slab(cache, t, c.training.batch_size, c.config.mem_len).shape);
      ++datasets;
    }
  }
  // Per dataset: an object header, a chunk index and a 4-byte checksum per (>= 4 KiB) chunk.
  return bytes + datasets * 4096 + bytes / 1024;
}

void save_checkpoint(const std::string& path, const CheckpointContents& contents, const Topology& t,
                     Ops& ops) {
  throw_if_any_rank_failed(*t.world, check_contents(contents, t));
  const MPI_Comm comm = world_handle(t);
  const std::string temporary = temporary_path(path, comm);
  std::string error;
  if (t.world_rank == 0) error = space_problem(path, checkpoint_file_bytes(contents, t));
  throw_if_any_rank_failed(*t.world, error);
  // Hdf5Writer agrees on failure after every collective call, so every rank leaves together.
  error = error_message_of([&] {
    Hdf5Writer writer(temporary, comm);
    write_contents(writer, contents, t, ops);
    writer.close();
  });
  if (!error.empty() && t.world_rank == 0) {
    std::error_code ignored;
    std::filesystem::remove(temporary, ignored);  // half-written: never to be taken for a save
  }
  throw_if_any_rank_failed(*t.world, error);
  if (t.world_rank == 0) {
    error = error_message_of([&] {
      fsync_file(temporary);
      durable_rename(temporary, path);
    });
  }
  throw_if_any_rank_failed(*t.world, error);  // also the barrier: the file is in place
}

}  // namespace tls
