// Helpers shared by the CPU kernels: dispatch on the floating element type (float / double),
// cheap argument checks that throw tls::Error naming the op and the shapes, and the size above
// which a loop is worth an OpenMP team.
#pragma once

#include <cstdint>
#include <string>

#include "runtime/error.h"
#include "runtime/tensor.h"

namespace tls::cpu {

// Loops touching fewer elements than this run on one thread.
constexpr int64_t kParallelMin = 1 << 15;

[[noreturn]] inline void fail(const char* op, const std::string& message) {
  throw Error(std::string(op) + ": " + message);
}

// "name [2, 3] float32", for error messages.
inline std::string describe(const char* name, const Tensor& t) {
  if (!t.defined()) return std::string(name) + " (undefined)";
  return std::string(name) + " " + t.shape_string() + " " + dtype_name(t.dtype());
}

inline void check_cpu(const char* op, const char* name, const Tensor& t) {
  if (!t.defined()) fail(op, std::string(name) + " is an undefined tensor");
  if (t.device() != Device::cpu) fail(op, std::string(name) + " is not a host tensor");
}

// Defined, on the host, float32 or float64.
inline void check_float(const char* op, const char* name, const Tensor& t) {
  check_cpu(op, name, t);
  if (t.dtype() != DType::f32 && t.dtype() != DType::f64)
    fail(op, "expected a float32 or float64 tensor, got " + describe(name, t));
}

inline void check_i32(const char* op, const char* name, const Tensor& t) {
  check_cpu(op, name, t);
  if (t.dtype() != DType::i32) fail(op, "expected an int32 tensor, got " + describe(name, t));
}

// b is on the host and has a's dtype.
inline void check_like(const char* op, const char* an, const Tensor& a, const char* bn,
                       const Tensor& b) {
  check_cpu(op, bn, b);
  if (a.dtype() != b.dtype())
    fail(op, "dtype mismatch: " + describe(an, a) + " vs " + describe(bn, b));
}

// b has a's dtype and exactly a's shape.
inline void check_same(const char* op, const char* an, const Tensor& a, const char* bn,
                       const Tensor& b) {
  check_like(op, an, a, bn, b);
  if (!a.same_shape(b)) fail(op, "shape mismatch: " + describe(an, a) + " vs " + describe(bn, b));
}

// b has a's dtype and n elements.
inline void check_numel(const char* op, const char* name, const Tensor& t, int64_t n) {
  if (t.numel() != n)
    fail(op, "expected " + std::to_string(n) + " elements in " + describe(name, t));
}

// Calls f(T{}) with T = float or double according to dtype.
template <class F>
decltype(auto) dispatch_float(const char* op, DType dtype, F&& f) {
  switch (dtype) {
    case DType::f32:
      return f(float{});
    case DType::f64:
      return f(double{});
    default:
      break;
  }
  fail(op, std::string("unsupported dtype ") + dtype_name(dtype));
}

}  // namespace tls::cpu
