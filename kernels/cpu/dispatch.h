// Helpers of the CPU kernels: the shared argument checks (kernels/op_checks.h) bound to host
// tensors, and the size above which a loop is worth an OpenMP team.
#pragma once

#include <cstdint>
#include <string>

#include "kernels/op_checks.h"

namespace tls::cpu {

// Loops touching fewer elements than this run on one thread.
constexpr int64_t kParallelMin = 1 << 15;

using op_checks::check_numel;
using op_checks::describe;
using op_checks::dispatch_float;
using op_checks::fail;

inline void check_cpu(const char* op, const char* name, const Tensor& t) {
  op_checks::check_on<Device::cpu>(op, name, t);
}
inline void check_float(const char* op, const char* name, const Tensor& t) {
  op_checks::check_float<Device::cpu>(op, name, t);
}
inline void check_i32(const char* op, const char* name, const Tensor& t) {
  op_checks::check_i32<Device::cpu>(op, name, t);
}
inline void check_like(const char* op, const char* an, const Tensor& a, const char* bn,
                       const Tensor& b) {
  op_checks::check_like<Device::cpu>(op, an, a, bn, b);
}
inline void check_same(const char* op, const char* an, const Tensor& a, const char* bn,
                       const Tensor& b) {
  op_checks::check_same<Device::cpu>(op, an, a, bn, b);
}

}  // namespace tls::cpu
