#include "kernels/cpu/blas_tiles.h"

extern "C" {
int openblas_get_num_threads(void);
void openblas_set_num_threads(int);
}

namespace tls::cpu {

void use_calling_thread_blas() {
  if (openblas_get_num_threads() != 1) openblas_set_num_threads(1);
}

BlasThreads::BlasThreads(int threads) : previous_(openblas_get_num_threads()) {
  openblas_set_num_threads(threads);
}

BlasThreads::~BlasThreads() { openblas_set_num_threads(previous_); }

}  // namespace tls::cpu
