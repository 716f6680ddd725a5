// Prints what kernels/cpu/blas_core.h reports after main()'s start-up check, and the arguments
// it received (to show a re-execution keeps them). Spawned by cpu_blas_core_test.
#include <cstdio>

#include "kernels/cpu/blas_core.h"

int main(int argc, char** argv) {
  tls::cpu::ensure_fitting_blas_core(argv);
  std::printf("core %s\n", tls::cpu::blas_core_name().c_str());
  std::printf("narrower %d\n", tls::cpu::blas_core_is_narrower_than_cpu() ? 1 : 0);
  std::printf("description %s\n", tls::cpu::blas_core_description().c_str());
  std::printf("args");
  for (int i = 1; i < argc; ++i) std::printf(" %s", argv[i]);
  std::printf("\n");
  return 0;
}
