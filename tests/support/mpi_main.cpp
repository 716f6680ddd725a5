// main() of the multi-rank suites (*_mpi_test.cpp): MPI is initialised before GoogleTest, every
// rank runs every test, only rank 0 prints, and the exit status is non-zero on every rank if
// any rank failed, so mpiexec and CTest see the failure. OpenBLAS gets kernels that fit the CPU
// first (kernels/cpu/blas_core.h).
#include <gtest/gtest.h>
#include <mpi.h>

#include "kernels/cpu/blas_core.h"
#include "parallel/mpi_comm.h"

int main(int argc, char** argv) {
  tls::cpu::ensure_fitting_blas_core(argv);
  tls::mpi_initialize(&argc, &argv);
  ::testing::InitGoogleTest(&argc, argv);
  int rank = 0;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  if (rank != 0) {
    auto& listeners = ::testing::UnitTest::GetInstance()->listeners();
    delete listeners.Release(listeners.default_result_printer());
  }
  int failed = RUN_ALL_TESTS() != 0 ? 1 : 0, any_failed = 0;
  MPI_Allreduce(&failed, &any_failed, 1, MPI_INT, MPI_MAX, MPI_COMM_WORLD);
  if (any_failed && rank == 0 && !failed) std::fprintf(stderr, "a test failed on another rank\n");
  return any_failed;
}
