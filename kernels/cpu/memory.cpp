// Memory ops of the CPU backend: allocation, fill, dtype-converting copy (dst[i] = T_dst(src[i]);
// bfloat16 to and from float32 only, rounded as kernels/bf16.h says),
// row-block copies between 3-D tensors [B, N, cols] (dst[b, d0 + i, :] = / += src[b, s0 + i, :])
// and host transfers through double. Also make_cpu_ops(), the factory of the CPU Ops.
#include <malloc.h>
#include <omp.h>

#include <cstdint>
#include <cstring>
#include <type_traits>

#include "kernels/bf16.h"
#include "kernels/cpu/cpu_ops.h"
#include "kernels/cpu/dispatch.h"

namespace tls {

using cpu::check_cpu;
using cpu::fail;

namespace {

// Calls f(T{}) for any element type, int32 and bfloat16 included.
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

// T_dst(v), bfloat16 going through float32.
template <class D, class S>
D convert(S v) {
  if constexpr (std::is_same_v<D, S>)
    return v;
  else if constexpr (std::is_same_v<D, bfloat16>)
    return to_bf16(static_cast<float>(v));
  else if constexpr (std::is_same_v<S, bfloat16>)
    return static_cast<D>(from_bf16(v));
  else
    return static_cast<D>(v);
}

// Checks the arguments of copy_rows / add_rows.
void check_rows(const char* op, const Tensor& dst, int64_t dst_row0, const Tensor& src,
                int64_t src_row0, int64_t n_rows) {
  check_cpu(op, "dst", dst);
  cpu::check_like(op, "dst", dst, "src", src);
  if (dst.rank() != 3 || src.rank() != 3 || dst.dim(0) != src.dim(0) || dst.dim(2) != src.dim(2))
    fail(op, "expected 3-D tensors [B, N, cols] with equal B and cols, got " +
                 cpu::describe("dst", dst) + " and " + cpu::describe("src", src));
  if (n_rows < 0 || dst_row0 < 0 || src_row0 < 0 || dst_row0 + n_rows > dst.dim(1) ||
      src_row0 + n_rows > src.dim(1))
    fail(op, "rows out of range: " + std::to_string(n_rows) + " rows from src row " +
                 std::to_string(src_row0) + " to dst row " + std::to_string(dst_row0) + " with " +
                 cpu::describe("dst", dst) + ", " + cpu::describe("src", src));
}

// Large clears and copies are split over OpenMP's threads, so no thread waits while another
// clears: they run over activation-sized buffers on every step.
constexpr size_t kParallelBytes = size_t{1} << 20;

template <class F>
void in_byte_slices(size_t bytes, F&& f) {
  if (bytes < kParallelBytes || omp_in_parallel()) return f(size_t{0}, bytes);
#pragma omp parallel
  {
    const size_t parts = static_cast<size_t>(omp_get_num_threads());
    const size_t p = static_cast<size_t>(omp_get_thread_num());
    const size_t lo = bytes * p / parts / 64 * 64;  // cache-line boundaries
    const size_t hi = p + 1 == parts ? bytes : bytes * (p + 1) / parts / 64 * 64;
    if (hi > lo) f(lo, hi - lo);
  }
}

}  // namespace

std::unique_ptr<Ops> make_cpu_ops() {
  // A training step frees and allocates the same activation sizes every step. By default glibc
  // serves blocks over 128 KiB by mmap and trims the heap's free top, so each step would pay the
  // page faults and zeroing of fresh pages again. Blocks up to 32 MiB stay on the heap and freed
  // pages are kept for the next step; the resident peak is the same, since each step reaches it
  // anyway.
  static const bool tuned = [] {
    mallopt(M_MMAP_THRESHOLD, 32 << 20);
    mallopt(M_TRIM_THRESHOLD, 1 << 30);
    return true;
  }();
  (void)tuned;
  return std::make_unique<CpuOps>();
}

Device CpuOps::device() const { return Device::cpu; }

Tensor CpuOps::empty(const std::vector<int64_t>& shape, DType dtype) {
  return Tensor::empty(shape, dtype);
}

Tensor CpuOps::zeros(const std::vector<int64_t>& shape, DType dtype) {
  Tensor t = Tensor::empty(shape, dtype);
  char* p = static_cast<char*>(t.raw());
  in_byte_slices(t.bytes(), [&](size_t off, size_t n) { std::memset(p + off, 0, n); });
  return t;
}

void CpuOps::fill(Tensor& x, double value) {
  check_cpu("fill", "x", x);
  dispatch_any("fill", x.dtype(), [&](auto tag) {
    using T = decltype(tag);
    T* p = x.data<T>();
    const T v = convert<T>(value);
    const int64_t n = x.numel();
#pragma omp parallel for if (n >= cpu::kParallelMin)
    for (int64_t i = 0; i < n; ++i) p[i] = v;
  });
}

void CpuOps::copy(Tensor& dst, const Tensor& src) {
  check_cpu("copy", "dst", dst);
  check_cpu("copy", "src", src);
  if (dst.numel() != src.numel())
    fail("copy", "element counts differ: " + cpu::describe("dst", dst) + " vs " +
                     cpu::describe("src", src));
  if (dst.dtype() == src.dtype()) {
    char* d = static_cast<char*>(dst.raw());
    const char* from = static_cast<const char*>(src.raw());
    if (d == from) return;
    const size_t bytes = dst.bytes();
    const auto a0 = reinterpret_cast<uintptr_t>(d), b0 = reinterpret_cast<uintptr_t>(from);
    if (a0 < b0 + bytes && b0 < a0 + bytes)  // overlapping: one memmove keeps it right
      std::memmove(d, from, bytes);
    else
      in_byte_slices(bytes, [&](size_t off, size_t n) { std::memcpy(d + off, from + off, n); });
    return;
  }
  if ((dst.dtype() == DType::bf16 && src.dtype() != DType::f32) ||
      (src.dtype() == DType::bf16 && dst.dtype() != DType::f32))
    fail("copy", "bfloat16 converts to and from float32 only: " + cpu::describe("dst", dst) +
                     " vs " + cpu::describe("src", src));
  dispatch_any("copy", dst.dtype(), [&](auto dtag) {
    using D = decltype(dtag);
    dispatch_any("copy", src.dtype(), [&](auto stag) {
      using S = decltype(stag);
      D* d = dst.data<D>();
      const S* s = src.data<S>();
      const int64_t n = dst.numel();
#pragma omp parallel for if (n >= cpu::kParallelMin)
      for (int64_t i = 0; i < n; ++i) d[i] = convert<D>(s[i]);
    });
  });
}

void CpuOps::copy_rows(Tensor& dst, int64_t dst_row0, const Tensor& src, int64_t src_row0,
                       int64_t n_rows) {
  check_rows("copy_rows", dst, dst_row0, src, src_row0, n_rows);
  const int64_t batch = dst.dim(0), cols = dst.dim(2);
  const size_t esize = dtype_size(dst.dtype());
  const size_t block = static_cast<size_t>(n_rows * cols) * esize;
  auto* d = static_cast<char*>(dst.raw());
  const auto* s = static_cast<const char*>(src.raw());
  for (int64_t b = 0; b < batch; ++b) {
    std::memmove(d + static_cast<size_t>((b * dst.dim(1) + dst_row0) * cols) * esize,
                 s + static_cast<size_t>((b * src.dim(1) + src_row0) * cols) * esize, block);
  }
}

void CpuOps::add_rows(Tensor& dst, int64_t dst_row0, const Tensor& src, int64_t src_row0,
                      int64_t n_rows) {
  cpu::check_float("add_rows", "dst", dst);
  check_rows("add_rows", dst, dst_row0, src, src_row0, n_rows);
  const int64_t batch = dst.dim(0), cols = dst.dim(2), block = n_rows * cols;
  cpu::dispatch_float("add_rows", dst.dtype(), [&](auto tag) {
    using T = decltype(tag);
    T* d = dst.data<T>();
    const T* s = src.data<T>();
#pragma omp parallel for if (batch * block >= cpu::kParallelMin)
    for (int64_t b = 0; b < batch; ++b) {
      T* dp = d + (b * dst.dim(1) + dst_row0) * cols;
      const T* sp = s + (b * src.dim(1) + src_row0) * cols;
      for (int64_t i = 0; i < block; ++i) dp[i] += sp[i];
    }
  });
}

std::vector<double> CpuOps::to_host(const Tensor& x) {
  check_cpu("to_host", "x", x);
  std::vector<double> out(static_cast<size_t>(x.numel()));
  dispatch_any("to_host", x.dtype(), [&](auto tag) {
    using T = decltype(tag);
    const T* p = x.data<T>();
    for (size_t i = 0; i < out.size(); ++i) out[i] = convert<double>(p[i]);
  });
  return out;
}

void CpuOps::from_host(Tensor& x, const std::vector<double>& values) {
  check_cpu("from_host", "x", x);
  if (static_cast<int64_t>(values.size()) != x.numel())
    fail("from_host", std::to_string(values.size()) + " values for " + cpu::describe("x", x));
  dispatch_any("from_host", x.dtype(), [&](auto tag) {
    using T = decltype(tag);
    T* p = x.data<T>();
    for (size_t i = 0; i < values.size(); ++i) p[i] = convert<T>(values[i]);
  });
}

}  // namespace tls
