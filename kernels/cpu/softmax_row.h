// The row softmax both attention kernels apply to a tile of scores in place.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>

#include "kernels/cpu/vector_exp.h"

namespace tls::cpu {

// row[0..n) <- softmax(row[0..n)), n >= 1; returns the row's log-sum-exp. exp runs in T
// (exp_shifted), the sum in double.
template <class T>
T softmax_in_place(T* row, int64_t n) {
  const T mx = *std::max_element(row, row + n);
  const double total = exp_shifted(row, n, mx);
  const T inv = static_cast<T>(1.0 / total);
  for (int64_t j = 0; j < n; ++j) row[j] *= inv;
  return static_cast<T>(mx + std::log(total));
}

}  // namespace tls::cpu
