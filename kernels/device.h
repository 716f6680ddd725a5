// Choosing where the arithmetic runs, usable with or without the CUDA backend compiled in.
// make_ops(Device::cpu, _) is the CPU backend; make_ops(Device::cuda, i) is CudaOps on device i
// and throws a tls::Error saying why when CUDA is not available (not compiled in, no driver,
// no device, or no device i).
#pragma once

#include <memory>
#include <string>

#include "kernels/ops.h"

namespace tls {

// Number of CUDA devices this process can use: 0 without the CUDA backend or when the runtime
// cannot be queried (e.g. no driver).
int cuda_device_count();

// Why CUDA cannot be used here ("" when at least one device is available), for messages and
// test skips.
std::string cuda_unavailable_reason();

std::unique_ptr<Ops> make_ops(Device device, int device_index = 0);

// Bytes the CUDA device's allocator pool hands out (the backend's tensors): now, and the most
// since the last reset_cuda_memory_peak. Throws a tls::Error without a device.
struct DeviceMemory {
  int64_t used = 0, peak = 0;
};
DeviceMemory cuda_memory(int device_index = 0);
void reset_cuda_memory_peak(int device_index = 0);

}  // namespace tls
