// Device plumbing of the CUDA backend: the per-device compute stream, stream-ordered device
// allocation (cudaMallocAsync / cudaFreeAsync from the device's default memory pool, which keeps
// freed blocks for reuse), and the CudaOps object itself (cuBLAS handle, TF32 switch, the
// index-check flag).
#include <cstdio>
#include <exception>
#include <limits>
#include <mutex>

#include "kernels/cuda/common.h"
#include "kernels/cuda/cuda_ops.h"

namespace tls {
namespace cuda {
namespace {

constexpr int kMaxDevices = 64;
std::mutex g_mutex;
cudaStream_t g_streams[kMaxDevices] = {};

// Storage deleter: frees on the compute stream of the pointer's device. Runs in destructors,
// so it cannot throw; a failure (e.g. at process exit, after the runtime unloaded) is ignored.
void device_free(void* ptr) {
  cudaPointerAttributes attr{};
  if (cudaPointerGetAttributes(&attr, ptr) != cudaSuccess || attr.device < 0 ||
      attr.device >= kMaxDevices || !g_streams[attr.device]) {
    cudaGetLastError();
    return;
  }
  if (cudaFreeAsync(ptr, g_streams[attr.device]) != cudaSuccess) cudaGetLastError();
}

}  // namespace

cudaStream_t compute_stream(int device) {
  if (device < 0 || device >= kMaxDevices)
    throw Error("CUDA device index " + std::to_string(device) + " is out of range");
  std::lock_guard<std::mutex> lock(g_mutex);
  if (!g_streams[device]) {
    int previous = 0;
    TLS_CUDA_CHECK(cudaGetDevice(&previous));
    TLS_CUDA_CHECK(cudaSetDevice(device));
    cudaMemPool_t pool;
    TLS_CUDA_CHECK(cudaDeviceGetDefaultMemPool(&pool, device));
    uint64_t keep = std::numeric_limits<uint64_t>::max();  // never hand freed blocks back
    TLS_CUDA_CHECK(cudaMemPoolSetAttribute(pool, cudaMemPoolAttrReleaseThreshold, &keep));
    TLS_CUDA_CHECK(cudaStreamCreateWithFlags(&g_streams[device], cudaStreamNonBlocking));
    TLS_CUDA_CHECK(cudaSetDevice(previous));
  }
  return g_streams[device];
}

std::shared_ptr<Storage> device_alloc(int device, size_t bytes) {
  cudaStream_t stream = compute_stream(device);
  auto storage = std::make_shared<Storage>();
  storage->bytes = bytes;
  storage->device = Device::cuda;
  void* ptr = nullptr;
  const cudaError_t status = cudaMallocAsync(&ptr, bytes == 0 ? 256 : bytes, stream);
  if (status != cudaSuccess) {
    cudaGetLastError();
    size_t free_b = 0, total_b = 0;
    cudaMemGetInfo(&free_b, &total_b);
    throw Error("CUDA call cudaMallocAsync failed for " + std::to_string(bytes) +
                " bytes on device " + std::to_string(device) + " (" + cudaGetErrorString(status) +
                "; " + std::to_string(free_b >> 20) + " MiB of " + std::to_string(total_b >> 20) +
                " MiB free)");
  }
  storage->ptr = ptr;
  storage->free_fn = device_free;
  return storage;
}

}  // namespace cuda

CudaOps::CudaOps(int device) : device_(device) {
  int count = 0;
  cuda::check(cudaGetDeviceCount(&count), "cudaGetDeviceCount");
  if (device < 0 || device >= count)
    throw Error("CUDA device " + std::to_string(device) + " does not exist (" +
                std::to_string(count) + " device(s) visible)");
  TLS_CUDA_CHECK(cudaSetDevice(device));
  stream_ = cuda::compute_stream(device);
  int optin = 0;
  TLS_CUDA_CHECK(cudaDeviceGetAttribute(&optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, device));
  smem_optin_ = static_cast<size_t>(optin);
  TLS_CUBLAS_CHECK(cublasCreate(&cublas_));
  TLS_CUBLAS_CHECK(cublasSetStream(cublas_, stream_));
  TLS_CUBLAS_CHECK(cublasSetMathMode(cublas_, CUBLAS_DEFAULT_MATH));
  TLS_CUDA_CHECK(cudaMallocAsync(reinterpret_cast<void**>(&index_flag_), sizeof(int), stream_));
}

CudaOps::~CudaOps() {
  // Unwinding after an error: cublasDestroy synchronises the device, whose queue may hold NCCL
  // work waiting for peers that wait for this rank; leave the handle to the process's end.
  if (std::uncaught_exceptions() > 0) return;
  // Destructors cannot throw: report and go on.
  cudaSetDevice(device_);
  if (index_flag_ && cudaFreeAsync(index_flag_, stream_) != cudaSuccess) cudaGetLastError();
  if (cublas_ && cublasDestroy(cublas_) != CUBLAS_STATUS_SUCCESS)
    std::fprintf(stderr, "tls_dist: cublasDestroy failed\n");
}

std::unique_ptr<Ops> make_cuda_ops(int device) { return std::make_unique<CudaOps>(device); }

Device CudaOps::device() const { return Device::cuda; }

void CudaOps::activate() const { TLS_CUDA_CHECK(cudaSetDevice(device_)); }

void CudaOps::synchronize() const { TLS_CUDA_CHECK(cudaStreamSynchronize(stream_)); }

void CudaOps::set_gemm_inputs(GemmInputs mode) {
  activate();
  TLS_CUBLAS_CHECK(cublasSetMathMode(
      cublas_, mode == GemmInputs::tf32 ? CUBLAS_TF32_TENSOR_OP_MATH : CUBLAS_DEFAULT_MATH));
  gemm_inputs_ = mode;
}

void CudaOps::check_index_flag(const char* op, const char* what, int64_t limit) {
  int bad = -1;
  TLS_CUDA_CHECK(cudaMemcpyAsync(&bad, index_flag_, sizeof(int), cudaMemcpyDeviceToHost, stream_));
  TLS_CUDA_CHECK(cudaStreamSynchronize(stream_));
  if (bad >= 0)
    cuda::fail(op, std::string(what) + " at position " + std::to_string(bad) +
                       " is out of range for " + std::to_string(limit) + " classes");
}

}  // namespace tls
