// ByteCorpus and ByteStream on small temporary files with known bytes: the row-stream layout and
// the evaluation stream of docs/DESIGN.md section 4, and the refusals of unusable corpora.
#include "training/byte_corpus.h"

#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "kernels/error.h"
#include "support/temp_files.h"

namespace tls {
namespace {

// Byte k of the file is k mod 251 (so every position is recognisable).
std::string counting_bytes(int n) {
  std::string s(static_cast<size_t>(n), '\0');
  for (int k = 0; k < n; ++k) s[k] = static_cast<char>(k % 251);
  return s;
}

template <class F>
std::string error_of(F f) {
  try {
    f();
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

TEST(ByteCorpusTest, CutsRowsAndCountsUpdates) {
  testing::TempFile file(counting_bytes(103));
  ByteCorpus corpus(file.path(), 4, 6);  // n = 25 bytes per row, 3 bytes unused
  EXPECT_EQ(corpus.size(), 103);
  EXPECT_EQ(corpus.row_len(), 25);
  EXPECT_EQ(corpus.blocks_per_epoch(), 4);  // floor(24 / 6)
  ByteCorpus exact(file.path(), 4, 8);      // floor(24 / 8) = 3: the last block ends at byte 24
  EXPECT_EQ(exact.blocks_per_epoch(), 3);
}

TEST(ByteCorpusTest, BatchReadsBlockIOfEveryRow) {
  testing::TempFile file(counting_bytes(103));
  ByteCorpus corpus(file.path(), 4, 6);
  std::vector<int32_t> inputs, targets;
  for (int64_t i = 0; i < corpus.blocks_per_epoch(); ++i) {
    corpus.batch(i, 0, 4, 0, 6, inputs, targets);
    ASSERT_EQ(inputs.size(), 24u);
    ASSERT_EQ(targets.size(), 24u);
    for (int64_t b = 0; b < 4; ++b) {
      for (int64_t t = 0; t < 6; ++t) {
        int64_t byte = b * 25 + i * 6 + t;
        EXPECT_EQ(inputs[b * 6 + t], byte % 251);
        EXPECT_EQ(targets[b * 6 + t], (byte + 1) % 251);
      }
    }
  }
}

TEST(ByteCorpusTest, BatchReadsARowRangeAndASequenceSlice) {
  testing::TempFile file(counting_bytes(103));
  ByteCorpus corpus(file.path(), 4, 6);
  std::vector<int32_t> inputs, targets;
  corpus.batch(2, 1, 2, 3, 3, inputs, targets);  // rows 1..2, positions 3..5 of update 2
  ASSERT_EQ(inputs, (std::vector<int32_t>{25 + 15, 25 + 16, 25 + 17, 50 + 15, 50 + 16, 50 + 17}));
  ASSERT_EQ(targets, (std::vector<int32_t>{25 + 16, 25 + 17, 25 + 18, 50 + 16, 50 + 17, 50 + 18}));
  // The last target of the last update of the last row is still inside that row.
  corpus.batch(3, 3, 1, 0, 6, inputs, targets);
  EXPECT_EQ(targets.back(), 3 * 25 + 3 * 6 + 6);
}

// A zigzag sp rank's runs of positions (parallel/sequence_layout.h): T = 8, sp = 2, rank 0 holds
// positions 0..1 and 6..7, in that order, for every row.
TEST(ByteCorpusTest, BatchReadsARanksRunsOfPositionsInTheirOrder) {
  testing::TempFile file(counting_bytes(103));
  ByteCorpus corpus(file.path(), 2, 8);  // n = 51 bytes per row
  const std::vector<Segment> runs = SequenceLayout(SpOrder::zigzag, 2, 8).segments(0);
  std::vector<int32_t> inputs, targets;
  corpus.batch(1, 0, 2, runs, inputs, targets);
  ASSERT_EQ(inputs, (std::vector<int32_t>{8, 9, 14, 15, 51 + 8, 51 + 9, 51 + 14, 51 + 15}));
  ASSERT_EQ(targets, (std::vector<int32_t>{9, 10, 15, 16, 51 + 9, 51 + 10, 51 + 15, 51 + 16}));
}

TEST(ByteCorpusTest, BytesAbove127AreNonNegative) {
  std::string bytes(40, '\0');
  for (int k = 0; k < 40; ++k) bytes[k] = static_cast<char>(200 + k % 50);
  testing::TempFile file(bytes);
  ByteCorpus corpus(file.path(), 1, 8);
  std::vector<int32_t> inputs, targets;
  corpus.batch(0, 0, 1, 0, 8, inputs, targets);
  EXPECT_EQ(inputs[0], 200);
  EXPECT_EQ(inputs[7], 207);
  EXPECT_EQ(targets[7], 208);
}

TEST(ByteCorpusTest, RefusesOutOfRangeBatches) {
  testing::TempFile file(counting_bytes(103));
  ByteCorpus corpus(file.path(), 4, 6);
  std::vector<int32_t> inputs, targets;
  EXPECT_THROW(corpus.batch(4, 0, 4, 0, 6, inputs, targets), Error);
  EXPECT_THROW(corpus.batch(0, 3, 2, 0, 6, inputs, targets), Error);
  EXPECT_THROW(corpus.batch(0, 0, 4, 4, 3, inputs, targets), Error);
}

TEST(ByteCorpusTest, RefusesMissingEmptyAndShortCorpora) {
  std::string missing = "/nonexistent/tls_corpus.txt";
  std::string m = error_of([&] { ByteCorpus c(missing, 1, 4); });
  EXPECT_NE(m.find(missing), std::string::npos) << m;

  testing::TempFile empty("");
  m = error_of([&] { ByteCorpus c(empty.path(), 1, 4); });
  EXPECT_NE(m.find(empty.path()), std::string::npos) << m;
  EXPECT_NE(m.find("empty"), std::string::npos) << m;

  testing::TempFile small(counting_bytes(800));
  m = error_of([&] { ByteCorpus c(small.path(), 8, 100); });
  EXPECT_NE(m.find(small.path()), std::string::npos) << m;
  EXPECT_NE(m.find("--batch-size 8 rows of 100 bytes each are shorter than one block of "
                   "--tokens-per-sample 100 + 1"),
            std::string::npos)
      << m;
  EXPECT_NO_THROW(ByteCorpus(small.path(), 8, 99));  // exactly one block per row
}

TEST(ByteStreamTest, PredictsEveryByteAfterTheFirstOnce) {
  testing::TempFile file(counting_bytes(23));  // 22 targets: blocks of 8, 8, 6
  ByteStream stream(file.path(), 8);
  EXPECT_EQ(stream.num_targets(), 22);
  ASSERT_EQ(stream.num_blocks(), 3);
  std::vector<int32_t> inputs, targets;
  int64_t expected_next = 1;
  for (int64_t i = 0; i < stream.num_blocks(); ++i) {
    int64_t length = stream.block(i, inputs, targets);
    EXPECT_EQ(length, i < 2 ? 8 : 6);
    ASSERT_EQ(inputs.size(), static_cast<size_t>(length));
    ASSERT_EQ(targets.size(), static_cast<size_t>(length));
    for (int64_t t = 0; t < length; ++t) {
      EXPECT_EQ(inputs[t], i * 8 + t);
      EXPECT_EQ(targets[t], expected_next++);
    }
  }
  EXPECT_EQ(expected_next, 23);
  EXPECT_THROW(stream.block(3, inputs, targets), Error);
}

TEST(ByteStreamTest, ExactMultipleHasNoShortBlock) {
  testing::TempFile file(counting_bytes(17));
  ByteStream stream(file.path(), 8);
  ASSERT_EQ(stream.num_blocks(), 2);
  std::vector<int32_t> inputs, targets;
  EXPECT_EQ(stream.block(1, inputs, targets), 8);
  EXPECT_EQ(targets.back(), 16);
}

TEST(ByteStreamTest, RefusesMissingAndOneByteFiles) {
  EXPECT_THROW(ByteStream("/nonexistent/valid.txt", 8), Error);
  testing::TempFile one("x");
  std::string m = error_of([&] { ByteStream s(one.path(), 8); });
  EXPECT_NE(m.find(one.path()), std::string::npos) << m;
}

TEST(ByteCorpusTest, ReadsTheEnglishTestCorpus) {
  ByteCorpus corpus(std::string(TLS_TEST_DATA_DIR) + "/english.txt", 4, 256);
  EXPECT_GT(corpus.size(), 60000);
  EXPECT_LT(corpus.size(), 200000);
  EXPECT_GT(corpus.blocks_per_epoch(), 20);
  std::vector<int32_t> inputs, targets;
  corpus.batch(0, 0, 1, 0, 8, inputs, targets);
  std::string start(inputs.begin(), inputs.end());
  EXPECT_EQ(start, "        ");  // the GPL-3 text starts with an indented title
  corpus.batch(corpus.blocks_per_epoch() - 1, 0, 4, 0, 256, inputs, targets);
  for (int32_t b : inputs) ASSERT_TRUE(b > 0 && b < 128) << b;  // plain ASCII
}

}  // namespace
}  // namespace tls
