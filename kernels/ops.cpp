// Ops' default host transfers for checkpoints: a host tensor is copied as it is; any other goes
// through to_host and is converted back to its own dtype.
#include "kernels/ops.h"

#include <cstring>
#include <type_traits>

#include "kernels/bf16.h"
#include "kernels/error.h"

namespace tls {

void Ops::copy_to_host_bytes(const Tensor& x, void* dst) {
  if (x.device() == Device::cpu) {
    if (x.numel() > 0) std::memcpy(dst, x.raw(), x.bytes());
    return;
  }
  const std::vector<double> values = to_host(x);
  auto write = [&](auto* out) {
    using T = std::remove_pointer_t<decltype(out)>;
    for (size_t i = 0; i < values.size(); ++i) out[i] = static_cast<T>(values[i]);
  };
  switch (x.dtype()) {
    case DType::f32:
      return write(static_cast<float*>(dst));
    case DType::f64:
      return write(static_cast<double*>(dst));
    case DType::i32:
      return write(static_cast<int32_t*>(dst));
    case DType::bf16: {
      auto* out = static_cast<bfloat16*>(dst);
      for (size_t i = 0; i < values.size(); ++i) out[i] = to_bf16(static_cast<float>(values[i]));
      return;
    }
  }
  throw Error("copy_to_host_bytes: unknown dtype");
}

Ops::HostUnpin Ops::pin_host(void*, size_t) { return nullptr; }

}  // namespace tls
