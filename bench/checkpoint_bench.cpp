// Checkpoint write and read throughput (docs/DESIGN.md section 5) at the world size it is launched
// with, next to the rate of writing the same bytes with plain write() + fsync in the same run.
// The model (default: 4 layers, d_model 1024, d_inner 4096, about 240 MB of float32 parameters)
// is tensor-parallel over the whole world when its heads divide, else data parallel; each rank
// writes its hyperslabs collectively through parallel HDF5. The plain baseline has every writing
// rank write the bytes it holds to its own file. Reads follow writes, so they may come from the
// page cache. Prints a markdown table on rank 0. Usage:
//   mpiexec -n N checkpoint_bench [--dir D] [--layers L] [--d-model D] [--d-inner F] [--reps R]
#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <string>

#include "checkpoint/checkpoint_reader.h"
#include "checkpoint/checkpoint_writer.h"
#include "kernels/cpu/blas_core.h"
#include "parallel/mpi_comm.h"
#include "kernels/error.h"

using namespace tls;

namespace {

double now() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

// Seconds taken by f() on the slowest rank (barrier before and after).
template <class F>
double timed(const Topology& t, F f) {
  t.world->barrier();
  const double start = now();
  f();
  t.world->barrier();
  return t.world->allreduce_max(now() - start);
}

// Writes the tensors' bytes to `path` with write(), then fsync().
void plain_write(const std::string& path, const std::vector<const Tensor*>& tensors) {
  const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
  if (fd < 0) throw Error("cannot create " + path);
  for (const Tensor* x : tensors) {
    const char* p = static_cast<const char*>(x->raw());
    size_t left = x->bytes();
    while (left > 0) {
      const ssize_t n = ::write(fd, p, left);
      if (n <= 0) throw Error("write to " + path + " failed");
      p += n;
      left -= static_cast<size_t>(n);
    }
  }
  ::fsync(fd);
  ::close(fd);
}

}  // namespace

int main(int argc, char** argv) {
  tls::cpu::ensure_fitting_blas_core(argv);  // may re-execute: first
  mpi_initialize(&argc, &argv);
  std::string dir = std::filesystem::temp_directory_path().string();
  ModelConfig cfg;
  cfg.n_layer = 4;
  cfg.d_model = 1024;
  cfg.n_head = 16;
  cfg.d_inner = 4096;
  int reps = 3;
  for (int i = 1; i + 1 < argc; i += 2) {
    const std::string flag = argv[i];
    if (flag == "--dir")
      dir = argv[i + 1];
    else if (flag == "--layers")
      cfg.n_layer = std::atoll(argv[i + 1]);
    else if (flag == "--d-model")
      cfg.d_model = std::atoll(argv[i + 1]);
    else if (flag == "--d-inner")
      cfg.d_inner = std::atoll(argv[i + 1]);
    else if (flag == "--reps")
      reps = std::atoi(argv[i + 1]);
  }
  try {
    int world = 1;
    MPI_Comm_size(MPI_COMM_WORLD, &world);
    const int tp = cfg.n_head % world == 0 && cfg.d_inner % world == 0 ? world : 1;
    Topology t = make_mpi_topology(tp, 1);
    auto ops = make_cpu_ops();
    TransformerLSModel model(*ops, cfg, DType::f32, t);
    for (Parameter* p : model.parameters())
      ops->fill(p->value, 0.001 * static_cast<double>(p->name.size()));
    TrainSettings settings;
    CheckpointContents saved = checkpoint_contents(model, nullptr, nullptr, 1, settings);
    double stored = 0, mine = 0;  // bytes in the file; bytes this rank writes
    std::vector<const Tensor*> my_tensors;
    for (Parameter* p : model.parameters()) {
      double n = 4;
      for (int64_t d : p->full_shape) n *= static_cast<double>(d);
      stored += n;
      if (t.writes_parameter(p->tp_sharded())) {
        mine += static_cast<double>(p->value.bytes());
        my_tensors.push_back(&p->value);
      }
    }
    const std::string path = dir + "/checkpoint_bench.h5";
    const std::string plain = dir + "/checkpoint_bench_plain." + std::to_string(t.world_rank);
    double best_write = 1e30, best_read = 1e30, best_plain = 1e30;
    for (int r = 0; r < reps; ++r) {
      best_plain = std::min(best_plain, timed(t, [&] { plain_write(plain, my_tensors); }));
      best_write = std::min(best_write, timed(t, [&] { save_checkpoint(path, saved, t, *ops); }));
      CheckpointContents into = checkpoint_contents(model, nullptr, nullptr, 0, settings);
      LoadOptions weights;
      weights.weights_only = true;
      best_read =
          std::min(best_read, timed(t, [&] { load_checkpoint(path, into, t, *ops, weights); }));
    }
    const double plain_bytes = t.world->allreduce_sum(mine);
    if (t.world_rank == 0) {
      const double mb = stored / 1e6;
      std::printf(
          "\ncheckpoint of %.1f MB (float32 parameters; %d layers, d_model %lld, d_inner "
          "%lld), %d rank(s), layout tp %d sp 1 dp %d, best of %d\n\n",
          mb, static_cast<int>(cfg.n_layer), static_cast<long long>(cfg.d_model),
          static_cast<long long>(cfg.d_inner), world, t.layout.tp, t.layout.dp, reps);
      std::printf("| ranks | operation | seconds | MB/s |\n|---|---|---|---|\n");
      std::printf(
          "| %d | checkpoint write (parallel HDF5, Fletcher32, fsync, rename) | %.3f | %.0f |\n",
          world, best_write, mb / best_write);
      std::printf(
          "| %d | checkpoint read (each rank its hyperslabs, checksums verified) | %.3f | %.0f |\n",
          world, best_read, mb / best_read);
      std::printf(
          "| %d | plain write() + fsync of the same bytes (%.1f MB, a file per rank) | %.3f | %.0f "
          "|\n",
          world, plain_bytes / 1e6, best_plain, plain_bytes / 1e6 / best_plain);
    }
    std::filesystem::remove(plain);
    t.world->barrier();
    if (t.world_rank == 0) std::filesystem::remove(path);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "checkpoint_bench: %s\n", e.what());
    return 1;
  }
  return 0;
}
