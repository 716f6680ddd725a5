// Argument checks shared by every backend's kernels: cheap tests that throw tls::Error naming
// the op, the tensors and their shapes, templated on the device the backend runs on, plus the
// float/double dispatch and the GEMM shape rule. kernels/cpu/dispatch.h and
// kernels/cuda/common.h bind them to their device.
#pragma once

#include <climits>
#include <cstdint>
#include <string>

#include "runtime/error.h"
#include "runtime/tensor.h"

namespace tls::op_checks {

[[noreturn]] inline void fail(const char* op, const std::string& message) {
  throw Error(std::string(op) + ": " + message);
}

// "name [2, 3] float32", for error messages.
inline std::string describe(const char* name, const Tensor& t) {
  if (!t.defined()) return std::string(name) + " (undefined)";
  return std::string(name) + " " + t.shape_string() + " " + dtype_name(t.dtype());
}

template <Device D>
void check_on(const char* op, const char* name, const Tensor& t) {
  if (!t.defined()) fail(op, std::string(name) + " is an undefined tensor");
  if (t.device() != D)
    fail(op, std::string(name) + (D == Device::cpu ? " is not a host tensor" : " is not a CUDA device tensor"));
}

// Defined, on device D, float32 or float64.
template <Device D>
void check_float(const char* op, const char* name, const Tensor& t) {
  check_on<D>(op, name, t);
  if (t.dtype() != DType::f32 && t.dtype() != DType::f64)
    fail(op, "expected a float32 or float64 tensor, got " + describe(name, t));
}

template <Device D>
void check_i32(const char* op, const char* name, const Tensor& t) {
  check_on<D>(op, name, t);
  if (t.dtype() != DType::i32) fail(op, "expected an int32 tensor, got " + describe(name, t));
}

// b is on device D and has a's dtype.
template <Device D>
void check_like(const char* op, const char* an, const Tensor& a, const char* bn, const Tensor& b) {
  check_on<D>(op, bn, b);
  if (a.dtype() != b.dtype()) fail(op, "dtype mismatch: " + describe(an, a) + " vs " + describe(bn, b));
}

// b has a's dtype and exactly a's shape.
template <Device D>
void check_same(const char* op, const char* an, const Tensor& a, const char* bn, const Tensor& b) {
  check_like<D>(op, an, a, bn, b);
  if (!a.same_shape(b)) fail(op, "shape mismatch: " + describe(an, a) + " vs " + describe(bn, b));
}

inline void check_numel(const char* op, const char* name, const Tensor& t, int64_t n) {
  if (t.numel() != n) fail(op, "expected " + std::to_string(n) + " elements in " + describe(name, t));
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

// C = op(A) op(B) on 2-D views: op(A) is [m, k], op(B) is [k, n], C is [m, n]. Throws on a
// mismatch or a dimension beyond the int range of BLAS libraries.
struct GemmDims {
  int64_t m, n, k;
};

inline GemmDims gemm_dims(bool trans_a, bool trans_b, const Tensor& a, const Tensor& b, const Tensor& c) {
  auto matrix = [](const char* name, const Tensor& t, bool trans) {
    return std::string(name) + (trans ? "^T" : "") + " [" + std::to_string(t.matrix_rows()) + " x " +
           std::to_string(t.matrix_cols()) + "] (shape " + t.shape_string() + ")";
  };
  const GemmDims g{trans_a ? a.matrix_cols() : a.matrix_rows(), trans_b ? b.matrix_rows() : b.matrix_cols(),
                   trans_a ? a.matrix_rows() : a.matrix_cols()};
  const int64_t kb = trans_b ? b.matrix_cols() : b.matrix_rows();
  if (g.k != kb || c.matrix_rows() != g.m || c.matrix_cols() != g.n)
    fail("gemm", "shape mismatch: " + matrix("A", a, trans_a) + " times " + matrix("B", b, trans_b) +
                     " into " + matrix("C", c, false));
  for (int64_t v : {g.m, g.n, g.k, a.matrix_cols(), b.matrix_cols()})
    if (v > INT_MAX) fail("gemm", "a matrix dimension exceeds the BLAS int range");
  return g;
}

}  // namespace tls::op_checks
