// The three steps of a save (checkpoint_writer.h). Layout of the data: checkpoint_contents.h.
#include "checkpoint/checkpoint_writer.h"

#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <map>
#include <sstream>
#include <thread>

#include "checkpoint/chunk_checksums.h"
#include "checkpoint/durable_files.h"
#include "checkpoint/golden.h"
#include "checkpoint/hdf5_writer.h"
#include "checkpoint/part_file.h"
#include "kernels/error.h"
#include "parallel/fault_injection.h"
#include "parallel/mpi_comm.h"
#include "parallel/rank_agreement.h"

namespace tls {
namespace {

MPI_Comm world_handle(const Topology& t) {
  auto* mpi = dynamic_cast<MpiComm*>(t.world.get());
  return mpi != nullptr ? mpi->handle() : MPI_COMM_NULL;
}

// A token shared by every rank, fresh for every save: rank 0's clock and process id.
std::string save_token(MPI_Comm comm) {
  const auto now = std::chrono::system_clock::now().time_since_epoch();
  uint64_t token =
      static_cast<uint64_t>(std::chrono::duration_cast<std::chrono::microseconds>(now).count()) ^
      (static_cast<uint64_t>(::getpid()) << 40);
  if (comm != MPI_COMM_NULL) MPI_Bcast(&token, 1, MPI_UINT64_T, 0, comm);
  char text[24];
  std::snprintf(text, sizeof text, "%016llx", static_cast<unsigned long long>(token));
  return text;
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

void write_attributes(Hdf5Writer& w, const CheckpointContents& c, const Layout& layout,
                      const std::string& part_prefix, int world_size) {
  w.attribute("/", "format", std::string(kCheckpointFormat));
  w.attribute("/", "format_version", kCheckpointFormatVersion);
  for (const auto& [name, value] : hyperparameter_attributes(c.config))
    w.attribute("/", name, value);
  w.attribute("/", "dropout", c.config.dropout);
  w.attribute("/", "emb_dropout", c.config.emb_dropout);
  w.attribute("/", "precision", c.precision());
  w.attribute("/", "checksum", std::string("fletcher32"));
  w.attribute("/", "parts", part_prefix);
  w.attribute("/", "part_count", int64_t{world_size});
  w.attribute("/", "tp", int64_t{layout.tp});
  w.attribute("/", "sp", int64_t{layout.sp});
  w.attribute("/", "dp", int64_t{layout.dp});
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

// Copies `local` into a host block of the file's type; with rows given, only the rows
// [m0, m0 + n) of every leading row of a 3-D [B, M, d] tensor.
struct RowRange {
  int64_t m0 = 0, n = -1;  // n < 0: the whole tensor
};

// How a host tensor already in the file's type is saved: copied now, held by reference (a
// cache: never written in place), or copied later (take_snapshot: read until the next update).
enum class Keep { copy, reference, copy_later };

HostBlock host_block(const std::string& dataset, const Hyperslab& slab, DType type,
                     const Tensor& whole, Ops& ops, std::vector<HostBlock>& reuse,
                     RowRange rows = {}, Keep keep = Keep::copy) {
  HostBlock b;
  b.dataset = dataset;
  b.slab = slab;
  b.type = type;
  const bool part = rows.n >= 0 && rows.n != whole.dim(1);
  const int64_t numel = part ? whole.dim(0) * rows.n * whole.dim(2) : whole.numel();
  b.bytes = static_cast<size_t>(numel) * dtype_size(type);
  const bool on_host = whole.device() == Device::cpu && whole.dtype() == type;
  if (keep == Keep::reference && on_host && whole.rank() == 3) {
    b.held = whole;
    b.held_row0 = part ? rows.m0 : 0;
    return b;
  }
  for (HostBlock& old : reuse) {
    if (old.data != nullptr && old.bytes == b.bytes) {
      b.data = std::move(old.data);
      break;
    }
  }
  if (b.data == nullptr) {
    b.data = snapshot_buffer(b.bytes + PartFileWriter::kSlackBytes);
    // Device to host through the bus at its speed: pinned once, kept for the next saves.
    if (whole.device() != Device::cpu)
      b.data.get_deleter().unpin =
          ops.pin_host(b.data.get(), b.bytes + PartFileWriter::kSlackBytes);
  }
  if (keep == Keep::copy_later && on_host && !part) {
    b.held = whole;
    b.copy_deferred = true;
    return b;
  }
  if (on_host) {
    if (!part) {
      std::memcpy(b.data.get(), whole.raw(), b.bytes);
      return b;
    }
    const size_t row = static_cast<size_t>(whole.dim(2)) * dtype_size(type);
    const char* src = static_cast<const char*>(whole.raw());
    for (int64_t i = 0; i < whole.dim(0); ++i)
      std::memcpy(b.data.get() + static_cast<size_t>(i * rows.n) * row,
                  src + static_cast<size_t>(i * whole.dim(1) + rows.m0) * row,
                  static_cast<size_t>(rows.n) * row);
    return b;
  }
  Tensor local = whole;
  if (part) {
    local = ops.empty({whole.dim(0), rows.n, whole.dim(2)}, whole.dtype());
    ops.copy_rows(local, 0, whole, rows.m0, rows.n);
  }
  if (local.dtype() == type) {  // a device tensor in the file's type: one transfer
    ops.copy_to_host_bytes(local, b.data.get());
    return b;
  }
  const std::vector<double> host = ops.to_host(local);
  if (type == DType::f64) {
    std::memcpy(b.data.get(), host.data(), b.bytes);
  } else {
    float* out = reinterpret_cast<float*>(b.data.get());
    for (size_t i = 0; i < host.size(); ++i) out[i] = static_cast<float>(host[i]);
  }
  return b;
}

std::vector<HostBlock> copy_blocks(const CheckpointContents& c, const Topology& t, Ops& ops,
                                   std::vector<HostBlock>& reuse, bool defer_copies) {
  const DType type = c.dtype == DType::f64 ? DType::f64 : DType::f32;
  const Keep state = defer_copies ? Keep::copy_later : Keep::copy;
  std::vector<HostBlock> blocks;
  for (size_t i = 0; i < c.params.size(); ++i) {
    const Parameter& p = *c.params[i];
    if (!t.writes_parameter(p.tp_sharded())) continue;
    const Hyperslab slab = parameter_slab(p);
    blocks.push_back(host_block("/model/" + p.name, slab, type, p.value, ops, reuse, {}, state));
    if (c.has_optimizer()) {
      blocks.push_back(host_block("/optimizer/exp_avg/" + p.name, slab, type, (*c.exp_avg)[i], ops,
                                  reuse, {}, state));
      blocks.push_back(host_block("/optimizer/exp_avg_sq/" + p.name, slab, type, (*c.exp_avg_sq)[i],
                                  ops, reuse, {}, state));
    }
  }
  if (c.caches != nullptr) {
    // Every tp rank holds the same cache: each writes its own share of the memory rows, so the
    // copy that blocks training is split over the tp group instead of falling on one rank.
    for (size_t l = 0; l < c.caches->size(); ++l) {
      const Tensor& cache = (*c.caches)[l];
      const int64_t m = cache.dim(1), tp = t.layout.tp;
      const int64_t lo = m * t.tp_rank / tp, hi = m * (t.tp_rank + 1) / tp;
      // One block per run of positions the share meets (the caches are stored in global
      // position order whatever the sp layout).
      const std::string name = "/state/cache/layers." + std::to_string(l);
      int runs = 0;
      for (const CacheBlock& run :
           cache_blocks(cache, t, c.training.batch_size, c.config.mem_len)) {
        const int64_t a = std::max(lo, run.row0), z = std::min(hi, run.row0 + run.slab.count[1]);
        if (z <= a) continue;
        Hyperslab slab = run.slab;
        slab.start[1] += a - run.row0;
        slab.count[1] = z - a;
        blocks.push_back(
            host_block(name, slab, type, cache, ops, reuse, RowRange{a, z - a}, Keep::reference));
        if (runs++ > 0)  // a part file holds one dataset per name
          blocks.back().part_name = name + ".positions_" + std::to_string(slab.start[1]);
      }
    }
  }
  return blocks;
}

// "<dataset> <name in the part> <f64?> <ndim> <shape...> <start...> <count...>"
std::string manifest_line(const HostBlock& b) {
  std::ostringstream out;
  out << b.dataset << ' ' << (b.part_name.empty() ? b.dataset : b.part_name) << ' '
      << (b.type == DType::f64 ? 1 : 0) << ' ' << b.slab.shape.size();
  for (const auto* v : {&b.slab.shape, &b.slab.start, &b.slab.count})
    for (int64_t x : *v) out << ' ' << x;
  return out.str();
}

// Rank 0 receives every rank's manifest: one string per rank, lines separated by '\n'.
std::vector<std::string> gather_manifests(const std::string& mine, MPI_Comm comm) {
  if (comm == MPI_COMM_NULL) return {mine};
  int rank = 0, size = 1;
  MPI_Comm_rank(comm, &rank);
  MPI_Comm_size(comm, &size);
  int length = static_cast<int>(mine.size());
  std::vector<int> lengths(static_cast<size_t>(size)), offsets(static_cast<size_t>(size));
  MPI_Gather(&length, 1, MPI_INT, lengths.data(), 1, MPI_INT, 0, comm);
  int total = 0;
  for (int r = 0; r < size; ++r) {
    offsets[static_cast<size_t>(r)] = total;
    total += lengths[static_cast<size_t>(r)];
  }
  std::string all(static_cast<size_t>(std::max(total, 1)), '\0');
  MPI_Gatherv(mine.data(), length, MPI_CHAR, all.data(), lengths.data(), offsets.data(), MPI_CHAR,
              0, comm);
  if (rank != 0) return {};
  std::vector<std::string> out;
  for (int r = 0; r < size; ++r)
    out.push_back(all.substr(static_cast<size_t>(offsets[static_cast<size_t>(r)]),
                             static_cast<size_t>(lengths[static_cast<size_t>(r)])));
  return out;
}

void abort_at(const char* point, int rank, const char* what) {
  if (fault_rank(point) != rank) return;
  std::fprintf(stderr, "%s: rank %d aborts %s\n", kFaultInjectVariable, rank, what);
  std::fflush(stderr);
  std::abort();
}

}  // namespace

void HostBlock::gather(size_t at, size_t n, char* out) const {
  if (data != nullptr) {
    std::memcpy(out, data.get() + at, n);
    return;
  }
  // Block row b (of slab.count[0]) is `slab_bytes` contiguous bytes of the held tensor.
  const size_t row = static_cast<size_t>(held.dim(2)) * dtype_size(type);
  const size_t slab_bytes = static_cast<size_t>(slab.count[1]) * row;
  const char* base = static_cast<const char*>(held.raw());
  while (n > 0) {
    const size_t b = at / slab_bytes, within = at % slab_bytes;
    const size_t take = std::min(n, slab_bytes - within);
    std::memcpy(out,
                base +
                    (b * static_cast<size_t>(held.dim(1)) + static_cast<size_t>(held_row0)) * row +
                    within,
                take);
    out += take;
    at += take;
    n -= take;
  }
}

void PendingSave::take_snapshot() {
  for (HostBlock& b : blocks) {
    if (!b.copy_deferred) continue;
    std::memcpy(b.data.get(), b.held.raw(), b.bytes);
    b.held = Tensor();
    b.copy_deferred = false;
  }
}

std::string PendingSave::part_path(int rank) const {
  return (std::filesystem::path(directory_of(path)) /
          (part_prefix + ".part" + std::to_string(rank) + ".h5"))
      .string();
}

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
      bytes += element *
               numel(cache_blocks(cache, t, c.training.batch_size, c.config.mem_len)[0].slab.shape);
      ++datasets;
    }
  }
  // Per dataset: object headers and mappings in the checkpoint and every part, a chunk index,
  // and a 4-byte checksum per chunk; per part: a superblock.
  return bytes + datasets * 4096 * (1 + t.layout.world()) + bytes / 1024 +
         int64_t{4096} * t.layout.world();
}

std::unique_ptr<PendingSave> begin_save(const std::string& path, const CheckpointContents& contents,
                                        const Topology& t, Ops& ops, std::vector<HostBlock> reuse,
                                        bool defer_copies) {
  throw_if_any_rank_failed(*t.world, check_contents(contents, t));
  std::string error;
  if (t.world_rank == 0) error = space_problem(path, checkpoint_file_bytes(contents, t));
  throw_if_any_rank_failed(*t.world, error);
  const MPI_Comm comm = world_handle(t);
  auto save = std::make_unique<PendingSave>();
  save->path = path;
  save->part_prefix = std::filesystem::path(path).stem().string() + "." + save_token(comm);
  save->world_rank = t.world_rank;
  save->world_size = t.layout.world();
  save->meta = contents;
  save->meta.params.clear();
  save->has_optimizer = contents.has_optimizer();
  save->has_caches = contents.caches != nullptr;
  save->meta.exp_avg = save->meta.exp_avg_sq = save->meta.caches = nullptr;
  save->layout = t.layout;
  error =
      error_message_of([&] { save->blocks = copy_blocks(contents, t, ops, reuse, defer_copies); });
  throw_if_any_rank_failed(*t.world, error);
  std::string mine;
  for (const HostBlock& b : save->blocks) mine += manifest_line(b) + "\n";
  save->manifest = gather_manifests(mine, comm);
  return save;
}

void write_part(const PendingSave& save) {
  if (save.blocks.empty()) return;
  const std::string path = save.part_path(save.world_rank);
  const std::string error = error_message_of([&] {
    PartFileWriter part(path);
    // The checksums run just ahead of the writes, on a thread of their own, which also stages
    // the chunks of a held block (its neighbouring bytes are not the writer's to borrow).
    std::vector<ChunkChecksums::Block> blocks;
    for (const HostBlock& b : save.blocks) {
      ChunkChecksums::Block c{b.data.get(), b.type, b.slab.count, {}};
      if (b.data == nullptr)
        c.fill = [&b](size_t at, size_t n, char* out) { b.gather(at, n, out); };
      blocks.push_back(std::move(c));
    }
    ChunkChecksums sums(std::move(blocks));
    for (size_t i = 0; i < save.blocks.size(); ++i) {
      if (i == save.blocks.size() / 2)
        abort_at("save", save.world_rank, "halfway through the save");
      maybe_inject_fault("save_block", save.world_rank);
      const HostBlock& b = save.blocks[i];
      const std::string name = b.part_name.empty() ? b.dataset : b.part_name;
      if (b.data == nullptr) {
        part.write_staged(name, b.type, b.slab.count, [&](size_t chunk) {
          const uint32_t sum = sums.get(i, chunk);
          return PartFileWriter::StagedChunk{sums.staged(i, chunk), sum};
        });
        continue;
      }
      part.write(name, b.type, b.slab.count, b.data.get(),
                 [&](size_t chunk) { return sums.get(i, chunk); });
    }
    part.close();
  });
  if (!error.empty()) {
    std::error_code ignored;
    std::filesystem::remove(path, ignored);  // gives a full disk its space back
    throw Error(error);
  }
  abort_at("save_durable", save.world_rank, "with its part durable");
}

void write_master(const PendingSave& save) {
  struct Dataset {
    DType type = DType::f32;
    std::vector<int64_t> shape;
    std::vector<VirtualSource> sources;
  };
  std::vector<std::string> order;
  std::map<std::string, Dataset> datasets;
  for (size_t r = 0; r < save.manifest.size(); ++r) {
    std::istringstream lines(save.manifest[r]);
    std::string line;
    while (std::getline(lines, line)) {
      std::istringstream in(line);
      std::string name, source;
      int f64 = 0;
      size_t rank = 0;
      in >> name >> source >> f64 >> rank;
      std::vector<int64_t> shape(rank), start(rank), count(rank);
      for (auto* v : {&shape, &start, &count})
        for (int64_t& x : *v) in >> x;
      if (!in)
        throw Error("checkpoint '" + save.path + "': a garbled block list from rank " +
                    std::to_string(r));
      if (datasets.count(name) == 0) order.push_back(name);
      Dataset& d = datasets[name];
      d.type = f64 != 0 ? DType::f64 : DType::f32;
      d.shape = shape;
      const std::string part =
          std::filesystem::path(save.part_path(static_cast<int>(r))).filename().string();
      d.sources.push_back({part, source, start, count});
    }
  }
  const std::string temporary = save.path + ".tmp-" + std::to_string(::getpid());
  const std::string error = error_message_of([&] {
    Hdf5Writer w(temporary, MPI_COMM_NULL);
    write_attributes(w, save.meta, save.layout, save.part_prefix, save.world_size);
    w.group("/model");
    if (save.has_optimizer) {
      w.group("/optimizer");
      w.group("/optimizer/exp_avg");
      w.group("/optimizer/exp_avg_sq");
    }
    w.group("/state");
    w.attribute("/state", "step", save.meta.step);
    if (save.has_caches) w.group("/state/cache");
    for (const std::string& name : order) {
      const Dataset& d = datasets[name];
      w.virtual_dataset(name, d.type, d.shape, d.sources);
    }
    w.close();
    fsync_file(temporary);
  });
  if (!error.empty()) {
    std::error_code ignored;
    std::filesystem::remove(temporary, ignored);
    throw Error(error);
  }
  abort_at("save_master", save.world_rank, "with the checkpoint written under its temporary name");
  durable_rename(temporary, save.path);
}

void save_checkpoint(const std::string& path, const CheckpointContents& contents, const Topology& t,
                     Ops& ops) {
  std::unique_ptr<PendingSave> save = begin_save(path, contents, t, ops);
  const std::string part_error = error_message_of([&] { write_part(*save); });
  const std::string agreed =
      error_message_of([&] { throw_if_any_rank_failed(*t.world, part_error); });
  if (!agreed.empty()) {
    std::error_code ignored;
    std::filesystem::remove(save->part_path(t.world_rank), ignored);
    throw CollectiveError(agreed);  // every rank has it: printed once
  }
  std::string error;
  if (t.world_rank == 0) error = error_message_of([&] { write_master(*save); });
  if (!error.empty()) {
    std::error_code ignored;
    for (int r = 0; r < save->world_size; ++r) std::filesystem::remove(save->part_path(r), ignored);
  }
  throw_if_any_rank_failed(*t.world, error);  // also the barrier: the checkpoint is in place
}

}  // namespace tls
