// Memory ops of the CUDA backend: allocation (stream-ordered, see runtime.cpp), fill,
// dtype-converting copy dst[i] = T_dst(src[i]), row-block copies between 3-D tensors
// [B, N, cols] (dst[b, d0 + i, :] = / += src[b, s0 + i, :]) and host transfers, which convert
// through double on the host exactly as the CPU backend does. bfloat16 converts to and from
// float32 only, on the device with __float2bfloat16_rn (round to nearest even, as kernels/bf16.h
// does on the host).
#include <cuda_bf16.h>

#include <algorithm>
#include <cstring>
#include <type_traits>

#include "kernels/bf16.h"
#include "kernels/cuda/common.h"
#include "kernels/cuda/cuda_ops.h"
#include "kernels/cuda/device_util.cuh"

namespace tls {

using cuda::fail;

namespace {

template <class F>
void dispatch_any(const char* op, DType dtype, F&& f) {
  switch (dtype) {
    case DType::f32:
      f(float{});
      return;
    case DType::f64:
      f(double{});
      return;
    case DType::i32:
      f(int32_t{});
      return;
    case DType::bf16:
      f(bfloat16{});
      return;
  }
  fail(op, "unknown dtype");
}

// Host-side T(v) and double(v), bfloat16 through float32 (kernels/bf16.h).
template <class T>
T from_double(double v) {
  if constexpr (std::is_same_v<T, bfloat16>)
    return to_bf16(static_cast<float>(v));
  else
    return static_cast<T>(v);
}
template <class T>
double to_double(T v) {
  if constexpr (std::is_same_v<T, bfloat16>)
    return from_bf16(v);
  else
    return static_cast<double>(v);
}

template <class T>
__global__ void fill_kernel(T* x, int64_t n, T v) {
  TLS_GRID_LOOP(i, n) x[i] = v;
}

template <class D, class S>
__global__ void convert_kernel(D* dst, const S* src, int64_t n) {
  TLS_GRID_LOOP(i, n) dst[i] = static_cast<D>(src[i]);
}

__global__ void float_to_bf16_kernel(__nv_bfloat16* dst, const float* src, int64_t n) {
  TLS_GRID_LOOP(i, n) dst[i] = __float2bfloat16_rn(src[i]);
}

__global__ void bf16_to_float_kernel(float* dst, const __nv_bfloat16* src, int64_t n) {
  TLS_GRID_LOOP(i, n) dst[i] = __bfloat162float(src[i]);
}

// dst[b, d0 + i, :] += src[b, s0 + i, :] over the flattened (b, i*cols + j) index.
template <class T>
__global__ void add_rows_kernel(T* dst, const T* src, int64_t batch, int64_t block,
                                int64_t dst_stride, int64_t src_stride) {
  TLS_GRID_LOOP(k, batch * block) {
    const int64_t b = k / block, i = k % block;
    dst[b * dst_stride + i] += src[b * src_stride + i];
  }
}

// Whether two tensors' bytes intersect (device copies of overlapping ranges are undefined).
bool shares_bytes(const Tensor& a, const Tensor& b) {
  const auto* a0 = static_cast<const char*>(a.raw());
  const auto* b0 = static_cast<const char*>(b.raw());
  return a.bytes() > 0 && b.bytes() > 0 && a0 < b0 + b.bytes() && b0 < a0 + a.bytes();
}

// cudaMemcpy2D's pitch limit (cudaDevAttrMaxPitch: 2^31 - 1 bytes on every current GPU).
constexpr size_t kMaxPitch = 2147483647;

void check_rows(const char* op, const Tensor& dst, int64_t dst_row0, const Tensor& src,
                int64_t src_row0, int64_t n_rows) {
  cuda::check_dev(op, "dst", dst);
  cuda::check_like(op, "dst", dst, "src", src);
  if (dst.rank() != 3 || src.rank() != 3 || dst.dim(0) != src.dim(0) || dst.dim(2) != src.dim(2))
    fail(op, "expected 3-D tensors [B, N, cols] with equal B and cols, got " +
                 cuda::describe("dst", dst) + " and " + cuda::describe("src", src));
  if (n_rows < 0 || dst_row0 < 0 || src_row0 < 0 || dst_row0 + n_rows > dst.dim(1) ||
      src_row0 + n_rows > src.dim(1))
    fail(op, "rows out of range: " + std::to_string(n_rows) + " rows from src row " +
                 std::to_string(src_row0) + " to dst row " + std::to_string(dst_row0) + " with " +
                 cuda::describe("dst", dst) + ", " + cuda::describe("src", src));
}

}  // namespace

Tensor CudaOps::empty(const std::vector<int64_t>& shape, DType dtype) {
  int64_t n = 1;
  for (int64_t s : shape) {
    if (s < 0) fail("empty", "negative dimension in shape");
    n *= s;
  }
  activate();
  return Tensor::wrap(cuda::device_alloc(device_, static_cast<size_t>(n) * dtype_size(dtype)),
                      shape, dtype);
}

Tensor CudaOps::zeros(const std::vector<int64_t>& shape, DType dtype) {
  Tensor t = empty(shape, dtype);
  TLS_CUDA_CHECK(cudaMemsetAsync(t.raw(), 0, t.bytes(), stream_));
  return t;
}

void CudaOps::fill(Tensor& x, double value) {
  cuda::check_dev("fill", "x", x);
  activate();
  dispatch_any("fill", x.dtype(), [&](auto tag) {
    using T = decltype(tag);
    const int64_t n = x.numel();
    if (n == 0) return;
    if constexpr (std::is_same_v<T, bfloat16>) {
      fill_kernel<uint16_t><<<cuda::blocks_for(n), cuda::kThreads, 0, stream_>>>(
          static_cast<uint16_t*>(x.raw()), n, to_bf16(static_cast<float>(value)).bits);
    } else {
      fill_kernel<T><<<cuda::blocks_for(n), cuda::kThreads, 0, stream_>>>(x.data<T>(), n,
                                                                          static_cast<T>(value));
    }
    TLS_CUDA_LAUNCHED("fill_kernel");
  });
}

void CudaOps::copy(Tensor& dst, const Tensor& src) {
  cuda::check_dev("copy", "dst", dst);
  cuda::check_dev("copy", "src", src);
  if (dst.numel() != src.numel())
    fail("copy", "element counts differ: " + cuda::describe("dst", dst) + " vs " +
                     cuda::describe("src", src));
  activate();
  if (dst.numel() == 0) return;
  if (dst.raw() != src.raw() && shares_bytes(dst, src)) {  // overlapping: via a copy of src
    Tensor staged = empty(src.shape(), src.dtype());
    copy(staged, src);
    copy(dst, staged);
    return;
  }
  if (dst.dtype() == src.dtype()) {
    if (dst.raw() != src.raw())
      TLS_CUDA_CHECK(
          cudaMemcpyAsync(dst.raw(), src.raw(), dst.bytes(), cudaMemcpyDeviceToDevice, stream_));
    return;
  }
  const int64_t n = dst.numel();
  if (dst.dtype() == DType::bf16 && src.dtype() == DType::f32) {
    float_to_bf16_kernel<<<cuda::blocks_for(n), cuda::kThreads, 0, stream_>>>(
        static_cast<__nv_bfloat16*>(dst.raw()), src.data<float>(), n);
    TLS_CUDA_LAUNCHED("float_to_bf16_kernel");
    return;
  }
  if (dst.dtype() == DType::f32 && src.dtype() == DType::bf16) {
    bf16_to_float_kernel<<<cuda::blocks_for(n), cuda::kThreads, 0, stream_>>>(
        dst.data<float>(), static_cast<const __nv_bfloat16*>(src.raw()), n);
    TLS_CUDA_LAUNCHED("bf16_to_float_kernel");
    return;
  }
  if (dst.dtype() == DType::bf16 || src.dtype() == DType::bf16)
    fail("copy", "bfloat16 converts to and from float32 only: " + cuda::describe("dst", dst) +
                     " vs " + cuda::describe("src", src));
  dispatch_any("copy", dst.dtype(), [&](auto dtag) {
    using D = decltype(dtag);
    dispatch_any("copy", src.dtype(), [&](auto stag) {
      using S = decltype(stag);
      if constexpr (!std::is_same_v<D, bfloat16> && !std::is_same_v<S, bfloat16>) {  // above
        convert_kernel<D, S>
            <<<cuda::blocks_for(n), cuda::kThreads, 0, stream_>>>(dst.data<D>(), src.data<S>(), n);
        TLS_CUDA_LAUNCHED("convert_kernel");
      }
    });
  });
}

void CudaOps::copy_rows(Tensor& dst, int64_t dst_row0, const Tensor& src, int64_t src_row0,
                        int64_t n_rows) {
  check_rows("copy_rows", dst, dst_row0, src, src_row0, n_rows);
  activate();
  const int64_t batch = dst.dim(0), cols = dst.dim(2);
  const size_t esize = dtype_size(dst.dtype());
  const size_t width = static_cast<size_t>(n_rows * cols) * esize;
  if (width == 0 || batch == 0) return;
  if (shares_bytes(dst, src)) {
    // The CPU backend allows overlapping rows (memmove); device copies do not: go through a
    // copy of the source.
    Tensor staged = empty(src.shape(), src.dtype());
    copy(staged, src);
    copy_rows(dst, dst_row0, staged, src_row0, n_rows);
    return;
  }
  auto* d = static_cast<char*>(dst.raw()) + static_cast<size_t>(dst_row0 * cols) * esize;
  const auto* s =
      static_cast<const char*>(src.raw()) + static_cast<size_t>(src_row0 * cols) * esize;
  const size_t dst_pitch = static_cast<size_t>(dst.dim(1) * cols) * esize,
               src_pitch = static_cast<size_t>(src.dim(1) * cols) * esize;
  if (std::max(dst_pitch, src_pitch) <= kMaxPitch) {
    // One 2-D copy: batch "rows" of `width` bytes with the two tensors' batch strides.
    TLS_CUDA_CHECK(cudaMemcpy2DAsync(d, dst_pitch, s, src_pitch, width, static_cast<size_t>(batch),
                                     cudaMemcpyDeviceToDevice, stream_));
    return;
  }
  for (int64_t b = 0; b < batch; ++b)  // pitches over the 2-D copy's limit: one copy per row
    TLS_CUDA_CHECK(cudaMemcpyAsync(d + static_cast<size_t>(b) * dst_pitch,
                                   s + static_cast<size_t>(b) * src_pitch, width,
                                   cudaMemcpyDeviceToDevice, stream_));
}

void CudaOps::add_rows(Tensor& dst, int64_t dst_row0, const Tensor& src, int64_t src_row0,
                       int64_t n_rows) {
  cuda::check_float("add_rows", "dst", dst);
  check_rows("add_rows", dst, dst_row0, src, src_row0, n_rows);
  activate();
  const int64_t batch = dst.dim(0), cols = dst.dim(2), block = n_rows * cols;
  if (batch * block == 0) return;
  cuda::dispatch_float("add_rows", dst.dtype(), [&](auto tag) {
    using T = decltype(tag);
    add_rows_kernel<T><<<cuda::blocks_for(batch * block), cuda::kThreads, 0, stream_>>>(
        dst.data<T>() + dst_row0 * cols, src.data<T>() + src_row0 * cols, batch, block,
        dst.dim(1) * cols, src.dim(1) * cols);
    TLS_CUDA_LAUNCHED("add_rows_kernel");
  });
}

std::vector<double> CudaOps::to_host(const Tensor& x) {
  cuda::check_dev("to_host", "x", x);
  activate();
  std::vector<double> out(static_cast<size_t>(x.numel()));
  dispatch_any("to_host", x.dtype(), [&](auto tag) {
    using T = decltype(tag);
    std::vector<T> buf(out.size());
    if (!buf.empty())
      TLS_CUDA_CHECK(
          cudaMemcpyAsync(buf.data(), x.raw(), x.bytes(), cudaMemcpyDeviceToHost, stream_));
    TLS_CUDA_CHECK(cudaStreamSynchronize(stream_));
    for (size_t i = 0; i < out.size(); ++i) out[i] = to_double(buf[i]);
  });
  return out;
}

void CudaOps::copy_to_host_bytes(const Tensor& x, void* dst) {
  cuda::check_dev("copy_to_host_bytes", "x", x);
  activate();
  if (x.numel() > 0)
    TLS_CUDA_CHECK(cudaMemcpyAsync(dst, x.raw(), x.bytes(), cudaMemcpyDeviceToHost, stream_));
  TLS_CUDA_CHECK(cudaStreamSynchronize(stream_));
}

Ops::HostUnpin CudaOps::pin_host(void* p, size_t bytes) {
  if (p == nullptr || bytes == 0) return nullptr;
  activate();
  if (cudaHostRegister(p, bytes, cudaHostRegisterDefault) != cudaSuccess) {
    (void)cudaGetLastError();  // not sticky: the memory stays pageable and still works
    return nullptr;
  }
  return [](void* q) { (void)cudaHostUnregister(q); };
}

void CudaOps::from_host(Tensor& x, const std::vector<double>& values) {
  cuda::check_dev("from_host", "x", x);
  if (static_cast<int64_t>(values.size()) != x.numel())
    fail("from_host", std::to_string(values.size()) + " values for " + cuda::describe("x", x));
  activate();
  dispatch_any("from_host", x.dtype(), [&](auto tag) {
    using T = decltype(tag);
    std::vector<T> buf(values.size());
    for (size_t i = 0; i < values.size(); ++i) buf[i] = from_double<T>(values[i]);
    if (!buf.empty())
      TLS_CUDA_CHECK(
          cudaMemcpyAsync(x.raw(), buf.data(), x.bytes(), cudaMemcpyHostToDevice, stream_));
    TLS_CUDA_CHECK(cudaStreamSynchronize(stream_));  // buf dies at the end of this scope
  });
}

}  // namespace tls
