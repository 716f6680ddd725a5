// The CUDA emulator's stand-in for <cuda_runtime.h> (see tests/cuda_emulator/README.md): the
// part of the runtime API and of the device language that kernels/cuda uses, implemented on
// the host so that the CUDA backend's own sources run, unchanged but for their launch syntax,
// in tests on machines without a GPU. Device memory is host memory that is inaccessible to host
// code outside emulated device work; kernels run block by block, each CUDA thread a fiber that
// yields at __syncthreads and at warp shuffles.
#pragma once

#include <math.h>  // the C++ overloads in the global namespace, as CUDA device code sees them

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <source_location>
#include <tuple>
#include <type_traits>
#include <utility>

// ---- the device language: qualifiers become nothing (or host equivalents) --------------------
#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __launch_bounds__(...)
#define __align__(n) __attribute__((aligned(n)))  // allowed among decl-specifiers, as in CUDA
// A block's shared variables: blocks of one launch run one after another on the launching host
// thread, so one instance per host thread is one per running block.
#define __shared__ static thread_local

struct uint3 {
  unsigned x, y, z;
};
struct dim3 {
  unsigned x = 1, y = 1, z = 1;
  constexpr dim3(unsigned vx = 1, unsigned vy = 1, unsigned vz = 1) : x(vx), y(vy), z(vz) {}
};

extern thread_local uint3 threadIdx;
extern thread_local uint3 blockIdx;
extern thread_local dim3 blockDim;
extern thread_local dim3 gridDim;

void __syncthreads();

namespace tls_emu {
// The calling warp's `bits` of lane (this lane ^ lane_mask), or this lane's own where that
// lies outside its group of `width` lanes (every lane of the warp must call it).
uint64_t warp_xor_exchange(unsigned mask, uint64_t bits, int lane_mask, int width);
// The running block's dynamic shared memory.
unsigned char* dynamic_shared();
}  // namespace tls_emu

template <class T>
T __shfl_xor_sync(unsigned mask, T v, int lane_mask, int width = 32) {
  static_assert(sizeof(T) <= 8 && std::is_trivially_copyable_v<T>);
  uint64_t bits = 0;
  std::memcpy(&bits, &v, sizeof(T));
  bits = tls_emu::warp_xor_exchange(mask, bits, lane_mask, width);
  T out;
  std::memcpy(&out, &bits, sizeof(T));
  return out;
}

// Atomics: one CUDA thread runs at a time, so a read-modify-write is atomic.
template <class T>
T atomicAdd(T* address, T v) {
  const T old = *address;
  *address = old + v;
  return old;
}
inline int atomicCAS(int* address, int compare, int v) {
  const int old = *address;
  if (old == compare) *address = v;
  return old;
}

// Device max/min over any arithmetic pair (CUDA declares them for mixed integer types).
template <class A, class B,
          class = std::enable_if_t<std::is_arithmetic_v<A> && std::is_arithmetic_v<B>>>
inline std::common_type_t<A, B> max(A a, B b) {
  using C = std::common_type_t<A, B>;
  return static_cast<C>(a) < static_cast<C>(b) ? static_cast<C>(b) : static_cast<C>(a);
}
template <class A, class B,
          class = std::enable_if_t<std::is_arithmetic_v<A> && std::is_arithmetic_v<B>>>
inline std::common_type_t<A, B> min(A a, B b) {
  using C = std::common_type_t<A, B>;
  return static_cast<C>(b) < static_cast<C>(a) ? static_cast<C>(b) : static_cast<C>(a);
}

// ---- the runtime API -------------------------------------------------------------------------
enum cudaError_t {
  cudaSuccess = 0,
  cudaErrorInvalidValue = 1,
  cudaErrorMemoryAllocation = 2,
  cudaErrorInvalidConfiguration = 9,
  cudaErrorInvalidPitchValue = 12,
  cudaErrorInvalidDevicePointer = 17,
  cudaErrorInvalidMemcpyDirection = 21,
  cudaErrorInvalidDevice = 101,
  cudaErrorInvalidResourceHandle = 400,
  cudaErrorIllegalAddress = 700,
  cudaErrorLaunchFailure = 719,
};

enum cudaMemcpyKind {
  cudaMemcpyHostToHost = 0,
  cudaMemcpyHostToDevice = 1,
  cudaMemcpyDeviceToHost = 2,
  cudaMemcpyDeviceToDevice = 3,
  cudaMemcpyDefault = 4,
};

enum cudaMemoryType {
  cudaMemoryTypeUnregistered = 0,
  cudaMemoryTypeHost = 1,
  cudaMemoryTypeDevice = 2,
  cudaMemoryTypeManaged = 3,
};

struct cudaPointerAttributes {
  cudaMemoryType type;
  int device;
  void* devicePointer;
  void* hostPointer;
};

enum cudaDeviceAttr {
  cudaDevAttrMaxSharedMemoryPerBlock = 8,
  cudaDevAttrMultiProcessorCount = 16,
  cudaDevAttrMaxSharedMemoryPerBlockOptin = 97,
};
enum cudaFuncAttribute { cudaFuncAttributeMaxDynamicSharedMemorySize = 8 };
enum cudaMemPoolAttr {
  cudaMemPoolAttrReleaseThreshold = 4,
  cudaMemPoolAttrReservedMemCurrent = 5,
  cudaMemPoolAttrReservedMemHigh = 6,
  cudaMemPoolAttrUsedMemCurrent = 7,
  cudaMemPoolAttrUsedMemHigh = 8,
};

struct cudaDeviceProp {
  char name[256];
  size_t totalGlobalMem;
  int major, minor;
  int multiProcessorCount;
  size_t sharedMemPerBlockOptin;
};

struct CUstream_st;
struct CUevent_st;
struct CUmemPoolHandle_st;
using cudaStream_t = CUstream_st*;
using cudaEvent_t = CUevent_st*;
using cudaMemPool_t = CUmemPoolHandle_st*;

constexpr unsigned cudaStreamDefault = 0, cudaStreamNonBlocking = 1;
constexpr unsigned cudaEventDefault = 0, cudaEventDisableTiming = 2;

cudaError_t cudaGetDeviceCount(int* count);
cudaError_t cudaSetDevice(int device);
cudaError_t cudaGetDevice(int* device);
cudaError_t cudaDeviceGetAttribute(int* value, cudaDeviceAttr attr, int device);
cudaError_t cudaDeviceSynchronize();
cudaError_t cudaGetLastError();
const char* cudaGetErrorName(cudaError_t error);
const char* cudaGetErrorString(cudaError_t error);

cudaError_t cudaStreamCreateWithFlags(cudaStream_t* stream, unsigned flags);
cudaError_t cudaStreamDestroy(cudaStream_t stream);
cudaError_t cudaStreamSynchronize(cudaStream_t stream);
cudaError_t cudaStreamWaitEvent(cudaStream_t stream, cudaEvent_t event, unsigned flags = 0);
cudaError_t cudaEventCreateWithFlags(cudaEvent_t* event, unsigned flags);
cudaError_t cudaEventDestroy(cudaEvent_t event);
cudaError_t cudaEventRecord(cudaEvent_t event, cudaStream_t stream = nullptr);

cudaError_t cudaMallocAsync(void** ptr, size_t bytes, cudaStream_t stream);
cudaError_t cudaFreeAsync(void* ptr, cudaStream_t stream);
cudaError_t cudaMemsetAsync(void* ptr, int value, size_t bytes, cudaStream_t stream = nullptr);
cudaError_t cudaMemcpyAsync(void* dst, const void* src, size_t bytes, cudaMemcpyKind kind,
                            cudaStream_t stream = nullptr);
cudaError_t cudaMemcpy2DAsync(void* dst, size_t dpitch, const void* src, size_t spitch,
                              size_t width, size_t height, cudaMemcpyKind kind,
                              cudaStream_t stream = nullptr);
cudaError_t cudaPointerGetAttributes(cudaPointerAttributes* attr, const void* ptr);
cudaError_t cudaMemGetInfo(size_t* free_bytes, size_t* total_bytes);
cudaError_t cudaDeviceGetDefaultMemPool(cudaMemPool_t* pool, int device);
cudaError_t cudaMemPoolSetAttribute(cudaMemPool_t pool, cudaMemPoolAttr attr, void* value);
cudaError_t cudaMemPoolGetAttribute(cudaMemPool_t pool, cudaMemPoolAttr attr, void* value);
cudaError_t cudaGetDeviceProperties(cudaDeviceProp* prop, int device);
// Page-locked host memory: the emulator checks the calls (a range not already registered, not
// device memory; unregistering what was registered) and counts the registered bytes.
constexpr unsigned cudaHostRegisterDefault = 0;
cudaError_t cudaHostRegister(void* ptr, size_t bytes, unsigned flags);
cudaError_t cudaHostUnregister(void* ptr);
// The synchronous forms (on the emulator everything is synchronous; these use the default
// stream, and cudaMalloc memory belongs to no pool).
cudaError_t cudaMalloc(void** ptr, size_t bytes);
cudaError_t cudaFree(void* ptr);
cudaError_t cudaMemset(void* ptr, int value, size_t bytes);

namespace tls_emu {

cudaError_t set_function_attribute(const void* func, cudaFuncAttribute attr, int value);
// Host bytes registered by cudaHostRegister and not yet unregistered (for tests).
size_t registered_host_bytes();

// A launch: the configuration, then the arguments, then the kernel. The emulator's build
// rewrites `kernel<<<cfg>>>(args)` into `kernel * ::tls_emu::launch(cfg)(args)`.
struct LaunchConfig {
  dim3 grid, block;
  size_t shared_bytes = 0;
  cudaStream_t stream = nullptr;
  std::source_location where;  // of the launch, for the emulator's error messages
};

template <class... A>
struct PendingLaunch {
  LaunchConfig config;
  std::tuple<A...> args;
};

struct Launch {
  LaunchConfig config;
  template <class... A>
  PendingLaunch<std::decay_t<A>...> operator()(A&&... args) const {
    return {config, std::tuple<std::decay_t<A>...>(std::forward<A>(args)...)};
  }
};

inline Launch launch(dim3 grid, dim3 block, size_t shared_bytes = 0, cudaStream_t stream = nullptr,
                     std::source_location where = std::source_location::current()) {
  return Launch{LaunchConfig{grid, block, shared_bytes, stream, where}};
}

// Runs body once per CUDA thread of every block (after checking the configuration and the
// pointer arguments, pointers[0..n_pointers)); errors become the runtime's last error.
void run_grid(const LaunchConfig& config, const void* kernel, void (*body)(void*), void* context,
              const void* const* pointers, int n_pointers);

template <class T>
void collect_pointer(const T& arg, const void** out, int& n) {
  if constexpr (std::is_pointer_v<T>) out[n++] = static_cast<const void*>(arg);
}

template <class... P, class... A>
void operator*(void (*kernel)(P...), PendingLaunch<A...>&& pending) {
  static_assert(sizeof...(P) == sizeof...(A), "kernel launched with the wrong number of arguments");
  struct Context {
    void (*kernel)(P...);
    std::tuple<A...>* args;
  } context{kernel, &pending.args};
  const void* pointers[sizeof...(A) + 1] = {};
  int n_pointers = 0;
  std::apply([&](const auto&... a) { (collect_pointer(a, pointers, n_pointers), ...); },
             pending.args);
  run_grid(
      pending.config, reinterpret_cast<const void*>(kernel),
      [](void* c) {
        auto* ctx = static_cast<Context*>(c);
        std::apply([&](const A&... a) { ctx->kernel(static_cast<P>(a)...); }, *ctx->args);
      },
      &context, pointers, n_pointers);
}

// A kernel template launched without its template arguments (deduced from the arguments, as
// nvcc does): the kernel's parameters are the arguments' types. Binding the launch to a const
// reference makes the overload above the better match whenever both apply.
template <class... A>
void operator*(std::type_identity_t<void (*)(A...)> kernel, const PendingLaunch<A...>& pending) {
  PendingLaunch<A...> copy = pending;
  kernel* std::move(copy);
}

}  // namespace tls_emu

template <class T>
cudaError_t cudaFuncSetAttribute(T* func, cudaFuncAttribute attr, int value) {
  return tls_emu::set_function_attribute(reinterpret_cast<const void*>(func), attr, value);
}
