// Checkpoint throughput (docs/DESIGN.md section 5) at the world size it is launched with, for a
// full training state: parameters, AdamW moments and the carried caches (default: 4 layers,
// d_model 1024, d_inner 4096, M = 32768, batch 1: about 1.25 GB of float32). The model is
// tensor-parallel over the whole world when its heads divide, else data parallel.
//
// Measured, each the best of --reps (after one untimed save: a run saves many times, and only its
// first save allocates the host copy):
//   write      the background write of a save: from the first rank's return from start() (its
//              state copied to host memory) to the last rank's end of wait(): part files,
//              checkpoint, checkpoint_last.h5, all fsynced (the ranks' clocks are taken to be
//              one: run it on one host);
//   sync save  start() + wait(), what a save costs when training waits for it;
//   prune      deleting the previous checkpoint and its parts (--keep-last 1), which the saves
//              above leave to this separate, timed step: it is housekeeping after the save is
//              complete (on a file system that discards freed blocks it takes about as long as
//              the master file's write and both fsyncs together) and plain writes delete nothing;
//   plain      every writing rank writes the same bytes it writes in the save with write() +
//              fsync to a file of its own (created, as each part is);
//   read       load_checkpoint of the whole state, each rank its blocks, checksums verified (may
//              come from the page cache);
//   blocked    a background save as training makes it: start(), then training steps until the
//              save is complete, each a 20 ms sleep (a forward and backward that leave the host
//              alone, as on a GPU), the wait for the save's copy of the parameters and moments,
//              a real AdamW update of them, the one small allreduce a training step makes anyway
//              (which carries the save's progress) and poll(); the time spent inside start(), the
//              waits and the polls is what the training steps lose (and, apart, the slowest
//              rank's time inside start());
// Before every timed step, sync() commits what the previous one left (dirty pages, deleted files'
// freed blocks), so neither the plain write nor the save pays for the other's leftovers; plain
// write and save alternate, so drift of the page cache hits both.
// Prints a markdown table on rank 0 (--header: the heading lines too). Usage:
//   mpiexec -n N checkpoint_bench [--dir D] [--layers L] [--d-model D] [--d-inner F]
//                                 [--mem-len M] [--reps R] [--header]
#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <string>
#include <thread>

#include "checkpoint/background_save.h"
#include "checkpoint/checkpoint_dir.h"
#include "checkpoint/checkpoint_reader.h"
#include "kernels/cpu/blas_core.h"
#include "kernels/error.h"
#include "parallel/mpi_comm.h"

using namespace tls;

namespace {

double now() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

// Seconds taken by f() on the slowest rank (sync() and a barrier before, a barrier after).
template <class F>
double timed(const Topology& t, F f) {
  ::sync();
  t.world->barrier();
  const double start = now();
  f();
  t.world->barrier();
  return t.world->allreduce_max(now() - start);
}

// A run of bytes a rank writes.
struct Span {
  const char* data = nullptr;
  size_t bytes = 0;
};

// Writes the spans to `path` with write(), then fsync().
void plain_write(const std::string& path, const std::vector<Span>& spans) {
  const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
  if (fd < 0) throw Error("cannot create " + path);
  for (const Span& s : spans) {
    const char* p = s.data;
    size_t left = s.bytes;
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
  cfg.mem_len = cfg.tokens_per_sample = 32768;
  int reps = 3;
  bool header = false;
  for (int i = 1; i < argc; ++i) {
    const std::string flag = argv[i];
    const bool has_value = i + 1 < argc;
    if (flag == "--header") {
      header = true;
    } else if (flag == "--dir" && has_value) {
      dir = argv[++i];
    } else if (flag == "--layers" && has_value) {
      cfg.n_layer = std::atoll(argv[++i]);
    } else if (flag == "--d-model" && has_value) {
      cfg.d_model = std::atoll(argv[++i]);
    } else if (flag == "--d-inner" && has_value) {
      cfg.d_inner = std::atoll(argv[++i]);
    } else if (flag == "--mem-len" && has_value) {
      cfg.mem_len = cfg.tokens_per_sample = std::atoll(argv[++i]);
    } else if (flag == "--reps" && has_value) {
      reps = std::max(1, std::atoi(argv[++i]));
    } else {
      std::fprintf(stderr, "checkpoint_bench: unknown option or missing value: %s\n", flag.c_str());
      return 2;
    }
  }
  try {
    int world = 1;
    MPI_Comm_size(MPI_COMM_WORLD, &world);
    const int tp = cfg.n_head % world == 0 && cfg.d_inner % world == 0 ? world : 1;
    Topology t = make_mpi_topology(tp, 1);
    auto ops = make_cpu_ops();
    TransformerLSModel model(*ops, cfg, DType::f32, t);
    AdamW optimizer(*ops, model.parameters(), {});
    TrainSettings settings;
    settings.batch_size = t.layout.dp;
    ModelState state = model.initial_state(1);
    CheckpointContents saved = checkpoint_contents(model, &optimizer, &state, 1, settings);
    double stored = 0, mine = 0;  // bytes in the checkpoint; bytes this rank writes
    std::vector<Span> my_spans;   // what this rank writes in a save, for the plain baseline
    for (size_t i = 0; i < saved.params.size(); ++i) {
      Parameter* p = saved.params[i];
      const double salt = 0.001 * static_cast<double>(p->name.size());
      ops->fill(p->value, salt);
      ops->fill(optimizer.exp_avg()[i], 2 * salt);
      ops->fill(optimizer.exp_avg_sq()[i], 3 * salt);
      double n = 4;
      for (int64_t d : p->full_shape) n *= static_cast<double>(d);
      stored += 3 * n;
      if (t.writes_parameter(p->tp_sharded())) {
        mine += 3.0 * static_cast<double>(p->value.bytes());
        for (const Tensor* x : {&p->value, &optimizer.exp_avg()[i], &optimizer.exp_avg_sq()[i]})
          my_spans.push_back({static_cast<const char*>(x->raw()), x->bytes()});
      }
    }
    for (Tensor& cache : state.caches) {
      ops->fill(cache, 0.5);
      stored += static_cast<double>(cache.bytes()) * t.layout.dp * t.layout.sp;
      // Each tp rank writes its share of the memory rows (checkpoint_writer.cpp's copy_blocks).
      const int64_t m = cache.dim(1), tp = t.layout.tp;
      const int64_t lo = m * t.tp_rank / tp, hi = m * (t.tp_rank + 1) / tp;
      const size_t row = static_cast<size_t>(cache.dim(2)) * dtype_size(cache.dtype());
      for (int64_t b = 0; b < cache.dim(0); ++b) {
        const char* first =
            static_cast<const char*>(cache.raw()) + static_cast<size_t>(b * m + lo) * row;
        my_spans.push_back({first, static_cast<size_t>(hi - lo) * row});
        mine += static_cast<double>(hi - lo) * static_cast<double>(row);
      }
    }
    const std::string save_dir = dir + "/checkpoint_bench";
    const std::string plain = dir + "/checkpoint_bench_plain." + std::to_string(t.world_rank);
    double best_save = 1e30, best_write = 1e30, best_read = 1e30, best_plain = 1e30,
           best_blocked = 1e30, best_prune = 1e30, best_in_start = 0;
    double background = 0;
    int polls = 0;
    BackgroundSaver saver(t);
    // A run saves many times: the first save allocates the host copy, later ones reuse it.
    saved.step = 0;
    saver.start(save_dir, 0, saved, *ops);
    saver.wait();
    // Rank 0 deletes all but the newest checkpoint, as --keep-last 1 would after a save.
    auto prune = [&] {
      const double seconds = timed(t, [&] {
        if (t.world_rank == 0) prune_checkpoints(save_dir, 1);
      });
      best_prune = std::min(best_prune, seconds);
    };
    for (int r = 0; r < reps; ++r) {
      best_plain = std::min(best_plain, timed(t, [&] { plain_write(plain, my_spans); }));
      std::filesystem::remove(plain);
      saved.step = 2 * r + 1;
      double first = 0, end = 0;
      best_save = std::min(best_save, timed(t, [&] {
                             saver.start(save_dir, 0, saved, *ops);
                             first = now();
                             saver.wait();
                             end = now();
                           }));
      // From the first rank's start of writing to the last rank's end (one host: one clock).
      best_write =
          std::min(best_write, t.world->allreduce_max(end) + t.world->allreduce_max(-first));
      prune();
      CheckpointContents into = checkpoint_contents(model, &optimizer, &state, 0, settings);
      best_read = std::min(best_read, timed(t, [&] {
                             load_checkpoint(last_checkpoint_path(save_dir), into, t, *ops);
                           }));
      // As the training loop saves: start, then a poll after every step.
      saved.step = 2 * r + 2;
      ::sync();
      t.world->barrier();
      const double begin = now();
      double blocked = 0;
      double start = now();
      saver.start(save_dir, 0, saved, *ops);
      blocked += now() - start;
      const double copying = t.world->allreduce_max(blocked);  // the host copy, mostly
      int n = 0;
      int64_t update = 0;
      for (bool done = false; !done; ++n) {
        std::this_thread::sleep_for(std::chrono::milliseconds(20));
        // The step's update changes the parameters and moments once the save has copied them.
        start = now();
        saver.wait_for_snapshot();
        blocked += now() - start;
        optimizer.step(++update);
        // The allreduce a training step makes anyway (the stop signals, train_command.cpp),
        // carrying every rank's progress of the save; it also keeps the ranks in step.
        const BackgroundSaver::Progress summed = saver.summed_progress();
        start = now();
        done = !saver.poll(summed).empty();
        blocked += now() - start;
      }
      const double total = now() - begin;
      saver.wait();
      blocked = t.world->allreduce_max(blocked);
      if (blocked < best_blocked) {
        best_blocked = blocked;
        best_in_start = copying;
        background = t.world->allreduce_max(total);
        polls = n;
      } else {
        t.world->allreduce_max(total);
      }
      prune();
    }
    const double plain_bytes = t.world->allreduce_sum(mine);
    if (t.world_rank == 0) {
      const double mb = stored / 1e6;
      if (header) {
        std::printf(
            "\ncheckpoint_bench: state of %.1f MB (float32 parameters, AdamW moments and caches; "
            "%d layers, d_model %lld, d_inner %lld, M %lld), best of %d\n\n",
            mb, static_cast<int>(cfg.n_layer), static_cast<long long>(cfg.d_model),
            static_cast<long long>(cfg.d_inner), static_cast<long long>(cfg.mem_len), reps);
        std::printf(
            "| ranks | layout | write (s) | write MB/s | plain write+fsync MB/s | write / plain | "
            "read MB/s | blocked per save (s) | of it in start() (s) | sync save (s) | blocked / "
            "sync save | save under "
            "training (s, polls) | prune (s) "
            "|\n|---|---|---|---|---|---|---|---|---|---|---|---|---|\n");
      }
      std::printf(
          "| %d | tp %d dp %d | %.3f | %.0f | %.0f | **%.2f** | %.0f | %.3f | %.3f | %.3f | "
          "**%.3f** | "
          "%.2f, %d | %.3f |",
          world, t.layout.tp, t.layout.dp, best_write, mb / best_write,
          plain_bytes / 1e6 / best_plain, (mb / best_write) / (plain_bytes / 1e6 / best_plain),
          mb / best_read, best_blocked, best_in_start, best_save, best_blocked / best_save,
          background, polls, best_prune);
      std::printf("\n");
      std::fflush(stdout);
    }
    t.world->barrier();
    if (t.world_rank == 0) std::filesystem::remove_all(save_dir);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "checkpoint_bench: %s\n", e.what());
    return 1;
  }
  return 0;
}
