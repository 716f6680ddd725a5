// What the emulator's runtime (emulator.cpp) shares with its cuBLAS (cublas.cpp).
#pragma once

#include <cstddef>
#include <string>

namespace tls_emu {

// Device memory is accessible to the host only while one of these lives (emulated device work:
// kernels, copies, cuBLAS); otherwise touching it faults, as host access to GPU memory would.
// Within it an allocation opens on first touch.
class DeviceAccess {
 public:
  DeviceAccess();
  ~DeviceAccess();
  DeviceAccess(const DeviceAccess&) = delete;
  DeviceAccess& operator=(const DeviceAccess&) = delete;
};

// Whether [ptr, ptr + bytes) lies inside one live device allocation.
bool is_device_range(const void* ptr, size_t bytes);
bool is_device_pointer(const void* ptr);

// Makes the allocation holding ptr accessible for the rest of the current device work, for
// code that reaches it other than by a fault in this process (MPI may copy through the kernel).
void open_range(const void* ptr);

// Reports a fault of emulated device code (what a GPU would report as an illegal address or a
// hang) and aborts the process.
[[noreturn]] void device_fault(const std::string& what);

}  // namespace tls_emu
