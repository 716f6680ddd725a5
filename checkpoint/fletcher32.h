// HDF5's Fletcher32 checksum (H5_checksum_fletcher32, the value the Fletcher32 filter appends to a
// chunk, little-endian), computed fast: the part writer stores chunks with H5Dwrite_chunk and
// appends this value itself, so HDF5 (and h5py) verify them on read as if the filter had written
// them.
#pragma once

#include <cstddef>
#include <cstdint>

namespace tls {

uint32_t fletcher32(const void* data, size_t bytes);

}  // namespace tls
