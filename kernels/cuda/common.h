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

#include "kernels/op_checks.h"

namespace tls::cuda {

using op_checks::check_numel;
using op_checks::describe;
using op_checks::dispatch_float;
using op_checks::fail;

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

inline void check_dev(const char* op, const char* name, const Tensor& t) {
  op_checks::check_on<Device::cuda>(op, name, t);
}
inline void check_float(const char* op, const char* name, const Tensor& t) {
  op_checks::check_float<Device::cuda>(op, name, t);
}
inline void check_i32(const char* op, const char* name, const Tensor& t) {
  op_checks::check_i32<Device::cuda>(op, name, t);
}
inline void check_like(const char* op, const char* an, const Tensor& a, const char* bn,
                       const Tensor& b) {
  op_checks::check_like<Device::cuda>(op, an, a, bn, b);
}
inline void check_same(const char* op, const char* an, const Tensor& a, const char* bn,
                       const Tensor& b) {
  op_checks::check_same<Device::cuda>(op, an, a, bn, b);
}

template <class T>
T* ptr_or_null(const Tensor& t) {
  return t.defined() ? t.data<T>() : nullptr;
}

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
