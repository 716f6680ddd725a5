// Hdf5Reader: read-only access to one HDF5 file through the C API. HDF5's own error printing is
// silenced while we probe (a missing object is reported by us, once, with the file and object
// named), and every identifier is closed by an Hdf5Handle.
#include "checkpoint/hdf5_reader.h"

#include <algorithm>
#include <fstream>
#include <sstream>

#include "kernels/error.h"

namespace tls {
namespace {

// "/a/b/c" -> {"a", "b", "c"}.
std::vector<std::string> split_path(const std::string& path) {
  std::vector<std::string> parts;
  std::string part;
  std::istringstream in(path);
  while (std::getline(in, part, '/')) {
    if (!part.empty()) parts.push_back(part);
  }
  return parts;
}

int64_t element_count(const std::vector<int64_t>& shape) {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}

// The numeric types our files hold (and HDF5 converts without surprises): two's-complement or
// unsigned integers of 1, 2, 4 or 8 bytes using all their bits, and IEEE 754 binary32 or
// binary64 in either byte order. Damaged type messages (odd sizes, precisions, offsets or float
// fields) are refused before HDF5 is asked to convert from them.
bool standard_integer(hid_t type) {
  if (H5Tget_class(type) != H5T_INTEGER) return false;
  const size_t size = H5Tget_size(type);
  return (size == 1 || size == 2 || size == 4 || size == 8) && H5Tget_precision(type) == 8 * size &&
         H5Tget_offset(type) == 0;
}

bool standard_float(hid_t type) {
  if (H5Tget_class(type) != H5T_FLOAT) return false;
  for (hid_t ieee : {H5T_IEEE_F32LE, H5T_IEEE_F32BE, H5T_IEEE_F64LE, H5T_IEEE_F64BE})
    if (H5Tequal(type, ieee) > 0) return true;
  return false;
}

// Fixed-size string attributes longer than this are refused (ours are a few bytes).
constexpr size_t kMaxStringAttribute = 1 << 16;

herr_t innermost_error(unsigned, const H5E_error2_t* error, void* out) {
  if (error->desc != nullptr) *static_cast<std::string*>(out) = error->desc;
  return 0;
}

}  // namespace

std::string hdf5_error_detail() {
  std::string detail;
  H5Ewalk2(H5E_DEFAULT, H5E_WALK_DOWNWARD, innermost_error, &detail);
  return printable(detail, 200);  // HDF5's text may quote names from the damaged file
}

Hdf5Handle& Hdf5Handle::operator=(Hdf5Handle&& other) noexcept {
  if (this != &other) {
    reset();
    id_ = other.id_;
    close_ = other.close_;
    other.id_ = -1;
  }
  return *this;
}

void Hdf5Handle::reset() {
  if (id_ >= 0 && close_ != nullptr) close_(id_);
  id_ = -1;
}

Hdf5Reader::Hdf5Reader(const std::string& path) : path_(path) {
  if (!std::ifstream(path, std::ios::binary).good()) {
    throw Error("cannot open HDF5 file '" + path + "': no such file or not readable");
  }
  QuietHdf5 quiet;
  hid_t id = H5Fopen(path.c_str(), H5F_ACC_RDONLY, H5P_DEFAULT);
  if (id < 0) {
    std::string detail = hdf5_error_detail();  // before the next call clears the stack
    if (H5Fis_hdf5(path.c_str()) <= 0) throw Error("'" + path + "' is not an HDF5 file");
    throw Error("HDF5 file '" + path + "' cannot be opened: it is truncated or damaged" +
                (detail.empty() ? "" : " (" + detail + ")"));
  }
  file_ = Hdf5Handle(id, H5Fclose);
}

std::string Hdf5Reader::where(const std::string& what) const {
  return "HDF5 file '" + path_ + "': " + what;
}

bool Hdf5Reader::exists(const std::string& path, Kind kind) const {
  QuietHdf5 quiet;
  std::string prefix;
  for (const std::string& part : split_path(path)) {
    prefix += "/" + part;
    if (H5Lexists(file_.get(), prefix.c_str(), H5P_DEFAULT) <= 0) return false;
  }
  Hdf5Handle object(H5Oopen(file_.get(), prefix.empty() ? "/" : prefix.c_str(), H5P_DEFAULT),
                    H5Oclose);
  if (!object.valid()) return false;
  H5I_type_t type = H5Iget_type(object.get());
  if (kind == Kind::group) return type == H5I_GROUP;
  if (kind == Kind::dataset) return type == H5I_DATASET;
  return true;
}

bool Hdf5Reader::has_dataset(const std::string& path) const { return exists(path, Kind::dataset); }

bool Hdf5Reader::has_group(const std::string& path) const { return exists(path, Kind::group); }

bool Hdf5Reader::has_attribute(const std::string& object_path, const std::string& name) const {
  if (!exists(object_path, Kind::any)) return false;
  QuietHdf5 quiet;
  return H5Aexists_by_name(file_.get(), object_path.c_str(), name.c_str(), H5P_DEFAULT) > 0;
}

Hdf5Handle Hdf5Reader::open_attribute(const std::string& object_path,
                                      const std::string& name) const {
  if (!has_attribute(object_path, name)) {
    throw Error(where("no attribute '" + name + "' on '" + object_path + "'"));
  }
  Hdf5Handle attr(
      H5Aopen_by_name(file_.get(), object_path.c_str(), name.c_str(), H5P_DEFAULT, H5P_DEFAULT),
      H5Aclose);
  if (!attr.valid()) throw Error(where("cannot open attribute '" + name + "' on " + object_path));
  Hdf5Handle space(H5Aget_space(attr.get()), H5Sclose);
  if (H5Sget_simple_extent_npoints(space.get()) != 1) {
    throw Error(where("attribute '" + name + "' on '" + object_path + "' is not a scalar"));
  }
  return attr;
}

int64_t Hdf5Reader::int_attribute(const std::string& object_path, const std::string& name) const {
  Hdf5Handle attr = open_attribute(object_path, name);
  Hdf5Handle type(H5Aget_type(attr.get()), H5Tclose);
  if (!standard_integer(type.get())) {
    throw Error(where("attribute '" + name + "' on '" + object_path + "' is not an integer"));
  }
  int64_t value = 0;
  if (H5Aread(attr.get(), H5T_NATIVE_INT64, &value) < 0) {
    throw Error(where("cannot read attribute '" + name + "' on '" + object_path + "'"));
  }
  return value;
}

double Hdf5Reader::double_attribute(const std::string& object_path, const std::string& name) const {
  Hdf5Handle attr = open_attribute(object_path, name);
  Hdf5Handle type(H5Aget_type(attr.get()), H5Tclose);
  if (!standard_integer(type.get()) && !standard_float(type.get())) {
    throw Error(where("attribute '" + name + "' on '" + object_path + "' is not a number"));
  }
  double value = 0;
  if (H5Aread(attr.get(), H5T_NATIVE_DOUBLE, &value) < 0) {
    throw Error(where("cannot read attribute '" + name + "' on '" + object_path + "'"));
  }
  return value;
}

std::string Hdf5Reader::string_attribute(const std::string& object_path,
                                         const std::string& name) const {
  Hdf5Handle attr = open_attribute(object_path, name);
  Hdf5Handle type(H5Aget_type(attr.get()), H5Tclose);
  if (H5Tget_class(type.get()) != H5T_STRING) {
    throw Error(where("attribute '" + name + "' on '" + object_path + "' is not a string"));
  }
  Hdf5Handle mem(H5Tcopy(H5T_C_S1), H5Tclose);
  std::string value;
  if (H5Tis_variable_str(type.get()) > 0) {
    H5Tset_size(mem.get(), H5T_VARIABLE);
    char* text = nullptr;
    if (H5Aread(attr.get(), mem.get(), &text) < 0) {
      throw Error(where("cannot read attribute '" + name + "' on '" + object_path + "'"));
    }
    if (text != nullptr) value = text;
    H5free_memory(text);
  } else {
    size_t size = H5Tget_size(type.get());
    if (size == 0 || size > kMaxStringAttribute) {
      throw Error(where("attribute '" + name + "' on '" + object_path + "' has a string size of " +
                        std::to_string(size) + " bytes"));
    }
    H5Tset_size(mem.get(), size);
    H5Tset_strpad(mem.get(), H5T_STR_NULLPAD);
    std::string buffer(size, '\0');
    if (H5Aread(attr.get(), mem.get(), buffer.data()) < 0) {
      throw Error(where("cannot read attribute '" + name + "' on '" + object_path + "'"));
    }
    value = buffer.substr(0, buffer.find('\0'));
    while (!value.empty() && value.back() == ' ') value.pop_back();  // space-padded strings
  }
  return value;
}

Hdf5Handle Hdf5Reader::open_dataset(const std::string& path) const {
  if (!has_dataset(path)) throw Error(where("no dataset '" + path + "'"));
  Hdf5Handle dataset(H5Dopen2(file_.get(), path.c_str(), H5P_DEFAULT), H5Dclose);
  if (!dataset.valid()) throw Error(where("cannot open dataset '" + path + "'"));
  return dataset;
}

std::vector<int64_t> Hdf5Reader::dataset_shape(const std::string& path) const {
  Hdf5Handle dataset = open_dataset(path);
  Hdf5Handle space(H5Dget_space(dataset.get()), H5Sclose);
  int rank = H5Sget_simple_extent_ndims(space.get());
  if (rank < 0) throw Error(where("cannot read the shape of dataset '" + path + "'"));
  std::vector<hsize_t> dims(static_cast<size_t>(rank));
  H5Sget_simple_extent_dims(space.get(), dims.data(), nullptr);
  return std::vector<int64_t>(dims.begin(), dims.end());
}

void Hdf5Reader::read_dataset(const std::string& path, hid_t mem_type, bool integers_only,
                              void* out, size_t elements) const {
  Hdf5Handle dataset = open_dataset(path);
  Hdf5Handle type(H5Dget_type(dataset.get()), H5Tclose);
  H5T_class_t cls = H5Tget_class(type.get());
  if (cls != H5T_INTEGER && (integers_only || cls != H5T_FLOAT)) {
    throw Error(where("dataset '" + path + "' holds " +
                      (cls == H5T_FLOAT ? "floating-point numbers" : "non-numeric data") +
                      ", expected " + (integers_only ? "integers" : "numbers")));
  }
  check_numeric_storage(path, dataset.get(), type.get());
  if (elements == 0) return;
  QuietHdf5 quiet;
  if (H5Dread(dataset.get(), mem_type, H5S_ALL, H5S_ALL, H5P_DEFAULT, out) < 0) {
    std::string detail = hdf5_error_detail();
    throw Error(where("cannot read dataset '" + path + "': damaged data" +
                      (detail.empty() ? "" : " (" + detail + ")")));
  }
}

std::vector<double> Hdf5Reader::read_doubles(const std::string& path) const {
  std::vector<double> values(static_cast<size_t>(element_count(dataset_shape(path))));
  read_dataset(path, H5T_NATIVE_DOUBLE, false, values.data(), values.size());
  return values;
}

std::vector<float> Hdf5Reader::read_floats(const std::string& path) const {
  std::vector<float> values(static_cast<size_t>(element_count(dataset_shape(path))));
  read_dataset(path, H5T_NATIVE_FLOAT, false, values.data(), values.size());
  return values;
}

std::vector<int32_t> Hdf5Reader::read_ints(const std::string& path) const {
  std::vector<int32_t> values(static_cast<size_t>(element_count(dataset_shape(path))));
  read_dataset(path, H5T_NATIVE_INT32, true, values.data(), values.size());
  return values;
}

void Hdf5Reader::read_block(const std::string& path, const std::vector<int64_t>& start,
                            const std::vector<int64_t>& count, hid_t mem_type, void* out) const {
  Hdf5Handle dataset = open_dataset(path);
  Hdf5Handle type(H5Dget_type(dataset.get()), H5Tclose);
  H5T_class_t cls = H5Tget_class(type.get());
  if (cls != H5T_INTEGER && cls != H5T_FLOAT) {
    throw Error(where("dataset '" + path + "' holds non-numeric data"));
  }
  check_numeric_storage(path, dataset.get(), type.get());
  Hdf5Handle file_space(H5Dget_space(dataset.get()), H5Sclose);
  if (static_cast<size_t>(H5Sget_simple_extent_ndims(file_space.get())) != start.size() ||
      start.size() != count.size()) {
    throw Error(where("dataset '" + path + "': the block to read has the wrong rank"));
  }
  const std::vector<hsize_t> first(start.begin(), start.end()), n(count.begin(), count.end());
  if (element_count(count) == 0) return;
  QuietHdf5 quiet;
  Hdf5Handle mem_space(H5Screate_simple(static_cast<int>(n.size()), n.data(), nullptr), H5Sclose);
  if (!n.empty() && H5Sselect_hyperslab(file_space.get(), H5S_SELECT_SET, first.data(), nullptr,
                                        n.data(), nullptr) < 0) {
    throw Error(where("dataset '" + path + "': the block to read lies outside the dataset"));
  }
  if (H5Dread(dataset.get(), mem_type, mem_space.get(), file_space.get(), H5P_DEFAULT, out) < 0) {
    std::string detail = hdf5_error_detail();
    throw Error(where("cannot read dataset '" + path + "': damaged data" +
                      (detail.empty() ? "" : " (" + detail + ")")));
  }
}

bool Hdf5Reader::has_checksum(const std::string& path) const {
  Hdf5Handle dataset = open_dataset(path);
  Hdf5Handle dcpl(H5Dget_create_plist(dataset.get()), H5Pclose);
  const int n = H5Pget_nfilters(dcpl.get());
  for (int i = 0; i < n; ++i) {
    unsigned flags = 0;
    size_t n_values = 0;
    if (H5Pget_filter2(dcpl.get(), static_cast<unsigned>(i), &flags, &n_values, nullptr, 0, nullptr,
                       nullptr) == H5Z_FILTER_FLETCHER32) {
      return true;
    }
  }
  return false;
}

size_t Hdf5Reader::float_size(const std::string& path) const {
  Hdf5Handle dataset = open_dataset(path);
  Hdf5Handle type(H5Dget_type(dataset.get()), H5Tclose);
  return H5Tget_class(type.get()) == H5T_FLOAT ? H5Tget_size(type.get()) : 0;
}

void Hdf5Reader::check_numeric_storage(const std::string& path, hid_t dataset, hid_t type) const {
  const std::string what = "dataset '" + path + "'";
  if (!standard_integer(type) && !standard_float(type)) {
    throw Error(where(what + " holds numbers of an unsupported type (not a 1/2/4/8-byte integer "
                             "or an IEEE float32/float64)"));
  }
  Hdf5Handle space(H5Dget_space(dataset), H5Sclose);
  const int rank = H5Sget_simple_extent_ndims(space.get());
  if (rank < 0) throw Error(where("cannot read the shape of " + what));
  std::vector<hsize_t> dims(static_cast<size_t>(rank));
  H5Sget_simple_extent_dims(space.get(), dims.data(), nullptr);
  // Elements times element size must fit in memory's address range (and in a size_t).
  const hsize_t element_size = H5Tget_size(type);
  hsize_t bytes = element_size;
  for (hsize_t d : dims) {
    if (d != 0 && bytes > (hsize_t{1} << 62) / d) throw Error(where(what + " is impossibly large"));
    bytes *= d;
  }
  Hdf5Handle dcpl(H5Dget_create_plist(dataset), H5Pclose);
  if (!dcpl.valid()) throw Error(where("cannot read the storage properties of " + what));
  if (H5Pget_layout(dcpl.get()) == H5D_CHUNKED) {
    // A chunk larger than the dataset (HDF5 allocates whole chunks) means damaged metadata.
    std::vector<hsize_t> chunk(static_cast<size_t>(rank));
    if (H5Pget_chunk(dcpl.get(), rank, chunk.data()) != rank)
      throw Error(where("cannot read the chunk shape of " + what));
    for (size_t i = 0; i < chunk.size(); ++i)
      if (chunk[i] == 0 || chunk[i] > std::max<hsize_t>(dims[i], 1))
        throw Error(where(what + " has a chunk shape larger than the dataset (damaged metadata)"));
  }
  // Only the filters our writer (Fletcher32) or common tools (deflate, shuffle) use.
  const int n = H5Pget_nfilters(dcpl.get());
  if (n < 0) throw Error(where("cannot read the filters of " + what));
  for (int i = 0; i < n; ++i) {
    unsigned flags = 0;
    size_t n_values = 0;
    const H5Z_filter_t filter = H5Pget_filter2(dcpl.get(), static_cast<unsigned>(i), &flags,
                                               &n_values, nullptr, 0, nullptr, nullptr);
    if (filter != H5Z_FILTER_FLETCHER32 && filter != H5Z_FILTER_DEFLATE &&
        filter != H5Z_FILTER_SHUFFLE)
      throw Error(where(what + " uses HDF5 filter " + std::to_string(filter) +
                        " (only Fletcher32, deflate and shuffle are read)"));
  }
}

std::vector<VirtualSource> Hdf5Reader::virtual_sources(const std::string& path) const {
  Hdf5Handle dataset = open_dataset(path);
  Hdf5Handle dcpl(H5Dget_create_plist(dataset.get()), H5Pclose);
  if (!dcpl.valid() || H5Pget_layout(dcpl.get()) != H5D_VIRTUAL) return {};
  QuietHdf5 quiet;
  const std::string what = "the virtual dataset '" + path + "'";
  size_t n = 0;
  if (H5Pget_virtual_count(dcpl.get(), &n) < 0) throw Error(where("cannot read " + what));
  std::vector<VirtualSource> sources(n);
  for (size_t i = 0; i < n; ++i) {
    VirtualSource& s = sources[i];
    for (auto [get, out] : {std::pair{&H5Pget_virtual_filename, &s.file},
                            std::pair{&H5Pget_virtual_dsetname, &s.dataset}}) {
      const ssize_t size = get(dcpl.get(), i, nullptr, 0);
      if (size < 0 || size > 4096) throw Error(where("cannot read the mappings of " + what));
      out->assign(static_cast<size_t>(size) + 1, '\0');
      get(dcpl.get(), i, out->data(), out->size());
      out->resize(static_cast<size_t>(size));
    }
    Hdf5Handle space(H5Pget_virtual_vspace(dcpl.get(), i), H5Sclose);
    const int rank = space.valid() ? H5Sget_simple_extent_ndims(space.get()) : -1;
    if (rank < 0) throw Error(where("cannot read the mappings of " + what));
    std::vector<hsize_t> first(static_cast<size_t>(rank)), last(static_cast<size_t>(rank));
    if (rank > 0 && H5Sget_select_bounds(space.get(), first.data(), last.data()) < 0)
      throw Error(where("cannot read the mappings of " + what));
    for (int d = 0; d < rank; ++d) {
      s.start.push_back(static_cast<int64_t>(first[static_cast<size_t>(d)]));
      s.count.push_back(
          static_cast<int64_t>(last[static_cast<size_t>(d)] - first[static_cast<size_t>(d)] + 1));
    }
  }
  return sources;
}

std::vector<std::string> Hdf5Reader::list(const std::string& group_path) const {
  if (!has_group(group_path)) throw Error(where("no group '" + group_path + "'"));
  Hdf5Handle group(H5Gopen2(file_.get(), group_path.c_str(), H5P_DEFAULT), H5Gclose);
  H5G_info_t info;
  if (!group.valid() || H5Gget_info(group.get(), &info) < 0) {
    throw Error(where("cannot read group '" + group_path + "'"));
  }
  std::vector<std::string> names;
  for (hsize_t i = 0; i < info.nlinks; ++i) {
    ssize_t size = H5Lget_name_by_idx(group.get(), ".", H5_INDEX_NAME, H5_ITER_INC, i, nullptr, 0,
                                      H5P_DEFAULT);
    if (size < 0) throw Error(where("cannot list group '" + group_path + "'"));
    std::string name(static_cast<size_t>(size) + 1, '\0');
    H5Lget_name_by_idx(group.get(), ".", H5_INDEX_NAME, H5_ITER_INC, i, name.data(), name.size(),
                       H5P_DEFAULT);
    name.resize(static_cast<size_t>(size));
    names.push_back(name);
  }
  return names;
}

}  // namespace tls
