// Hdf5Reader and config_from_attributes against the golden files (tests/golden/README.md):
// attributes, shapes, datasets, listing, and clear refusals of missing paths and non-HDF5 files.
#include "checkpoint/hdf5_reader.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <string>

#include "checkpoint/golden.h"
#include "kernels/error.h"
#include "support/temp_files.h"

namespace tls {
namespace {

const std::string kTiny = std::string(TLS_GOLDEN_DIR) + "/tiny_preln.h5";
const std::string kPostLn = std::string(TLS_GOLDEN_DIR) + "/postln_relu_bias_clamp.h5";

// The message of the tls::Error `f` throws, or "" if it throws none.
template <class F>
std::string error_of(F f) {
  try {
    f();
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

// Writes an HDF5 file with only the root attributes `format` (a variable-length string) and
// `format_version`, for testing refusals.
void write_header(const std::string& path, const std::string& format, int64_t version) {
  hid_t file = H5Fcreate(path.c_str(), H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT);
  ASSERT_GE(file, 0);
  hid_t scalar = H5Screate(H5S_SCALAR);
  hid_t str = H5Tcopy(H5T_C_S1);
  H5Tset_size(str, H5T_VARIABLE);
  hid_t a = H5Acreate2(file, "format", str, scalar, H5P_DEFAULT, H5P_DEFAULT);
  const char* text = format.c_str();
  H5Awrite(a, str, &text);
  H5Aclose(a);
  a = H5Acreate2(file, "format_version", H5T_STD_I64LE, scalar, H5P_DEFAULT, H5P_DEFAULT);
  H5Awrite(a, H5T_NATIVE_INT64, &version);
  H5Aclose(a);
  H5Tclose(str);
  H5Sclose(scalar);
  H5Fclose(file);
}

TEST(Hdf5ReaderTest, ReadsTheTinyModelsConfig) {
  Hdf5Reader file(kTiny);
  EXPECT_TRUE(file.has_attribute("format"));
  EXPECT_FALSE(file.has_attribute("no_such_attribute"));
  EXPECT_EQ(file.string_attribute("/", "format"), "tls_dist-checkpoint");
  EXPECT_EQ(file.int_attribute("/", "format_version"), 1);

  ModelConfig c = config_from_attributes(file);
  EXPECT_EQ(c.vocab_size, 256);
  EXPECT_EQ(c.n_layer, 2);
  EXPECT_EQ(c.d_model, 32);
  EXPECT_EQ(c.n_head, 4);
  EXPECT_EQ(c.d_inner, 64);
  EXPECT_EQ(c.chunk_size, 4);
  EXPECT_EQ(c.chunk_rank, 1);
  EXPECT_EQ(c.window_len, 8);
  EXPECT_EQ(c.mem_len, 32);
  EXPECT_EQ(c.tokens_per_sample, 32);
  EXPECT_TRUE(c.pre_ln);
  EXPECT_TRUE(c.use_gelu);
  EXPECT_FALSE(c.use_bias);
  EXPECT_EQ(c.clamp_len, -1);
  EXPECT_EQ(c.cpos_clamp_len, -1);
  EXPECT_EQ(c.dropout, 0.0);
  EXPECT_NO_THROW(c.validate());
}

TEST(Hdf5ReaderTest, ReadsPostLnSwitchesAndClamps) {
  ModelConfig c = config_from_attributes(Hdf5Reader(kPostLn));
  EXPECT_FALSE(c.pre_ln);
  EXPECT_FALSE(c.use_gelu);
  EXPECT_TRUE(c.use_bias);
  EXPECT_EQ(c.chunk_rank, 2);
  EXPECT_EQ(c.clamp_len, 5);
  EXPECT_EQ(c.cpos_clamp_len, 6);
  EXPECT_NO_THROW(c.validate());
}

TEST(Hdf5ReaderTest, ReadsShapesAndData) {
  Hdf5Reader file(kTiny);
  EXPECT_TRUE(file.has_dataset("/model/in_emb.weight"));
  EXPECT_FALSE(file.has_dataset("/model"));  // a group, not a dataset
  EXPECT_TRUE(file.has_group("/model"));
  EXPECT_EQ(file.dataset_shape("/model/in_emb.weight"), (std::vector<int64_t>{256, 32}));
  EXPECT_EQ(file.dataset_shape("/model/layers.0.attn.r_w_bias"),
            (std::vector<int64_t>{1, 4, 1, 1, 8}));
  EXPECT_EQ(file.dataset_shape("/golden/block_0/loss"), std::vector<int64_t>{});

  std::vector<double> emb = file.read_doubles("/model/in_emb.weight");  // stored as float32
  std::vector<float> emb32 = file.read_floats("/model/in_emb.weight");
  ASSERT_EQ(emb.size(), 256u * 32u);
  ASSERT_EQ(emb32.size(), emb.size());
  for (size_t i = 0; i < emb.size(); ++i) ASSERT_EQ(emb[i], static_cast<double>(emb32[i]));

  EXPECT_EQ(file.int_attribute("/golden", "batch"), 2);
  EXPECT_EQ(file.int_attribute("/golden", "n_blocks"), 3);
  std::vector<int32_t> tokens = file.read_ints("/golden/tokens");
  ASSERT_EQ(file.dataset_shape("/golden/tokens"), (std::vector<int64_t>{2, 3 * 32 + 1}));
  ASSERT_EQ(tokens.size(), 2u * 97u);
  EXPECT_EQ(tokens[0], 109);  // the first bytes of row 0
  EXPECT_EQ(tokens[1], 137);
  EXPECT_EQ(tokens[2], 189);
  for (int32_t t : tokens) ASSERT_TRUE(t >= 0 && t < 256) << t;
  std::vector<double> loss = file.read_doubles("/golden/block_0/loss");
  ASSERT_EQ(loss.size(), 1u);
  EXPECT_GT(loss[0], 0.0);
}

TEST(Hdf5ReaderTest, ListsGroups) {
  Hdf5Reader file(kTiny);
  EXPECT_EQ(file.list("/"), (std::vector<std::string>{"golden", "model"}));
  std::vector<std::string> golden = file.list("/golden");
  EXPECT_EQ(golden, (std::vector<std::string>{"block_0", "block_1", "block_2", "tokens"}));
  std::vector<std::string> model = file.list("/model");
  EXPECT_EQ(model.front(), "in_emb.weight");
  EXPECT_NE(std::find(model.begin(), model.end(), "layers.1.ff.fc2.weight"), model.end());
}

TEST(Hdf5ReaderTest, RefusesMissingObjectsNamingFileAndPath) {
  Hdf5Reader file(kTiny);
  std::string m = error_of([&] { file.read_doubles("/model/no_such.weight"); });
  EXPECT_NE(m.find(kTiny), std::string::npos) << m;
  EXPECT_NE(m.find("/model/no_such.weight"), std::string::npos) << m;
  m = error_of([&] { file.dataset_shape("/nowhere/at/all"); });
  EXPECT_NE(m.find("/nowhere/at/all"), std::string::npos) << m;
  m = error_of([&] { file.int_attribute("/", "n_layers"); });
  EXPECT_NE(m.find("n_layers"), std::string::npos) << m;
  m = error_of([&] { file.int_attribute("/", "format"); });  // a string, not an integer
  EXPECT_NE(m.find("format"), std::string::npos) << m;
  m = error_of([&] { file.read_ints("/model/in_emb.weight"); });  // floats
  EXPECT_NE(m.find("in_emb.weight"), std::string::npos) << m;
  m = error_of([&] { file.list("/model/in_emb.weight"); });
  EXPECT_NE(m.find("in_emb.weight"), std::string::npos) << m;
}

TEST(Hdf5ReaderTest, RefusesMissingAndNonHdf5Files) {
  std::string missing = std::string(TLS_GOLDEN_DIR) + "/does_not_exist.h5";
  std::string m = error_of([&] { Hdf5Reader r(missing); });
  EXPECT_NE(m.find(missing), std::string::npos) << m;

  testing::TempFile text("This is plain text, not HDF5.\n", ".h5");
  m = error_of([&] { Hdf5Reader r(text.path()); });
  EXPECT_NE(m.find(text.path()), std::string::npos) << m;
  EXPECT_NE(m.find("not an HDF5 file"), std::string::npos) << m;
}

TEST(Hdf5ReaderTest, RefusesWrongFormatOrVersion) {
  testing::TempFile h5("", ".h5");
  write_header(h5.path(), "some-other-format", 1);
  std::string m = error_of([&] { config_from_attributes(Hdf5Reader(h5.path())); });
  EXPECT_NE(m.find(h5.path()), std::string::npos) << m;
  EXPECT_NE(m.find("some-other-format"), std::string::npos) << m;

  for (int64_t version : {0, 3}) {
    write_header(h5.path(), "tls_dist-checkpoint", version);
    Hdf5Reader other(h5.path());
    EXPECT_EQ(other.string_attribute("/", "format"), "tls_dist-checkpoint");  // variable-length
    m = error_of([&] { config_from_attributes(other); });
    EXPECT_NE(m.find(h5.path()), std::string::npos) << m;
    EXPECT_NE(m.find("format_version " + std::to_string(version)), std::string::npos) << m;
  }

  write_header(h5.path(), "tls_dist-checkpoint", 1);  // right header, no hyperparameters
  m = error_of([&] { config_from_attributes(Hdf5Reader(h5.path())); });
  EXPECT_NE(m.find(h5.path()), std::string::npos) << m;
  EXPECT_NE(m.find("vocab_size"), std::string::npos) << m;
}

}  // namespace
}  // namespace tls
