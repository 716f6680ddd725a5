#include "kernels/tensor.h"

#include <atomic>
#include <cstdlib>
#include <cstring>
#include <new>
#include <sstream>

#include "kernels/error.h"
#include "kernels/host_blocks.h"

namespace tls {

size_t dtype_size(DType dtype) {
  switch (dtype) {
    case DType::f32:
      return 4;
    case DType::f64:
      return 8;
    case DType::i32:
      return 4;
    case DType::bf16:
      return 2;
  }
  return 0;
}

const char* dtype_name(DType dtype) {
  switch (dtype) {
    case DType::f32:
      return "float32";
    case DType::f64:
      return "float64";
    case DType::i32:
      return "int32";
    case DType::bf16:
      return "bfloat16";
  }
  return "?";
}

namespace {
std::atomic<int64_t> live_host_bytes{0}, peak_host_bytes{0};

void count_host_bytes(int64_t delta) {
  const int64_t now = live_host_bytes.fetch_add(delta) + delta;
  int64_t peak = peak_host_bytes.load();
  while (now > peak && !peak_host_bytes.compare_exchange_weak(peak, now)) {
  }
}
}  // namespace

HostTensorMemory host_tensor_memory() { return {live_host_bytes.load(), peak_host_bytes.load()}; }

void reset_host_tensor_peak() { peak_host_bytes.store(live_host_bytes.load()); }

Storage::~Storage() {
  if (ptr && host_block)
    host_blocks::release(ptr, counted_bytes);
  else if (ptr && free_fn)
    free_fn(ptr);
  if (counted_bytes > 0) count_host_bytes(-static_cast<int64_t>(counted_bytes));
}

static int64_t product(const std::vector<int64_t>& shape) {
  int64_t n = 1;
  for (int64_t s : shape) n *= s;
  return n;
}

Tensor Tensor::empty(std::vector<int64_t> shape, DType dtype) {
  for (int64_t s : shape)
    if (s < 0) throw Error("tensor: negative dimension in shape");
  auto storage = std::make_shared<Storage>();
  storage->bytes = static_cast<size_t>(product(shape)) * dtype_size(dtype);
  size_t alloc = (storage->bytes + 63) / 64 * 64;
  if (alloc == 0) alloc = 64;
  if (alloc >= host_blocks::kMinBytes) {
    storage->ptr = host_blocks::allocate(alloc);
    storage->host_block = true;
  } else {
    storage->ptr = std::aligned_alloc(64, alloc);
    storage->free_fn = std::free;
  }
  if (!storage->ptr) throw std::bad_alloc();
  storage->counted_bytes = alloc;
  count_host_bytes(static_cast<int64_t>(alloc));
  return wrap(std::move(storage), std::move(shape), dtype);
}

Tensor Tensor::zeros(std::vector<int64_t> shape, DType dtype) {
  Tensor t = empty(std::move(shape), dtype);
  std::memset(t.raw(), 0, t.bytes());
  return t;
}

Tensor Tensor::wrap(std::shared_ptr<Storage> storage, std::vector<int64_t> shape, DType dtype) {
  Tensor t;
  t.storage_ = std::move(storage);
  t.shape_ = std::move(shape);
  t.dtype_ = dtype;
  if (t.bytes() > t.storage_->bytes) throw Error("tensor: shape larger than its storage");
  return t;
}

int64_t Tensor::dim(int i) const {
  int n = rank();
  if (i < 0) i += n;
  if (i < 0 || i >= n)
    throw Error("tensor: dimension " + std::to_string(i) + " out of range for shape " +
                shape_string());
  return shape_[static_cast<size_t>(i)];
}

int64_t Tensor::numel() const { return product(shape_); }

int64_t Tensor::matrix_rows() const {
  int64_t rows = 1;
  for (size_t i = 0; i + 1 < shape_.size(); ++i) rows *= shape_[i];
  return rows;
}

void* Tensor::raw() const {
  if (!storage_) return nullptr;
  return static_cast<char*>(storage_->ptr) + offset_ * static_cast<int64_t>(dtype_size(dtype_));
}

Tensor Tensor::view(std::vector<int64_t> shape) const {
  if (product(shape) != numel())
    throw Error("tensor: cannot view " + shape_string() + " with a different number of elements");
  Tensor t = *this;
  t.shape_ = std::move(shape);
  return t;
}

Tensor Tensor::rows(int64_t first, int64_t count) const {
  if (shape_.empty() || first < 0 || count < 0 || first + count > shape_[0])
    throw Error("tensor: rows [" + std::to_string(first) + ", " + std::to_string(first + count) +
                ") out of range for shape " + shape_string());
  Tensor t = *this;
  int64_t row_elems = shape_[0] == 0 ? 0 : numel() / shape_[0];
  t.offset_ += first * row_elems;
  t.shape_[0] = count;
  return t;
}

std::string Tensor::shape_string() const {
  std::ostringstream s;
  s << "[";
  for (size_t i = 0; i < shape_.size(); ++i) s << (i ? ", " : "") << shape_[i];
  s << "]";
  return s.str();
}

void Tensor::check_dtype(DType want) const {
  if (want != dtype_)
    throw Error(std::string("tensor: accessed as ") + dtype_name(want) + " but holds " +
                dtype_name(dtype_));
}

}  // namespace tls
