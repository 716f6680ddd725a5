// tls_dist: train, evaluate and sample Transformer-LS language models over MPI.
// Every error reaches here as a tls::Error: each rank that holds one prints it on one line
// (prefixed with its rank in a multi-rank job) and the job ends non-zero. An error found by
// every rank alike (a bad option) is printed once. A rank failing alone aborts the job, so no
// other rank waits forever in a collective.
#include <mpi.h>

#include <cstdio>
#include <exception>
#include <string>

#include "kernels/cpu/blas_core.h"
#include "kernels/error.h"
#include "parallel/mpi_comm.h"
#include "runtime/commands.h"

namespace {

int world_rank() {
  int rank = 0;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  return rank;
}

int world_size() {
  int size = 1;
  MPI_Comm_size(MPI_COMM_WORLD, &size);
  return size;
}

// Collective: agrees on whether any rank failed to parse/validate, prints each distinct failure
// once. Returns true if the job must stop.
bool any_rank_failed(const std::string& message) {
  int mine = message.empty() ? 0 : 1, any = 0, all = 0;
  MPI_Allreduce(&mine, &any, 1, MPI_INT, MPI_MAX, MPI_COMM_WORLD);
  MPI_Allreduce(&mine, &all, 1, MPI_INT, MPI_MIN, MPI_COMM_WORLD);
  if (!any) return false;
  if (all) {
    if (world_rank() == 0) std::fprintf(stderr, "tls_dist: error: %s\n", message.c_str());
  } else if (mine) {
    std::fprintf(stderr, "tls_dist: error on rank %d: %s\n", world_rank(), message.c_str());
  }
  return true;
}

}  // namespace

int main(int argc, char** argv) {
  // Before MPI starts: this may re-execute the program (kernels/cpu/blas_core.h).
  tls::cpu::ensure_fitting_blas_core(argv);
  tls::mpi_initialize(&argc, &argv);
  tls::RunOptions options;
  std::string error;
  try {
    options = tls::parse_options(argc, argv);
  } catch (const std::exception& e) {
    error = e.what();
  }
  if (any_rank_failed(error)) return 2;
  if (options.command == tls::Command::help) {
    if (world_rank() == 0) std::printf("%s", options.help_text.c_str());
    return 0;
  }
  try {
    switch (options.command) {
      case tls::Command::train:
        return tls::run_train(options);
      case tls::Command::eval:
        return tls::run_eval(options);
      case tls::Command::generate:
        return tls::run_generate(options);
      case tls::Command::inspect:
        return tls::run_inspect(options);
      case tls::Command::help:
        break;
    }
  } catch (const tls::CollectiveError& e) {
    if (world_rank() == 0) std::fprintf(stderr, "tls_dist: error: %s\n", e.what());
    return 1;
  } catch (const std::exception& e) {
    if (world_size() == 1) {
      std::fprintf(stderr, "tls_dist: error: %s\n", e.what());
      return 1;
    }
    // Other ranks may be waiting in a collective: end the whole job.
    std::fprintf(stderr, "tls_dist: error on rank %d: %s\n", world_rank(), e.what());
    std::fflush(stderr);
    MPI_Abort(MPI_COMM_WORLD, 1);
  }
  return 0;
}
