// The yardstick of the CPU benches: OpenBLAS's own multithreaded sgemm at n^3, with as many
// threads as the backend uses, measured in the calling process: the fastest of `reps` calls
// (other work on a shared machine only ever slows a call down).
#pragma once

#include <cblas.h>
#include <omp.h>

#include <vector>

#include "bench/timing.h"
#include "kernels/cpu/blas_tiles.h"

namespace tls::bench {

inline double sgemm_rate(int n, int reps) {
  cpu::BlasThreads threads(omp_get_max_threads());
  std::vector<float> a(static_cast<size_t>(n) * n, 0.5f), b(a.size(), 0.25f), c(a.size(), 0.0f);
  for (size_t i = 0; i < a.size(); ++i) a[i] = static_cast<float>((i * 7919) % 1000) / 1000.0f;
  const double fastest = fastest_seconds(reps, [&] {
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, n, n, n, 1.0f, a.data(), n, b.data(), n,
                0.0f, c.data(), n);
  });
  return 2.0 * n * n * static_cast<double>(n) / fastest;
}

}  // namespace tls::bench
