// make_ops and the CUDA availability probe (see device.h). The CUDA calls are compiled only
// when the CUDA backend is (TLS_HAVE_CUDA).
#include "kernels/device.h"

#include "kernels/error.h"

#ifdef TLS_HAVE_CUDA
#include <cuda_runtime.h>

#include "kernels/cuda/cuda_ops.h"
#endif

namespace tls {

const char* to_string(GemmInputs mode) {
  switch (mode) {
    case GemmInputs::exact:
      return "exact";
    case GemmInputs::tf32:
      return "tf32";
    case GemmInputs::bf16:
      return "bf16";
  }
  return "?";
}

namespace {

// The device count and, when it is zero, the reason.
int probe(std::string* reason) {
#ifdef TLS_HAVE_CUDA
  int count = 0;
  const cudaError_t status = cudaGetDeviceCount(&count);
  if (status != cudaSuccess) {
    cudaGetLastError();  // clear the sticky error state of the runtime
    if (reason)
      *reason = std::string("no CUDA device is available: cudaGetDeviceCount failed with ") +
                cudaGetErrorName(status) + " (" + cudaGetErrorString(status) + ")";
    return 0;
  }
  if (count == 0 && reason)
    *reason = "no CUDA device is available: cudaGetDeviceCount found 0 devices";
  return count;
#else
  if (reason) *reason = "no CUDA device is available: tls_dist was built without the CUDA backend";
  return 0;
#endif
}

}  // namespace

int cuda_device_count() { return probe(nullptr); }

std::string cuda_unavailable_reason() {
  std::string reason;
  probe(&reason);
  return reason;
}

std::unique_ptr<Ops> make_ops(Device device, int device_index) {
  if (device == Device::cpu) return make_cpu_ops();
  std::string reason;
  const int count = probe(&reason);
  if (count == 0) throw Error("--device cuda was requested but " + reason);
  if (device_index < 0 || device_index >= count)
    throw Error("CUDA device " + std::to_string(device_index) + " was requested but only " +
                std::to_string(count) + " device(s) are visible");
#ifdef TLS_HAVE_CUDA
  return make_cuda_ops(device_index);
#else
  throw Error("--device cuda was requested but " + reason);
#endif
}

#ifdef TLS_HAVE_CUDA
namespace {
cudaMemPool_t pool_of(int device_index) {
  if (device_index < 0 || device_index >= cuda_device_count())
    throw Error("CUDA memory of device " + std::to_string(device_index) + ": " +
                (cuda_device_count() == 0 ? cuda_unavailable_reason() : "no such device"));
  cudaMemPool_t pool;
  if (cudaDeviceGetDefaultMemPool(&pool, device_index) != cudaSuccess)
    throw Error("CUDA memory of device " + std::to_string(device_index) +
                ": cudaDeviceGetDefaultMemPool failed");
  return pool;
}
}  // namespace

DeviceMemory cuda_memory(int device_index) {
  cudaMemPool_t pool = pool_of(device_index);
  uint64_t used = 0, high = 0;
  if (cudaMemPoolGetAttribute(pool, cudaMemPoolAttrUsedMemCurrent, &used) != cudaSuccess ||
      cudaMemPoolGetAttribute(pool, cudaMemPoolAttrUsedMemHigh, &high) != cudaSuccess)
    throw Error("CUDA memory of device " + std::to_string(device_index) +
                ": the pool's counters cannot be read");
  return {static_cast<int64_t>(used), static_cast<int64_t>(high)};
}

void reset_cuda_memory_peak(int device_index) {
  uint64_t zero = 0;  // the pool sets the high-water mark to what is in use now
  if (cudaMemPoolSetAttribute(pool_of(device_index), cudaMemPoolAttrUsedMemHigh, &zero) !=
      cudaSuccess)
    throw Error("CUDA memory of device " + std::to_string(device_index) +
                ": the pool's peak cannot be reset");
}
#else
DeviceMemory cuda_memory(int) { throw Error("CUDA memory: " + cuda_unavailable_reason()); }
void reset_cuda_memory_peak(int) { throw Error("CUDA memory: " + cuda_unavailable_reason()); }
#endif

}  // namespace tls
