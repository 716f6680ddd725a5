// Every damaged or mismatched checkpoint is refused (docs/DESIGN.md section 5), with one line that
// names the file, the dataset or attribute and the problem, and without changing any file: a
// truncated file, flipped bytes inside a dataset's data (Fletcher32, in the part file the
// checkpoint maps), a missing or truncated part file, a missing dataset, a wrong shape, a
// hyperparameter that differs from the run's, an unknown format_version, a file that is not HDF5,
// a path that does not exist.
#include <gtest/gtest.h>
#include <hdf5.h>

#include <cstdio>
#include <filesystem>
#include <fstream>

#include "checkpoint/checkpoint_reader.h"
#include "checkpoint/checkpoint_test_util.h"
#include "checkpoint/checkpoint_writer.h"

namespace tls {
namespace {

using testing::file_bytes;
using testing::FullModel;
using testing::TempDir;

class Damage : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = new TempDir;
    auto ops = make_cpu_ops();
    FullModel run(*ops, testing::tiny_checkpoint_model(), DType::f32, 2);
    CheckpointContents c = run.contents();
    c.step = 3;
    testing::fill_contents(*ops, c, 0.25);
    save_checkpoint(good(), c, Topology::single(), *ops);
    good_bytes_ = new std::string(file_bytes(good()));
  }
  static void TearDownTestSuite() {
    delete dir_;
    delete good_bytes_;
  }
  static std::string good() { return dir_->file("good.h5"); }

  // A copy of the good checkpoint to damage.
  std::string copy(const std::string& name) {
    const std::string path = dir_->file(name);
    std::filesystem::copy_file(good(), path, std::filesystem::copy_options::overwrite_existing);
    return path;
  }

  // A copy of the good checkpoint with its own copy of its part file, in a folder of its own
  // (the checkpoint names its part relative to its folder).
  std::string copy_with_part(const std::string& name) {
    const std::filesystem::path folder = dir_->file(name);
    std::filesystem::remove_all(folder);
    std::filesystem::create_directories(folder);
    for (const auto& e : std::filesystem::directory_iterator(dir_->path())) {
      const std::string file = e.path().filename().string();
      if (file == "good.h5" ||
          (file.rfind("good.", 0) == 0 && file.find(".part") != std::string::npos))
        std::filesystem::copy_file(e.path(), folder / file);
    }
    return (folder / "good.h5").string();
  }
  // The part file of a checkpoint saved by one process.
  static std::string part_of(const std::string& checkpoint) {
    for (const auto& e :
         std::filesystem::directory_iterator(std::filesystem::path(checkpoint).parent_path()))
      if (e.path().filename().string().find(".part0.h5") != std::string::npos)
        return e.path().string();
    return "";
  }

  // Loads `path` into the tiny model (or `cfg`), expecting a refusal; checks that no file
  // changed and returns the message.
  std::string refusal(const std::string& path, const ModelConfig& cfg,
                      const LoadOptions& options = {}) {
    const bool exists = std::filesystem::exists(path);
    const std::string before = exists ? file_bytes(path) : "";
    auto ops = make_cpu_ops();
    FullModel run(*ops, cfg, DType::f32, 2);
    CheckpointContents c = run.contents();
    std::string message =
        testing::error_of([&] { load_checkpoint(path, c, Topology::single(), *ops, options); });
    EXPECT_FALSE(message.empty()) << path << " was not refused";
    std::printf("refused: %s\n", message.c_str());
    EXPECT_EQ(message.find('\n'), std::string::npos) << message;
    EXPECT_NE(message.find(path), std::string::npos) << message;
    EXPECT_EQ(std::filesystem::exists(path), exists);
    if (exists) {
      EXPECT_TRUE(file_bytes(path) == before) << path << " changed";
    }
    EXPECT_TRUE(file_bytes(good()) == *good_bytes_) << "the good checkpoint changed";
    return message;
  }
  std::string refusal(const std::string& path) {
    return refusal(path, testing::tiny_checkpoint_model());
  }

  // Opens a copy read-write with the HDF5 C API (for damage made with HDF5 itself).
  static hid_t open_rw(const std::string& path) {
    return H5Fopen(path.c_str(), H5F_ACC_RDWR, H5P_DEFAULT);
  }

  static TempDir* dir_;
  static std::string* good_bytes_;
};

TempDir* Damage::dir_ = nullptr;
std::string* Damage::good_bytes_ = nullptr;

#define EXPECT_MENTIONS(message, text) \
  EXPECT_NE((message).find(text), std::string::npos) << (message)

TEST_F(Damage, TheGoodCopyLoads) {
  auto ops = make_cpu_ops();
  FullModel run(*ops, testing::tiny_checkpoint_model(), DType::f32, 2);
  CheckpointContents c = run.contents();
  EXPECT_NO_THROW(load_checkpoint(copy("plain.h5"), c, Topology::single(), *ops));
  EXPECT_EQ(c.step, 3);
}

TEST_F(Damage, TruncatedFileIsRefused) {
  for (double keep : {0.5, 0.999}) {
    const std::string path = copy("truncated.h5");
    std::filesystem::resize_file(path, static_cast<uintmax_t>(good_bytes_->size() * keep));
    std::string m = refusal(path);
    EXPECT_MENTIONS(m, "truncated");
  }
}

// Flips one byte in the middle of a dataset's first stored chunk.
void flip_byte_in(const std::string& path, const std::string& dataset) {
  hid_t file = H5Fopen(path.c_str(), H5F_ACC_RDONLY, H5P_DEFAULT);
  hid_t d = H5Dopen2(file, dataset.c_str(), H5P_DEFAULT);
  hid_t space = H5Dget_space(d);
  std::vector<hsize_t> offset(static_cast<size_t>(H5Sget_simple_extent_ndims(space)));
  unsigned mask = 0;
  haddr_t address = 0;
  hsize_t size = 0;
  ASSERT_GE(H5Dget_chunk_info(d, space, 0, offset.data(), &mask, &address, &size), 0) << dataset;
  H5Sclose(space);
  H5Dclose(d);
  H5Fclose(file);
  std::fstream f(path, std::ios::in | std::ios::out | std::ios::binary);
  f.seekg(static_cast<std::streamoff>(address + size / 2));
  char byte = 0;
  f.get(byte);
  f.seekp(static_cast<std::streamoff>(address + size / 2));
  f.put(static_cast<char>(byte ^ 0x10));
}

TEST_F(Damage, FlippedBytesInsideADatasetAreRefused) {
  for (const std::string dataset :
       {"/model/layers.1.ff.fc1.weight", "/optimizer/exp_avg_sq/in_emb.weight",
        "/state/cache/layers.0"}) {
    const std::string path = copy_with_part("flipped");
    flip_byte_in(part_of(path), dataset);
    std::string m = refusal(path);
    EXPECT_MENTIONS(m, "'" + dataset + "'");
    EXPECT_MENTIONS(m, "Fletcher32");
    EXPECT_MENTIONS(m, part_of(path));
  }
}

TEST_F(Damage, AMissingOrTruncatedPartFileIsRefusedWithItsName) {
  std::string path = copy_with_part("no_part");
  const std::string part = part_of(path);
  std::filesystem::remove(part);
  std::string m = refusal(path);
  EXPECT_MENTIONS(m, part);
  EXPECT_MENTIONS(m, "is missing");

  path = copy_with_part("short_part");
  std::filesystem::resize_file(part_of(path), std::filesystem::file_size(part_of(path)) / 2);
  m = refusal(path);
  EXPECT_MENTIONS(m, part_of(path));
  EXPECT_MENTIONS(m, "damaged");
}

TEST_F(Damage, MissingDatasetIsRefused) {
  const std::string path = copy("missing.h5");
  hid_t file = open_rw(path);
  ASSERT_GE(H5Ldelete(file, "/model/layers.0.norm1.weight", H5P_DEFAULT), 0);
  H5Fclose(file);
  std::string m = refusal(path);
  EXPECT_MENTIONS(m, "'/model/layers.0.norm1.weight' is missing");
}

TEST_F(Damage, WrongShapeIsRefused) {
  const std::string path = copy("shape.h5");
  hid_t file = open_rw(path);
  ASSERT_GE(H5Ldelete(file, "/model/layers.1.attn.r_r_bias", H5P_DEFAULT), 0);
  const hsize_t dims[4] = {1, 2, 1, 9};
  hid_t space = H5Screate_simple(4, dims, nullptr);
  hid_t d = H5Dcreate2(file, "/model/layers.1.attn.r_r_bias", H5T_IEEE_F32LE, space, H5P_DEFAULT,
                       H5P_DEFAULT, H5P_DEFAULT);
  H5Dclose(d);
  H5Sclose(space);
  H5Fclose(file);
  std::string m = refusal(path);
  EXPECT_MENTIONS(m,
                  "'/model/layers.1.attn.r_r_bias' has shape [1, 2, 1, 9], expected [1, 2, 1, 8]");
}

TEST_F(Damage, DifferentHyperparameterIsRefused) {
  ModelConfig other = testing::tiny_checkpoint_model();
  other.d_inner = 48;
  std::string m = refusal(copy("hyper.h5"), other);
  EXPECT_MENTIONS(m, "attribute 'd_inner' is 32 in the file but 48 in this run");

  other = testing::tiny_checkpoint_model();
  other.dropout = 0.1;
  m = refusal(copy("hyper.h5"), other);
  EXPECT_MENTIONS(m, "attribute 'dropout' is 0 in the file but 0.1 in this run");

  other = testing::tiny_checkpoint_model();
  other.mem_len = 32;  // changing lengths needs the caller's permission (docs/DESIGN.md section 4)
  m = refusal(copy("hyper.h5"), other);
  EXPECT_MENTIONS(m, "attribute 'mem_len' is 16 in the file but 32 in this run");
}

TEST_F(Damage, LengthChangeLoadsWeightsButNotCaches) {
  auto ops = make_cpu_ops();
  ModelConfig longer = testing::tiny_checkpoint_model();
  longer.mem_len = 32;
  longer.tokens_per_sample = 32;
  FullModel run(*ops, longer, DType::f32, 2);
  CheckpointContents c = run.contents();
  LoadOptions options;
  options.allow_length_change = true;
  load_checkpoint(good(), c, Topology::single(), *ops, options);
  EXPECT_EQ(c.step, 3);
  Hdf5Reader file(good());
  EXPECT_EQ(ops->to_host(run.model.in_emb.value), file.read_doubles("/model/in_emb.weight"));
  EXPECT_EQ(ops->sum_squares(run.state.caches[0]), 0.0);  // caches of another length: not loaded
}

TEST_F(Damage, UnknownFormatVersionIsRefused) {
  const std::string path = copy("version.h5");
  hid_t file = open_rw(path);
  hid_t a = H5Aopen_by_name(file, "/", "format_version", H5P_DEFAULT, H5P_DEFAULT);
  const int64_t three = 3;
  H5Awrite(a, H5T_NATIVE_INT64, &three);
  H5Aclose(a);
  H5Fclose(file);
  std::string m = refusal(path);
  EXPECT_MENTIONS(m, "format_version 3");
}

// Text from the file goes into the message escaped: a format holding a newline (the
// checkpoint fuzzer's finding) still gives one line.
TEST_F(Damage, AFormatHoldingANewlineIsRefusedOnOneLine) {
  const std::string path = copy("format.h5");
  hid_t file = open_rw(path);
  H5Adelete(file, "format");
  const std::string format = "tls_dist-checkpoin\n";
  hid_t type = H5Tcopy(H5T_C_S1);
  H5Tset_size(type, format.size());
  hid_t space = H5Screate(H5S_SCALAR);
  hid_t a = H5Acreate2(file, "format", type, space, H5P_DEFAULT, H5P_DEFAULT);
  H5Awrite(a, type, format.data());
  H5Aclose(a);
  H5Sclose(space);
  H5Tclose(type);
  H5Fclose(file);
  std::string m = refusal(path);
  EXPECT_MENTIONS(m, "has format 'tls_dist-checkpoin\\n', expected 'tls_dist-checkpoint'");
}

TEST_F(Damage, NonHdf5FileIsRefused) {
  const std::string path = dir_->file("text.h5");
  std::ofstream(path) << "checkpoint? no, just text\n";
  std::string m = refusal(path);
  EXPECT_MENTIONS(m, "not an HDF5 file");
}

TEST_F(Damage, NonexistentPathIsRefused) {
  std::string m = refusal(dir_->file("no_such_checkpoint.h5"));
  EXPECT_MENTIONS(m, "no such file");
}

}  // namespace
}  // namespace tls
