// libFuzzer target: the checkpoint loader (checkpoint/checkpoint_reader.h) on mutated HDF5 files.
//
// The input is the whole file. It is written to a temporary file, then read_checkpoint_info
// reads its metadata and, when the stored hyperparameters describe a small valid model,
// load_checkpoint loads it into a matching single-process model (Topology::single(), CPU ops),
// once in full (float32, with AdamW moments and caches) and once weights-only (float64). Seeds:
// small checkpoints written by tls_dist (tests/fuzz/corpus/checkpoint_fuzz/).
//
// The contract: tls::Error (a refusal) is expected. Any other exception, a crash, a hang, a
// sanitizer report or an HDF5 identifier left open after the calls is a bug.
#include <hdf5.h>
#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <fstream>
#include <map>
#include <memory>
#include <string>
#include <typeinfo>

#include "checkpoint/checkpoint_contents.h"
#include "checkpoint/checkpoint_reader.h"
#include "checkpoint/golden.h"
#include "kernels/error.h"
#include "kernels/ops.h"
#include "layers/model.h"
#include "training/optimizer.h"

namespace {

std::string file_path() {
  static const std::string path = "/tmp/tls_checkpoint_fuzz_" + std::to_string(getpid()) + ".h5";
  return path;
}

// TLS_FUZZ_VERBOSE=1 prints each refusal and each successful load (to check the seeds).
bool verbose() {
  static const bool on = std::getenv("TLS_FUZZ_VERBOSE") != nullptr;
  return on;
}

tls::Ops& cpu_ops() {
  static std::unique_ptr<tls::Ops> ops = tls::make_cpu_ops();
  return *ops;
}

// Whether a model with these hyperparameters is valid and small enough to build per input.
bool small_valid_model(const tls::ModelConfig& c) {
  try {
    c.validate();
  } catch (const tls::Error&) {
    return false;
  }
  return c.vocab_size == 256 && c.n_layer <= 4 && c.d_model <= 128 && c.n_head <= 16 &&
         c.d_inner <= 512 && c.tokens_per_sample <= 256 && c.mem_len <= 256 && c.chunk_rank <= 8;
}

// One model (with optimizer and caches) per distinct config, built on first use.
struct Run {
  Run(const tls::ModelConfig& cfg, tls::DType dtype, int64_t batch)
      : model(cpu_ops(), cfg, dtype),
        optimizer(cpu_ops(), model.parameters(), {}),
        state(model.initial_state(batch)) {}
  tls::TransformerLSModel model;
  tls::AdamW optimizer;
  tls::ModelState state;
};

Run& run_for(const tls::ModelConfig& cfg, tls::DType dtype, int64_t batch) {
  static std::map<std::string, std::unique_ptr<Run>> runs;
  std::string key =
      tls::describe(cfg) + (dtype == tls::DType::f64 ? " f64 " : " f32 ") + std::to_string(batch);
  auto it = runs.find(key);
  if (it == runs.end()) {
    if (runs.size() >= 16) runs.clear();  // bounded memory across many distinct configs
    it = runs.emplace(key, std::make_unique<Run>(cfg, dtype, batch)).first;
  }
  return *it->second;
}

void load_into(const std::string& path, const tls::CheckpointInfo& info, tls::DType dtype,
               const tls::LoadOptions& options) {
  tls::ModelConfig cfg = info.config;
  const int64_t batch =
      info.has_training && info.training.batch_size >= 1 && info.training.batch_size <= 8
          ? info.training.batch_size
          : 2;
  Run& run = run_for(cfg, dtype, batch);
  tls::TrainSettings settings = info.has_training ? info.training : tls::TrainSettings{};
  settings.batch_size = batch;
  tls::CheckpointContents c =
      tls::checkpoint_contents(run.model, &run.optimizer, &run.state, 0, settings);
  tls::load_checkpoint(path, c, tls::Topology::single(), cpu_ops(), options);
  if (verbose()) std::fprintf(stderr, "loaded (%s)\n", options.weights_only ? "weights" : "full");
}

void fail(const char* what, const std::string& detail) {
  std::fprintf(stderr, "checkpoint_fuzz: %s: %s\n", what, detail.c_str());
  std::abort();
}

void check_one_line(const tls::Error& e) {
  const std::string message = e.what();
  if (verbose()) std::fprintf(stderr, "refused: %s\n", message.c_str());
  if (message.empty() || message.find('\n') != std::string::npos)
    fail("tls::Error not one line", message);
}

}  // namespace

// HDF5 1.10 leaks some of the metadata it decoded when a damaged object header or heap makes a
// call fail (e.g. H5Oopen -> H5O_protect -> H5C_protect on a mutated header: the cache entry
// is never freed, even after H5Fclose). That is inside libhdf5 and no check of ours can run
// before the decoding, so LeakSanitizer ignores allocations made by libhdf5. Identifiers our
// reader forgets to close are still caught: H5Fget_obj_count below must be 0 after each input.
extern "C" const char* __lsan_default_suppressions() { return "leak:libhdf5\n"; }
extern "C" const char* __lsan_default_options() { return "print_suppressions=0"; }

// A damaged object header can make HDF5 itself ask malloc for an impossible size (e.g.
// 0x48ffffffffffffff in H5C_protect under H5Fopen, the seed regress_hdf5_huge_header.h5). glibc
// returns NULL, HDF5 fails the call and the reader refuses the file ("memory allocation failed
// for on disk image buffer"); ASan would abort instead, so it is told to return NULL as well.
// Large but possible allocations are still reported (libFuzzer's -malloc_limit_mb).
extern "C" const char* __asan_default_options() { return "allocator_may_return_null=1"; }

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  H5open();
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string path = file_path();
  {
    std::ofstream out(path, std::ios::binary | std::ios::trunc);
    out.write(reinterpret_cast<const char*>(data), static_cast<std::streamsize>(size));
  }
  try {
    tls::CheckpointInfo info = tls::read_checkpoint_info(path);
    (void)tls::describe(info.config);
    if (small_valid_model(info.config)) {
      try {
        load_into(path, info, tls::DType::f32, {});
      } catch (const tls::Error& e) {
        check_one_line(e);
      }
      tls::LoadOptions weights;
      weights.weights_only = true;
      load_into(path, info, tls::DType::f64, weights);
    }
  } catch (const tls::Error& e) {
    check_one_line(e);
  } catch (const std::exception& e) {
    fail(typeid(e).name(), e.what());
  } catch (...) {
    fail("exception of unknown type", "");
  }
  // Every HDF5 identifier the reader opened must be closed again.
  const ssize_t open_objects = H5Fget_obj_count(H5F_OBJ_ALL, H5F_OBJ_ALL);
  if (open_objects != 0) fail("HDF5 identifiers left open", std::to_string(open_objects));
  return 0;
}
