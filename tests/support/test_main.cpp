// main() of the single-process suites: GoogleTest's, after making sure OpenBLAS runs kernels that
// fit the CPU (kernels/cpu/blas_core.h), as the programs do.
#include <gtest/gtest.h>

#include "kernels/cpu/blas_core.h"

int main(int argc, char** argv) {
  tls::cpu::ensure_fitting_blas_core(argv);
  ::testing::InitGoogleTest(&argc, argv);
  return RUN_ALL_TESTS();
}
