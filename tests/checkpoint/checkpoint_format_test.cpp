// A checkpoint tls_dist writes, read back with nothing but the plain HDF5 C API (as any HDF5
// tool would): the reference's state_dict names and shapes under /model, the optimizer and state
// groups, float32 (float64 for fp64 runs) data, int64 hyperparameter attributes, an ASCII
// `format` string, and a Fletcher32 checksum on every dataset (on the part files the virtual
// datasets map; docs/DESIGN.md section 5). Every tensor reads whole through the checkpoint, with
// the HDF5 C API, h5dump and (when installed) h5py.
#include <gtest/gtest.h>
#include <hdf5.h>

#include <cstdlib>
#include <map>
#include <set>

#include "checkpoint/checkpoint_test_util.h"
#include "checkpoint/checkpoint_writer.h"

namespace tls {
namespace {

using testing::TempDir;

struct Dataset {
  std::vector<hsize_t> shape;
  hid_t type = -1;  // owned by the map's user: closed in the test's teardown
  bool fletcher32 = false;
};

bool has_fletcher32(hid_t dcpl) {
  for (int i = 0; i < H5Pget_nfilters(dcpl); ++i) {
    unsigned flags = 0;
    size_t n = 0;
    if (H5Pget_filter2(dcpl, static_cast<unsigned>(i), &flags, &n, nullptr, 0, nullptr, nullptr) ==
        H5Z_FILTER_FLETCHER32)
      return true;
  }
  return false;
}

// Whether every source a virtual dataset maps (files next to the checkpoint) has the checksum.
std::string g_dir;  // the checkpoint's directory
bool sources_have_fletcher32(hid_t dcpl) {
  size_t n = 0;
  H5Pget_virtual_count(dcpl, &n);
  bool all = n > 0;
  for (size_t i = 0; i < n; ++i) {
    char file[512] = {0}, dataset[512] = {0};
    H5Pget_virtual_filename(dcpl, i, file, sizeof file);
    H5Pget_virtual_dsetname(dcpl, i, dataset, sizeof dataset);
    hid_t f = H5Fopen((g_dir + "/" + file).c_str(), H5F_ACC_RDONLY, H5P_DEFAULT);
    hid_t d = H5Dopen2(f, dataset, H5P_DEFAULT);
    hid_t source = H5Dget_create_plist(d);
    all = all && f >= 0 && d >= 0 && has_fletcher32(source);
    H5Pclose(source);
    H5Dclose(d);
    H5Fclose(f);
  }
  return all;
}

herr_t collect(hid_t group, const char* name, const H5L_info_t*, void* out) {
  auto& all = *static_cast<std::map<std::string, Dataset>*>(out);
  hid_t d = H5Dopen2(group, name, H5P_DEFAULT);
  Dataset info;
  hid_t space = H5Dget_space(d);
  info.shape.resize(static_cast<size_t>(H5Sget_simple_extent_ndims(space)));
  H5Sget_simple_extent_dims(space, info.shape.data(), nullptr);
  info.type = H5Dget_type(d);
  hid_t dcpl = H5Dget_create_plist(d);
  info.fletcher32 =
      H5Pget_layout(dcpl) == H5D_VIRTUAL ? sources_have_fletcher32(dcpl) : has_fletcher32(dcpl);
  H5Pclose(dcpl);
  H5Sclose(space);
  H5Dclose(d);
  all[name] = info;
  return 0;
}

std::map<std::string, Dataset> datasets(hid_t file, const char* group) {
  std::map<std::string, Dataset> all;
  hid_t g = H5Gopen2(file, group, H5P_DEFAULT);
  EXPECT_GE(g, 0) << group;
  H5Literate(g, H5_INDEX_NAME, H5_ITER_INC, nullptr, collect, &all);
  H5Gclose(g);
  return all;
}

bool attribute_has_type(hid_t file, const char* object, const char* name, hid_t type) {
  hid_t a = H5Aopen_by_name(file, object, name, H5P_DEFAULT, H5P_DEFAULT);
  if (a < 0) return false;
  hid_t t = H5Aget_type(a);
  const bool same = H5Tequal(t, type) > 0;
  H5Tclose(t);
  H5Aclose(a);
  return same;
}

class Format : public ::testing::TestWithParam<DType> {};

TEST_P(Format, NamesShapesAndTypesAreTheReferences) {
  auto ops = make_cpu_ops();
  TempDir dir;
  ModelConfig cfg = testing::tiny_checkpoint_model();
  cfg.use_bias = true;
  const hsize_t V = 256, d = 16, H = 2, dh = 8, r = 2, di = 32, B = 3, M = 16;
  TransformerLSModel model(*ops, cfg, GetParam());
  AdamW optimizer(*ops, model.parameters(), {});
  ModelState state = model.initial_state(static_cast<int64_t>(B));
  TrainSettings settings;
  settings.batch_size = static_cast<int64_t>(B);
  const std::string path = dir.file("c.h5");
  CheckpointContents contents = checkpoint_contents(model, &optimizer, &state, 5, settings);
  testing::fill_contents(*ops, contents, 0.5);
  save_checkpoint(path, contents, Topology::single(), *ops);
  g_dir = dir.path();

  hid_t file = H5Fopen(path.c_str(), H5F_ACC_RDONLY, H5P_DEFAULT);
  ASSERT_GE(file, 0);
  std::map<std::string, Dataset> m = datasets(file, "/model");
  const std::map<std::string, std::vector<hsize_t>> expected = {
      {"in_emb.weight", {V, d}},
      {"out_emb.bias", {V}},
      {"layers.0.attn.proj_query.weight", {d, d}},
      {"layers.0.attn.proj_query.bias", {d}},
      {"layers.0.attn.proj_out.weight", {d, d}},
      {"layers.0.attn.r_net.weight", {d, d}},
      {"layers.0.attn.r_net_chunk.bias", {d}},
      {"layers.0.attn.dconv_1.weight", {H * r, d}},
      {"layers.0.attn.dconv_1.bias", {H * r}},
      {"layers.0.attn.r_r_bias", {1, H, 1, dh}},
      {"layers.0.attn.r_w_bias", {1, H, 1, 1, dh}},
      {"layers.0.attn.dual_ln_win.weight", {d}},
      {"layers.1.norm2.bias", {d}},
      {"layers.1.ff.fc1.weight", {di, d}},
      {"layers.1.ff.fc2.weight", {d, di}},
  };
  for (const auto& [name, shape] : expected) {
    ASSERT_TRUE(m.count(name)) << name;
    EXPECT_EQ(m[name].shape, shape) << name;
  }
  EXPECT_FALSE(m.count("out_emb.weight"));  // tied with in_emb.weight
  EXPECT_FALSE(m.count("pos_emb.inv_freq"));
  std::set<std::string> names;
  for (Parameter* p : model.parameters()) names.insert(p->name);
  std::set<std::string> stored;
  for (const auto& [name, info] : m) stored.insert(name);
  EXPECT_EQ(stored, names);

  const hid_t want_type = GetParam() == DType::f64 ? H5T_IEEE_F64LE : H5T_IEEE_F32LE;
  std::map<std::string, Dataset> all = m;
  for (const char* group : {"/optimizer/exp_avg", "/optimizer/exp_avg_sq", "/state/cache"}) {
    std::map<std::string, Dataset> g = datasets(file, group);
    EXPECT_EQ(g.size(), std::string(group) == "/state/cache" ? 2u : m.size()) << group;
    for (auto& [name, info] : g) all[std::string(group) + "/" + name] = info;
  }
  EXPECT_EQ(all["/optimizer/exp_avg_sq/layers.0.attn.r_w_bias"].shape,
            (std::vector<hsize_t>{1, H, 1, 1, dh}));
  EXPECT_EQ(all["/state/cache/layers.1"].shape, (std::vector<hsize_t>{B, M, d}));
  for (auto& [name, info] : all) {
    EXPECT_GT(H5Tequal(info.type, want_type), 0) << name;
    EXPECT_TRUE(info.fletcher32) << name;
    H5Tclose(info.type);
  }

  EXPECT_TRUE(attribute_has_type(file, "/", "format_version", H5T_STD_I64LE));
  for (const char* name : {"n_layer", "d_model", "chunk_rank", "pre_ln", "clamp_len", "tp", "dp"})
    EXPECT_TRUE(attribute_has_type(file, "/", name, H5T_STD_I64LE)) << name;
  EXPECT_TRUE(attribute_has_type(file, "/", "dropout", H5T_IEEE_F64LE));
  EXPECT_TRUE(attribute_has_type(file, "/state", "step", H5T_STD_I64LE));
  hid_t a = H5Aopen_by_name(file, "/", "format", H5P_DEFAULT, H5P_DEFAULT);
  hid_t t = H5Aget_type(a);
  EXPECT_EQ(H5Tget_class(t), H5T_STRING);
  EXPECT_EQ(H5Tget_cset(t), H5T_CSET_ASCII);
  std::string text(H5Tget_size(t), '\0');
  H5Aread(a, t, text.data());
  EXPECT_EQ(text, "tls_dist-checkpoint");
  int64_t clamp = 0;
  hid_t c = H5Aopen_by_name(file, "/", "cpos_clamp_len", H5P_DEFAULT, H5P_DEFAULT);
  H5Aread(c, H5T_NATIVE_INT64, &clamp);
  EXPECT_EQ(clamp, -1);
  H5Aclose(c);
  H5Tclose(t);
  H5Aclose(a);
  // Every tensor reads whole through the checkpoint with the plain C API.
  auto read_whole = [&](const std::string& name, const Tensor& x) {
    hid_t dset = H5Dopen2(file, name.c_str(), H5P_DEFAULT);
    std::vector<double> values(static_cast<size_t>(x.numel()));
    EXPECT_GE(H5Dread(dset, H5T_NATIVE_DOUBLE, H5S_ALL, H5S_ALL, H5P_DEFAULT, values.data()), 0)
        << name;
    H5Dclose(dset);
    EXPECT_EQ(values, ops->to_host(x)) << name;
  };
  for (size_t i = 0; i < model.parameters().size(); ++i) {
    const Parameter& p = *model.parameters()[i];
    read_whole("/model/" + p.name, p.value);
    read_whole("/optimizer/exp_avg_sq/" + p.name, optimizer.exp_avg_sq()[i]);
  }
  read_whole("/state/cache/layers.1", state.caches[1]);
  H5Fclose(file);

  // The command-line tools read it too.
  if (std::system("command -v h5dump > /dev/null 2>&1") == 0) {
    EXPECT_EQ(std::system(("h5dump -H '" + path + "' > /dev/null 2>&1").c_str()), 0);
    EXPECT_EQ(std::system(("h5dump -d /model/layers.1.ff.fc1.weight '" + path +
                           "' 2>&1 | grep -q '(31,12): '")
                              .c_str()),
              0);
  }
  // h5py (the reference's reader) opens the checkpoint and reads a tensor whole.
  if (std::system("python3 -c 'import h5py' > /dev/null 2>&1") == 0) {
    const std::string script =
        "import h5py, sys; f = h5py.File(sys.argv[1], 'r'); "
        "x = f['model/layers.1.ff.fc1.weight'][()]; "
        "sys.exit(0 if x.shape == (32, 16) and abs(x).sum() > 0 else 1)";
    EXPECT_EQ(std::system(("cd / && python3 -c \"" + script + "\" '" + path + "'").c_str()), 0);
  }
}

INSTANTIATE_TEST_SUITE_P(Precisions, Format, ::testing::Values(DType::f32, DType::f64),
                         [](const auto& info) { return std::string(dtype_name(info.param)); });

}  // namespace
}  // namespace tls
