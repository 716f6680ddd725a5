// The yardstick of the CPU benches: OpenBLAS's own multithreaded sgemm at n^3, with as many
// threads as the backend uses, measured in the calling process: the fastest of `reps` calls
// (other work on a shared machine only ever slows a call down).
#pragma once

#include <cblas.h>
#include <omp.h>

#include <chrono>
#include <cstdint>
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

// OpenBLAS's multithreaded sgemm at n^3 sustained over a window: calls back to back (after one
// untimed call) until `seconds` have passed, at least one; FLOP/s over the whole window. A
// training step is timed over its whole length, during which the cores cannot stay at the clock
// of a single short burst; comparing it with sgemm sustained over as long a window compares like
// with like on a machine whose speed drifts.
inline double sustained_sgemm_rate(int n, double seconds) {
  cpu::BlasThreads threads(omp_get_max_threads());
  std::vector<float> a(static_cast<size_t>(n) * n, 0.5f), b(a.size(), 0.25f), c(a.size(), 0.0f);
  for (size_t i = 0; i < a.size(); ++i) a[i] = static_cast<float>((i * 7919) % 1000) / 1000.0f;
  auto call = [&] {
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, n, n, n, 1.0f, a.data(), n, b.data(), n,
                0.0f, c.data(), n);
  };
  call();
  const auto t0 = std::chrono::steady_clock::now();
  int64_t calls = 0;
  do {
    call();
    ++calls;
  } while (seconds_since(t0) < seconds);
  return 2.0 * n * n * static_cast<double>(n) * static_cast<double>(calls) / seconds_since(t0);
}

}  // namespace tls::bench
