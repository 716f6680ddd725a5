// Helpers shared by the CUDA kernels and their host wrappers: status checks that turn every
// failed CUDA / cuBLAS call into a tls::Error naming the call, argument checks for device
// tensors (the CUDA twin of kernels/cpu/dispatch.h), dispatch on float / double, and launch
// geometry. Host code only; device helpers live in device_util.cuh.
#pragma once

#include <cublas_v2.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>
#include <memory>
#include <string>

#include "runtime/error.h"
#include "runtime/tensor.h"

namespace tls::cuda {

[[noreturn]] inline void fail(const char* op, const std::string& message) {
  throw Error(std::string(op) + ": " + message);
}

inline void check(cudaError_t status, const char* call) {
  if (status != cudaSuccess)
    throw Error(std::string("CUDA call ") + call + " failed: " + cudaGetErrorName(status) + " (" +
                cudaGetErrorString(status) + ")");
}

inline void check_cublas(cublasStatus_t status, const char* call) {
  if (status != CUBLAS_STATUS_SUCCESS)
    throw Error(std::string("cuBLAS call ") + call + " failed: " + cublasGetStatusName(status) +
                " (" + cublasGetStatusString(status) + ")");
}

// "name [2, 3] float32", for error messages.
inline std::string describe(const char* name, const Tensor& t) {
  if (!t.defined()) return std::string(name) + " (undefined)";
  return std::string(name) + " " + t.shape_string() + " " + dtype_name(t.dtype());
}

inline void check_dev(const char* op, const char* name, const Tensor& t) {
  if (!t.defined()) fail(op, std::string(name) + " is an undefined tensor");
  if (t.device() != Device::cuda) fail(op, std::string(name) + " is not a CUDA device tensor");
}

inline void check_float(const char* op, const char* name, const Tensor& t) {
  check_dev(op, name, t);
  if (t.dtype() != DType::f32 && t.dtype() != DType::f64)
    fail(op, "expected a float32 or float64 tensor, got " + describe(name, t));
}

inline void check_i32(const char* op, const char* name, const Tensor& t) {
  check_dev(op, name, t);
  if (t.dtype() != DType::i32) fail(op, "expected an int32 tensor, got " + describe(name, t));
}

// b is a device tensor with a's dtype.
inline void check_like(const char* op, const char* an, const Tensor& a, const char* bn,
                       const Tensor& b) {
  check_dev(op, bn, b);
  if (a.dtype() != b.dtype())
    fail(op, "dtype mismatch: " + describe(an, a) + " vs " + describe(bn, b));
}

inline void check_same(const char* op, const char* an, const Tensor& a, const char* bn,
                       const Tensor& b) {
  check_like(op, an, a, bn, b);
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

template <class T> T* ptr_or_null(const Tensor& t) { return t.defined() ? t.data<T>() : nullptr; }

constexpr int kThreads = 256;

// Blocks for a grid-stride loop over n elements (at least one, capped well below the limit).
inline unsigned blocks_for(int64_t n, int threads = kThreads) {
  const int64_t b = (n + threads - 1) / threads;
  return static_cast<unsigned>(std::clamp<int64_t>(b, 1, int64_t{1} << 20));
}

// The process-wide compute stream of a device (non-blocking, created on first use); every
// CudaOps and NcclComm of that device orders its work on it, and device memory is allocated and
// freed on it (stream-ordered allocator).
cudaStream_t compute_stream(int device);

// Stream-ordered device allocation; the Storage frees on the same stream.
std::shared_ptr<Storage> device_alloc(int device, size_t bytes);

}  // namespace tls::cuda

#define TLS_CUDA_CHECK(call) ::tls::cuda::check((call), #call)
#define TLS_CUBLAS_CHECK(call) ::tls::cuda::check_cublas((call), #call)
// After a kernel launch: launch-configuration errors surface here with the kernel's name.
#define TLS_CUDA_LAUNCHED(name) ::tls::cuda::check(cudaGetLastError(), "launch of " name)
