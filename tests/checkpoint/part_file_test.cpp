// The part files' storage (checkpoint/part_file.h): our Fletcher32 equals the value HDF5's own
// filter appends to a chunk, for any length and content; chunks are runs of whole trailing rows
// of about 4 MiB; a part file written with direct chunk writes reads back exactly, its checksums
// verified by HDF5, whether the chunks were written in place or staged.
#include "checkpoint/part_file.h"

#include <gtest/gtest.h>
#include <hdf5.h>

#include <cstring>
#include <random>

#include "checkpoint/checkpoint_test_util.h"
#include "checkpoint/chunk_checksums.h"
#include "checkpoint/fletcher32.h"
#include "checkpoint/hdf5_reader.h"

namespace tls {
namespace {

// The 4 bytes HDF5's Fletcher32 filter stores after `bytes` bytes of `data` (one chunk).
uint32_t hdf5_fletcher32(const std::string& path, const std::vector<uint8_t>& data) {
  hid_t file = H5Fcreate(path.c_str(), H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT);
  const hsize_t n = data.size();
  hid_t space = H5Screate_simple(1, &n, nullptr);
  hid_t dcpl = H5Pcreate(H5P_DATASET_CREATE);
  H5Pset_chunk(dcpl, 1, &n);
  H5Pset_fletcher32(dcpl);
  hid_t d = H5Dcreate2(file, "x", H5T_NATIVE_UINT8, space, H5P_DEFAULT, dcpl, H5P_DEFAULT);
  H5Dwrite(d, H5T_NATIVE_UINT8, H5S_ALL, H5S_ALL, H5P_DEFAULT, data.data());
  const hsize_t origin = 0;
  hsize_t stored = 0;
  H5Dget_chunk_storage_size(d, &origin, &stored);
  std::vector<uint8_t> chunk(stored);
  uint32_t filters = 0;
  H5Dread_chunk(d, H5P_DEFAULT, &origin, &filters, chunk.data());
  H5Dclose(d);
  H5Pclose(dcpl);
  H5Sclose(space);
  H5Fclose(file);
  EXPECT_EQ(stored, n + 4);
  uint32_t sum = 0;
  for (int b = 0; b < 4; ++b) sum |= uint32_t{chunk[n + static_cast<size_t>(b)]} << (8 * b);
  return sum;
}

TEST(Fletcher32, EqualsHdf5sFilter) {
  testing::TempDir dir;
  std::mt19937 random(7);
  // 8192 bytes: one AVX2 run of 256 vectors; 65570: several runs and a scalar tail.
  for (size_t n : {1, 2, 3, 31, 32, 33, 719, 720, 721, 8191, 8192, 8193, 65570, 100000, 1 << 20,
                   (1 << 22) + 6}) {
    for (int fill : {0, 255, -1}) {
      std::vector<uint8_t> data(n);
      for (uint8_t& b : data) b = fill >= 0 ? static_cast<uint8_t>(fill) : random() & 0xff;
      EXPECT_EQ(fletcher32(data.data(), n), hdf5_fletcher32(dir.file("f.h5"), data))
          << n << " bytes of " << fill;
    }
  }
}

TEST(PartFile, ChunksAreRunsOfWholeTrailingRows) {
  EXPECT_EQ(part_chunk_shape({3}, 4), (std::vector<int64_t>{3}));
  EXPECT_EQ(part_chunk_shape({4 << 20}, 4), (std::vector<int64_t>{1 << 20}));
  EXPECT_EQ(part_chunk_shape({5000, 1024}, 4), (std::vector<int64_t>{1024, 1024}));
  EXPECT_EQ(part_chunk_shape({2, 4096, 512}, 4), (std::vector<int64_t>{1, 2048, 512}));
  EXPECT_EQ(part_chunk_shape({2, 1, 4096, 512}, 8), (std::vector<int64_t>{1, 1, 1024, 512}));
  EXPECT_EQ(part_chunk_shape({1, 2, 1, 1, 8}, 4), (std::vector<int64_t>{1, 2, 1, 1, 8}));
}

TEST(PartFile, ReadsBackExactlyWithItsChecksumsVerified) {
  testing::TempDir dir;
  const std::string path = dir.file("p.h5");
  // Edge chunks (1500 rows of 1000 floats: 1048 rows per 4 MiB chunk), a 5-d block, float64.
  std::vector<float> a(1500 * 1000 + 1);  // one float of slack for the checksums
  for (size_t i = 0; i < a.size(); ++i) a[i] = static_cast<float>(i) * 0.5f - 3.0f;
  std::vector<double> b(1 * 2 * 1 * 1 * 8 + 1);
  for (size_t i = 0; i < b.size(); ++i) b[i] = 1.0 / static_cast<double>(i + 1);
  {
    PartFileWriter w(path);
    char* pa = reinterpret_cast<char*>(a.data());
    char* pb = reinterpret_cast<char*>(b.data());
    w.write("/model/a", DType::f32, {1500, 1000}, pa,
            PartFileWriter::checksums(DType::f32, {1500, 1000}, pa));
    w.write("/optimizer/exp_avg/b", DType::f64, {1, 2, 1, 1, 8}, pb,
            PartFileWriter::checksums(DType::f64, {1, 2, 1, 1, 8}, pb));
    w.close();
  }
  const std::vector<float> a_before = a;
  a.pop_back();
  b.pop_back();
  EXPECT_EQ(std::vector<float>(a_before.begin(), a_before.end() - 1), a) << "the data changed";
  Hdf5Reader file(path);
  EXPECT_TRUE(file.has_checksum("/model/a"));
  EXPECT_EQ(file.read_floats("/model/a"), a);
  EXPECT_EQ(file.read_doubles("/optimizer/exp_avg/b"), b);
  std::vector<float> block(2 * 3);
  file.read_block("/model/a", {1498, 997}, {2, 3}, H5T_NATIVE_FLOAT, block.data());
  EXPECT_EQ(block[5], a[1499 * 1000 + 999]);
}

// A staged write (a held cache, staged by ChunkChecksums) stores the bytes and checksums an
// in-place write stores, for chunks within a row, chunks across rows and edge chunks, and never
// writes into its source.
TEST(PartFile, AStagedWriteStoresWhatAnInPlaceWriteStores) {
  testing::TempDir dir;
  for (const std::vector<int64_t>& shape :
       std::vector<std::vector<int64_t>>{{3, 1500, 1000}, {5, 7, 3}, {2, 1, 4096, 513}, {17}}) {
    int64_t n = 1;
    for (int64_t d : shape) n *= d;
    std::vector<float> data(static_cast<size_t>(n) + 1);
    for (size_t i = 0; i < data.size(); ++i) data[i] = static_cast<float>(i % 977) * 0.25f - 7.0f;
    const std::vector<float> source = data;
    const std::string in_place = dir.file("in_place.h5"), staged = dir.file("staged.h5");
    {
      PartFileWriter w(in_place);
      char* p = reinterpret_cast<char*>(data.data());
      w.write("/x", DType::f32, shape, p, PartFileWriter::checksums(DType::f32, shape, p));
      w.close();
    }
    {
      PartFileWriter w(staged);
      ChunkChecksums::Block block{nullptr, DType::f32, shape, {}};
      block.fill = [&](size_t at, size_t bytes, char* out) {
        ASSERT_LE(at + bytes, static_cast<size_t>(n) * sizeof(float));
        std::memcpy(out, reinterpret_cast<const char*>(source.data()) + at, bytes);
      };
      ChunkChecksums sums({block});
      w.write_staged("/x", DType::f32, shape, [&](size_t chunk) {
        const uint32_t sum = sums.get(0, chunk);
        return PartFileWriter::StagedChunk{sums.staged(0, chunk), sum};
      });
      w.close();
    }
    Hdf5Reader a(in_place), b(staged);
    EXPECT_TRUE(b.has_checksum("/x"));
    const std::vector<float> want(source.begin(), source.end() - 1);
    EXPECT_EQ(b.read_floats("/x"), want) << shape.size() << "-d";
    EXPECT_EQ(a.read_floats("/x"), want);
    // Same chunks, same stored bytes (checksums included).
    const std::vector<int64_t> chunk = part_chunk_shape(shape, sizeof(float));
    std::vector<hsize_t> origin(shape.size(), 0);
    std::vector<hsize_t> last(shape.size());
    for (size_t i = 0; i < shape.size(); ++i)
      last[i] = static_cast<hsize_t>((shape[i] - 1) / chunk[i] * chunk[i]);
    for (const std::vector<hsize_t>& at : {origin, last}) {
      std::vector<std::vector<uint8_t>> stored;
      for (const std::string& path : {in_place, staged}) {
        hid_t f = H5Fopen(path.c_str(), H5F_ACC_RDONLY, H5P_DEFAULT);
        hid_t d = H5Dopen2(f, "/x", H5P_DEFAULT);
        hsize_t size = 0;
        H5Dget_chunk_storage_size(d, at.data(), &size);
        std::vector<uint8_t> bytes(size);
        uint32_t filters = 0;
        H5Dread_chunk(d, H5P_DEFAULT, at.data(), &filters, bytes.data());
        H5Dclose(d);
        H5Fclose(f);
        stored.push_back(bytes);
      }
      EXPECT_FALSE(stored[0].empty());
      EXPECT_EQ(stored[0], stored[1]);
    }
  }
}

}  // namespace
}  // namespace tls
