// Tensor: a shape, an element type, a device and a shared, reference-counted storage.
//
// Tensors are always contiguous and row-major; a tensor may be a view (a different shape, or a
// range of rows along the first dimension) of another tensor's storage. Arithmetic lives in
// kernels/ (the Ops interface); a Tensor only knows where its bytes are.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace tls {

// bf16 is a storage type only (kernels/bf16.h): Ops::copy converts it to and from float32 and
// copy_rows moves it; no arithmetic op takes it.
enum class DType { f32, f64, i32, bf16 };
enum class Device { cpu, cuda };

size_t dtype_size(DType dtype);
const char* dtype_name(DType dtype);

template <class T>
constexpr DType dtype_of();
template <>
constexpr DType dtype_of<float>() {
  return DType::f32;
}
template <>
constexpr DType dtype_of<double>() {
  return DType::f64;
}
template <>
constexpr DType dtype_of<int32_t>() {
  return DType::i32;
}
// One bfloat16 element: the high 16 bits of a float32.
struct bfloat16 {
  uint16_t bits;
};
template <>
constexpr DType dtype_of<bfloat16>() {
  return DType::bf16;
}

// A block of bytes on one device, freed by the deleter given at creation.
struct Storage {
  void* ptr = nullptr;
  size_t bytes = 0;
  Device device = Device::cpu;
  void (*free_fn)(void*) = nullptr;
  size_t counted_bytes = 0;  // what Tensor::empty added to the host tensor memory count
  bool host_block = false;   // ptr came from host_blocks::allocate (counted_bytes long)
  ~Storage();
};

// Bytes held by host tensors from Tensor::empty (not wrapped or device memory): now, and the
// most at any time since the last reset. The benches read it to show memory per token exactly,
// without the allocator's and the libraries' share that the resident set size includes.
struct HostTensorMemory {
  int64_t live = 0, peak = 0;
};
HostTensorMemory host_tensor_memory();
void reset_host_tensor_peak();  // peak = live

class Tensor {
 public:
  Tensor() = default;

  // Host allocation (64-byte aligned). Device allocations come from the CUDA Ops.
  static Tensor empty(std::vector<int64_t> shape, DType dtype);
  static Tensor zeros(std::vector<int64_t> shape, DType dtype);
  static Tensor wrap(std::shared_ptr<Storage> storage, std::vector<int64_t> shape, DType dtype);

  bool defined() const { return storage_ != nullptr; }
  const std::vector<int64_t>& shape() const { return shape_; }
  int64_t dim(int i) const;  // negative i counts from the end
  int rank() const { return static_cast<int>(shape_.size()); }
  int64_t numel() const;
  DType dtype() const { return dtype_; }
  Device device() const { return storage_ ? storage_->device : Device::cpu; }
  size_t bytes() const { return static_cast<size_t>(numel()) * dtype_size(dtype_); }

  void* raw() const;
  template <class T>
  T* data() const {
    check_dtype(dtype_of<T>());
    return static_cast<T*>(raw());
  }

  // Same storage, another shape with the same number of elements.
  Tensor view(std::vector<int64_t> shape) const;
  // Rows [first, first + count) along dimension 0, sharing storage.
  Tensor rows(int64_t first, int64_t count) const;
  // The tensor seen as a matrix: all leading dimensions merged, the last kept.
  int64_t matrix_rows() const;  // product of the leading dimensions (also when the last is 0)
  int64_t matrix_cols() const { return shape_.empty() ? 1 : shape_.back(); }

  std::string shape_string() const;
  bool same_shape(const Tensor& other) const { return shape_ == other.shape_; }

 private:
  void check_dtype(DType want) const;

  std::shared_ptr<Storage> storage_;
  int64_t offset_ = 0;  // in elements
  std::vector<int64_t> shape_;
  DType dtype_ = DType::f32;
};

}  // namespace tls
