// launch/prepare_enwik8.sh and launch/prepare_text8.sh on small synthetic archives (the real ones
// are not shipped): the split is the standard one (the last 2 x held-out bytes to valid and test,
// the rest to train, byte for byte), each part's sha256 is printed, and a wrong archive, a
// missing member or a truncated file is refused with one line and no output left behind.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <string>

#include "support/process.h"

namespace tls::testing {
namespace {

namespace fs = std::filesystem;

// An archive `zip_path` holding one member `member` of `bytes` pseudo-random bytes (returned).
std::string make_archive(const std::string& zip_path, const std::string& member, int bytes) {
  std::string data(static_cast<size_t>(bytes), '\0');
  uint32_t x = 12345;
  for (char& c : data) {
    x = x * 1664525u + 1013904223u;
    c = static_cast<char>(x >> 24);
  }
  const std::string raw = zip_path + ".member";
  std::ofstream(raw, std::ios::binary) << data;
  const ProcessResult r = run_command(
      "python3 -c 'import sys, zipfile; "
      "zipfile.ZipFile(sys.argv[1], \"w\").write(sys.argv[2], "
      "sys.argv[3])' " +
      zip_path + " " + raw + " " + member);
  EXPECT_EQ(r.exit_code, 0) << r.output;
  fs::remove(raw);
  return data;
}

struct Script {
  const char* script;
  const char* member;
};

class PrepareData : public ::testing::TestWithParam<Script> {};

TEST_P(PrepareData, CutsTheStandardSplitAndPrintsChecksums) {
  const std::string dir = scratch_dir(std::string("prepare_") + GetParam().member);
  const std::string zip = dir + "/archive.zip", out = dir + "/out";
  const std::string data = make_archive(zip, GetParam().member, 1000);
  const ProcessResult r =
      run_command("TLS_SPLIT_EXPECTED=1000 TLS_SPLIT_HELDOUT=100 bash " +
                  source_path(std::string("launch/") + GetParam().script) + " " + zip + " " + out);
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_EQ(read_file(out + "/train.txt"), data.substr(0, 800));
  EXPECT_EQ(read_file(out + "/valid.txt"), data.substr(800, 100));
  EXPECT_EQ(read_file(out + "/test.txt"), data.substr(900, 100));
  for (const char* part : {"train", "valid", "test"}) {
    const std::string sha =
        run_command("sha256sum " + out + "/" + part + ".txt | cut -c1-64").output;
    EXPECT_NE(r.output.find(std::string(part) + ".txt: "), std::string::npos) << r.output;
    EXPECT_NE(r.output.find("sha256 " + sha.substr(0, 64)), std::string::npos) << r.output;
  }
}

TEST_P(PrepareData, RefusesAWrongOrTruncatedArchiveWithOneLine) {
  const std::string dir = scratch_dir(std::string("prepare_bad_") + GetParam().member);
  const std::string script = "bash " + source_path(std::string("launch/") + GetParam().script);
  const std::string zip = dir + "/archive.zip", out = dir + "/out";
  make_archive(zip, GetParam().member, 1000);
  // The real size is 100,000,000 bytes: a 1000-byte member is a truncated download.
  ProcessResult r = run_command(script + " " + zip + " " + out);
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.output.find("has 1000 bytes, expected 100000000"), std::string::npos) << r.output;
  EXPECT_EQ(last_line(r.output), r.output.substr(0, r.output.size() - 1)) << "one line";
  EXPECT_FALSE(fs::exists(out + "/train.txt"));
  // The other benchmark's archive has no member of this name.
  const std::string other = dir + "/other.zip";
  make_archive(other, "something_else", 1000);
  r = run_command(script + " " + other + " " + out);
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.output.find(std::string("no member named '") + GetParam().member + "'"),
            std::string::npos)
      << r.output;
  r = run_command(script + " " + dir + "/missing.zip " + out);
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.output.find("no such file"), std::string::npos) << r.output;
  r = run_command(script);
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.output.find("usage:"), std::string::npos) << r.output;
}

INSTANTIATE_TEST_SUITE_P(Archives, PrepareData,
                         ::testing::Values(Script{"prepare_enwik8.sh", "enwik8"},
                                           Script{"prepare_text8.sh", "text8"}),
                         [](const auto& info) { return std::string(info.param.member); });

}  // namespace
}  // namespace tls::testing
