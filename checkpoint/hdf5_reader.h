// Hdf5Reader: a small read-only view of one HDF5 file (serial open, HDF5 C API), enough to read
// checkpoints' attributes and the golden files' datasets (docs/DESIGN.md section 5). Every error is
// a tls::Error naming the file and the object (dataset, group or attribute) involved.
#pragma once

#include <hdf5.h>

#include <cstdint>
#include <string>
#include <vector>

namespace tls {

// Turns HDF5's automatic error-stack printing off for the lifetime of the guard (we report
// errors ourselves, once, naming the file and the object).
class QuietHdf5 {
 public:
  QuietHdf5() {
    H5Eget_auto2(H5E_DEFAULT, &func_, &data_);
    H5Eset_auto2(H5E_DEFAULT, nullptr, nullptr);
  }
  ~QuietHdf5() { H5Eset_auto2(H5E_DEFAULT, func_, data_); }
  QuietHdf5(const QuietHdf5&) = delete;
  QuietHdf5& operator=(const QuietHdf5&) = delete;

 private:
  H5E_auto2_t func_ = nullptr;
  void* data_ = nullptr;
};

// The innermost message on HDF5's current error stack (e.g. "data error detected by Fletcher32
// checksum"), or "" when the stack is empty.
std::string hdf5_error_detail();

// An HDF5 identifier closed by its matching H5?close function when it goes out of scope.
class Hdf5Handle {
 public:
  using CloseFn = herr_t (*)(hid_t);
  Hdf5Handle() = default;
  Hdf5Handle(hid_t id, CloseFn close) : id_(id), close_(close) {}
  Hdf5Handle(Hdf5Handle&& other) noexcept : id_(other.id_), close_(other.close_) { other.id_ = -1; }
  Hdf5Handle& operator=(Hdf5Handle&& other) noexcept;
  Hdf5Handle(const Hdf5Handle&) = delete;
  Hdf5Handle& operator=(const Hdf5Handle&) = delete;
  ~Hdf5Handle() { reset(); }

  hid_t get() const { return id_; }
  bool valid() const { return id_ >= 0; }
  void reset();
  // Gives up ownership: the caller closes the returned id.
  hid_t release() {
    hid_t id = id_;
    id_ = -1;
    return id;
  }

 private:
  hid_t id_ = -1;
  CloseFn close_ = nullptr;
};

// One mapping of a virtual dataset: the block [start, start + count) of the virtual dataset is
// the whole of `dataset` in `file` (a name relative to the virtual dataset's file's directory).
struct VirtualSource {
  std::string file, dataset;
  std::vector<int64_t> start, count;
};

class Hdf5Reader {
 public:
  // Opens `path` read-only. Throws if the file is missing, unreadable, not HDF5, or an HDF5 file
  // that cannot be opened (truncated or damaged metadata).
  explicit Hdf5Reader(const std::string& path);

  const std::string& path() const { return path_; }

  // Attributes of the object at `object_path` ("/" for the root, or a group/dataset path).
  bool has_attribute(const std::string& name) const { return has_attribute("/", name); }
  bool has_attribute(const std::string& object_path, const std::string& name) const;
  int64_t int_attribute(const std::string& object_path, const std::string& name) const;
  double double_attribute(const std::string& object_path, const std::string& name) const;
  std::string string_attribute(const std::string& object_path, const std::string& name) const;

  bool has_dataset(const std::string& path) const;
  bool has_group(const std::string& path) const;
  std::vector<int64_t> dataset_shape(const std::string& path) const;  // {} for a scalar
  // The whole dataset, row-major, converted by HDF5 from its stored numeric type.
  std::vector<double> read_doubles(const std::string& path) const;
  std::vector<float> read_floats(const std::string& path) const;
  std::vector<int32_t> read_ints(const std::string& path) const;  // integer datasets only
  // The hyperslab [start, start + count) of a numeric dataset, row-major, converted by HDF5 to
  // `mem_type` (e.g. H5T_NATIVE_FLOAT from float64 data). Checksum filters are verified.
  void read_block(const std::string& path, const std::vector<int64_t>& start,
                  const std::vector<int64_t>& count, hid_t mem_type, void* out) const;
  // The mappings of a virtual dataset (in the order stored); empty for any other dataset.
  std::vector<VirtualSource> virtual_sources(const std::string& path) const;
  // Whether the dataset's filter pipeline holds HDF5's Fletcher32 checksum.
  bool has_checksum(const std::string& path) const;
  // The size in bytes of a floating-point dataset's elements (4 or 8); 0 for other types.
  size_t float_size(const std::string& path) const;
  // The names of a group's members (not full paths), in name order.
  std::vector<std::string> list(const std::string& group_path) const;

 private:
  enum class Kind { any, group, dataset };
  bool exists(const std::string& path, Kind kind) const;
  Hdf5Handle open_dataset(const std::string& path) const;
  Hdf5Handle open_attribute(const std::string& object_path, const std::string& name) const;
  // Refuses, before any data is read, a dataset whose element type is not a standard integer or
  // IEEE float, whose size overflows, whose chunks exceed its shape, or whose filter pipeline
  // holds a filter other than Fletcher32, deflate or shuffle (damaged or foreign metadata).
  void check_numeric_storage(const std::string& path, hid_t dataset, hid_t type) const;
  void read_dataset(const std::string& path, hid_t mem_type, bool integers_only, void* out,
                    size_t elements) const;
  std::string where(const std::string& what) const;

  std::string path_;
  Hdf5Handle file_;
};

}  // namespace tls
