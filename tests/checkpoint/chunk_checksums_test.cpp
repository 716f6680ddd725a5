// The part writer's checksum thread (checkpoint/chunk_checksums.h): the same checksums as
// PartFileWriter::checksums for every chunk of every block; chunk i is handed out only once chunk
// i + 1 is summed (writing chunk i overwrites chunk i + 1's first bytes for a moment); a part
// written through it verifies under HDF5; destroying it mid-way stops the thread. Also the
// snapshot buffers the checksums read (checkpoint/snapshot_buffer.h).
#include "checkpoint/chunk_checksums.h"

#include <gtest/gtest.h>

#include <chrono>
#include <cstdint>
#include <cstring>
#include <random>
#include <thread>

#include "checkpoint/checkpoint_test_util.h"
#include "checkpoint/hdf5_reader.h"
#include "checkpoint/snapshot_buffer.h"

namespace tls {
namespace {

std::vector<float> random_floats(size_t n, unsigned seed) {
  std::mt19937 random(seed);
  std::uniform_real_distribution<float> u(-1, 1);
  std::vector<float> v(n + 1);  // one float of slack for the writer's checksums
  for (float& x : v) x = u(random);
  return v;
}

TEST(ChunkChecksums, EqualThePartWritersForEveryChunk) {
  // 2500 rows of 1000 floats: two 4 MiB chunks and an edge chunk; a small block; float64.
  std::vector<float> a = random_floats(2500 * 1000, 1), b = random_floats(7, 2);
  std::vector<double> c(3 * 2 * 300000 + 1, 0.25);
  const char* pa = reinterpret_cast<const char*>(a.data());
  const char* pb = reinterpret_cast<const char*>(b.data());
  const char* pc = reinterpret_cast<const char*>(c.data());
  ChunkChecksums sums({{pa, DType::f32, {2500, 1000}, {}},
                       {pb, DType::f32, {7}, {}},
                       {pc, DType::f64, {3, 2, 300000}, {}}});
  const std::vector<std::vector<uint32_t>> want = {
      PartFileWriter::checksums(DType::f32, {2500, 1000}, pa),
      PartFileWriter::checksums(DType::f32, {7}, pb),
      PartFileWriter::checksums(DType::f64, {3, 2, 300000}, pc)};
  ASSERT_EQ(want[0].size(), 3u);
  ASSERT_EQ(want[2].size(), 6u);
  for (size_t i = 0; i < want.size(); ++i)
    for (size_t k = 0; k < want[i].size(); ++k) EXPECT_EQ(sums.get(i, k), want[i][k]) << i << k;
}

TEST(ChunkChecksums, AChunkIsHandedOutOnlyOnceTheNextIsSummed) {
  std::vector<float> a = random_floats(1048 * 1000 * 4, 3);  // four whole 4 MiB chunks
  char* pa = reinterpret_cast<char*>(a.data());
  const std::vector<uint32_t> want = PartFileWriter::checksums(DType::f32, {4192, 1000}, pa);
  ChunkChecksums sums({{pa, DType::f32, {4192, 1000}, {}}});
  const size_t chunk = 1048 * 1000 * sizeof(float);
  for (size_t k = 0; k < 4; ++k) {
    EXPECT_EQ(sums.get(0, k), want[k]) << k;
    // As the writer does: chunk k's checksum over the next chunk's first 4 bytes, then back.
    char saved[4];
    std::memcpy(saved, pa + (k + 1) * chunk, 4);
    std::memset(pa + (k + 1) * chunk, 0x5a, 4);
    std::this_thread::sleep_for(std::chrono::milliseconds(5));  // time to sum the bytes changed
    std::memcpy(pa + (k + 1) * chunk, saved, 4);
  }
}

TEST(ChunkChecksums, APartWrittenThroughItVerifiesUnderHdf5) {
  testing::TempDir dir;
  const std::string path = dir.file("p.h5");
  std::vector<float> a = random_floats(3000 * 1000, 4), b = random_floats(2 * 2100 * 512, 5);
  std::vector<float> a0(a.begin(), a.end() - 1), b0(b.begin(), b.end() - 1);
  {
    PartFileWriter w(path);
    char* pa = reinterpret_cast<char*>(a.data());
    char* pb = reinterpret_cast<char*>(b.data());
    ChunkChecksums sums({{pa, DType::f32, {3000, 1000}, {}}, {pb, DType::f32, {2, 2100, 512}, {}}});
    w.write("/model/a", DType::f32, {3000, 1000}, pa, [&](size_t k) { return sums.get(0, k); });
    w.write("/model/b", DType::f32, {2, 2100, 512}, pb, [&](size_t k) { return sums.get(1, k); });
    w.close();
  }
  Hdf5Reader file(path);
  EXPECT_TRUE(file.has_checksum("/model/a"));
  EXPECT_EQ(file.read_floats("/model/a"), a0);  // throws on a checksum that does not match
  EXPECT_EQ(file.read_floats("/model/b"), b0);
}

TEST(ChunkChecksums, StopsWhenDestroyedMidway) {
  std::vector<float> a = random_floats(1048 * 1000 * 8, 6);
  {
    ChunkChecksums sums({{reinterpret_cast<const char*>(a.data()), DType::f32, {8384, 1000}, {}}});
    EXPECT_NE(sums.get(0, 0), 0u);
  }  // a failed write leaves the rest unsummed: the destructor returns
  SUCCEED();
}

TEST(SnapshotBuffer, LargeBuffersAreAlignedToHugePagesAndWritable) {
  SnapshotBuffer big = snapshot_buffer(3 * kHugeBytes + 4);
  EXPECT_EQ(reinterpret_cast<uintptr_t>(big.get()) % kHugeBytes, 0u);
  std::memset(big.get(), 7, 3 * kHugeBytes + 4);
  EXPECT_EQ(big[3 * kHugeBytes + 3], 7);
  SnapshotBuffer small = snapshot_buffer(10);
  ASSERT_NE(small, nullptr);
  std::memset(small.get(), 1, 10);
  EXPECT_NE(snapshot_buffer(0), nullptr);
}

}  // namespace
}  // namespace tls
