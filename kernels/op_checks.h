// Argument checks shared by every backend's kernels: cheap tests that throw tls::Error naming
// the op, the tensors and their shapes, templated on the device the backend runs on, plus the
// float/double dispatch and the GEMM shape rule. kernels/cpu/dispatch.h and
// kernels/cuda/common.h bind them to their device.
#pragma once

#include <climits>
#include <cstdint>
#include <string>

#include "kernels/error.h"
#include "kernels/tensor.h"

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
    fail(op, std::string(name) +
                 (D == Device::cpu ? " is not a host tensor" : " is not a CUDA device tensor"));
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
  if (a.dtype() != b.dtype())
    fail(op, "dtype mismatch: " + describe(an, a) + " vs " + describe(bn, b));
}

// b has a's dtype and exactly a's shape.
template <Device D>
void check_same(const char* op, const char* an, const Tensor& a, const char* bn, const Tensor& b) {
  check_like<D>(op, an, a, bn, b);
  if (!a.same_shape(b)) fail(op, "shape mismatch: " + describe(an, a) + " vs " + describe(bn, b));
}

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

// LayerNorm's per-row statistics and per-feature parameters beside x: [rows] and [cols].
// Undefined optional gradients are skipped.
template <Device D>
void check_layernorm(const char* op, const Tensor& x, const Tensor& mean, const Tensor& rstd,
                     const Tensor& gamma, const Tensor& beta_or_dgamma,
                     const Tensor& dbeta = Tensor()) {
  check_float<D>(op, "x", x);
  const int64_t rows = x.matrix_rows(), cols = x.matrix_cols();
  auto need = [&](const char* name, const Tensor& t, int64_t n) {
    if (!t.defined()) return;
    check_like<D>(op, "x", x, name, t);
    check_numel(op, name, t, n);
  };
  need("mean", mean, rows);
  need("rstd", rstd, rows);
  need("gamma", gamma, cols);
  need("beta / dgamma", beta_or_dgamma, cols);
  need("dbeta", dbeta, cols);
}

// Geometry of compress_chunks (kernels/ops.h): x [B, G c, H dh], weights [B, G c, H_all r],
// out [B, G r, H dh], this call's heads h0 .. h0 + H - 1 of H_all.
struct CompressDims {
  int64_t batch, groups, c, r, heads, dh, cols, wcols, h0;
};

template <Device D>
CompressDims compress_dims(const char* op, const Tensor& out, const char* on, const Tensor& x,
                           const Tensor& w, int64_t c, int64_t r, int64_t heads, int64_t h0) {
  check_float<D>(op, "x", x);
  check_like<D>(op, "x", x, "weights", w);
  check_like<D>(op, "x", x, on, out);
  auto bad = [&](const std::string& why) {
    fail(op, why + ": " + describe("x", x) + ", " + describe("weights", w) + ", " +
                 describe(on, out) + ", chunk_size " + std::to_string(c) + ", chunk_rank " +
                 std::to_string(r) + ", n_head " + std::to_string(heads) + ", head_offset " +
                 std::to_string(h0));
  };
  if (c <= 0 || r <= 0 || heads <= 0 || h0 < 0) bad("bad geometry");
  if (x.rank() != 3 || w.rank() != 3 || out.rank() != 3) bad("expected 3-D tensors");
  const CompressDims d{x.dim(0),         x.dim(1) / c, c,        r, heads,
                       x.dim(2) / heads, x.dim(2),     w.dim(2), h0};
  if (x.dim(1) % c != 0 || x.dim(2) % heads != 0) bad("x is not [B, G*c, H*dh]");
  if (w.dim(0) != d.batch || w.dim(1) != x.dim(1) || d.wcols % r != 0 || (h0 + heads) * r > d.wcols)
    bad("weights are not [B, G*c, H_all*r] with H_all >= head_offset + n_head");
  if (out.dim(0) != d.batch || out.dim(1) != d.groups * r || out.dim(2) != d.cols)
    bad("out is not [B, G*r, H*dh]");
  return d;
}

// C = op(A) op(B) on 2-D views: op(A) is [m, k], op(B) is [k, n], C is [m, n]. Throws on a
// mismatch or a dimension beyond the int range of BLAS libraries.
struct GemmDims {
  int64_t m, n, k;
};

inline GemmDims gemm_dims(bool trans_a, bool trans_b, const Tensor& a, const Tensor& b,
                          const Tensor& c) {
  auto matrix = [](const char* name, const Tensor& t, bool trans) {
    return std::string(name) + (trans ? "^T" : "") + " [" + std::to_string(t.matrix_rows()) +
           " x " + std::to_string(t.matrix_cols()) + "] (shape " + t.shape_string() + ")";
  };
  const GemmDims g{trans_a ? a.matrix_cols() : a.matrix_rows(),
                   trans_b ? b.matrix_rows() : b.matrix_cols(),
                   trans_a ? a.matrix_rows() : a.matrix_cols()};
  const int64_t kb = trans_b ? b.matrix_cols() : b.matrix_rows();
  if (g.k != kb || c.matrix_rows() != g.m || c.matrix_cols() != g.n)
    fail("gemm", "shape mismatch: " + matrix("A", a, trans_a) + " times " +
                     matrix("B", b, trans_b) + " into " + matrix("C", c, false));
  for (int64_t v : {g.m, g.n, g.k, a.matrix_cols(), b.matrix_cols()})
    if (v > INT_MAX) fail("gemm", "a matrix dimension exceeds the BLAS int range");
  return g;
}

}  // namespace tls::op_checks
