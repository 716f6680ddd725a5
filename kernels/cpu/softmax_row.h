// The row softmax both attention kernels apply to a tile of scores in place.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>

#include "kernels/cpu/vector_exp.h"

namespace tls::cpu {

// max(row[0..n)), n >= 1. Eight running maxima, so the compares do not wait on each other (a
// float max reduction is not vectorised without -ffinite-math-only; one chain of maxss is
// latency-bound at about 4 cycles per element).
template <class T>
T row_max(const T* row, int64_t n) {
  constexpr int kLanes = 8;
  T lane[kLanes];
  for (T& m : lane) m = row[0];
  int64_t j = 0;
  for (; j + kLanes <= n; j += kLanes)
    for (int k = 0; k < kLanes; ++k) lane[k] = row[j + k] > lane[k] ? row[j + k] : lane[k];
  T mx = lane[0];
  for (int k = 1; k < kLanes; ++k) mx = lane[k] > mx ? lane[k] : mx;
  for (; j < n; ++j) mx = row[j] > mx ? row[j] : mx;
  return mx;
}

// row[0..n) <- softmax(row[0..n)), n >= 1; returns the row's log-sum-exp. exp runs in T
// (exp_shifted), the sum in double.
template <class T>
T softmax_in_place(T* row, int64_t n) {
  const T mx = row_max(row, n);
  const double total = exp_shifted(row, n, mx);
  const T inv = static_cast<T>(1.0 / total);
  for (int64_t j = 0; j < n; ++j) row[j] *= inv;
  return static_cast<T>(mx + std::log(total));
}

}  // namespace tls::cpu
