// launch/configs holds exactly the paper's nine recipes, with the official launch scripts'
// settings (8 GPUs; batch-size counts every row stream, update-freq as fairseq means it), and
// each parses as tls_dist's own options and satisfies the model's rules. A value that drifts
// from the table below fails here.
#include <gtest/gtest.h>

#include <filesystem>
#include <set>
#include <string>
#include <vector>

#include "runtime/options.h"
#include "support/process.h"

namespace tls::testing {
namespace {

namespace fs = std::filesystem;

struct Recipe {
  const char* name;
  int64_t layers, length;  // T = M
  double lr;
  int64_t warmup, updates, batch, update_freq;
  double weight_decay, dropout;
};

// The official settings (the paper's autoregressive launch scripts).
const std::vector<Recipe> kRecipes = {
    {"enwik8_base_phase1", 12, 2048, 2.5e-4, 10000, 430000, 32, 1, 0.01, 0.2},
    {"enwik8_base_phase2", 12, 4096, 1.25e-4, 5000, 50000, 32, 1, 0.01, 0.2},
    {"enwik8_base_phase3", 12, 8192, 6.25e-5, 5000, 50000, 32, 1, 0.01, 0.2},
    {"enwik8_large_phase1", 30, 2048, 2.5e-4, 10000, 430000, 32, 1, 0.1, 0.4},
    {"enwik8_large_phase2", 30, 4096, 1.25e-4, 5000, 50000, 16, 4, 0.1, 0.4},
    {"enwik8_large_phase3", 30, 8192, 6.25e-5, 5000, 50000, 8, 4, 0.1, 0.4},
    {"text8_base_phase1", 12, 2048, 5e-4, 10000, 430000, 32, 1, 0.01, 0.2},
    {"text8_base_phase2", 12, 4096, 2.5e-4, 5000, 50000, 32, 1, 0.01, 0.2},
    {"text8_base_phase3", 12, 8192, 1.25e-4, 5000, 50000, 16, 1, 0.01, 0.2},
};

void PrintTo(const Recipe& r, std::ostream* os) { *os << r.name; }

RunOptions parse_config(const std::string& name) {
  const std::string config = source_path("launch/configs/" + name + ".ini");
  const std::vector<std::string> args = {"tls_dist",     "train",     "--config",     config,
                                         "--train-data", "train.txt", "--valid-data", "valid.txt",
                                         "--save-dir",   "runs/x"};
  std::vector<const char*> argv;
  for (const std::string& a : args) argv.push_back(a.c_str());
  return parse_options(static_cast<int>(argv.size()), argv.data());
}

TEST(RecipeConfigs, TheFolderHoldsExactlyTheNineRecipes) {
  std::set<std::string> want, have;
  for (const Recipe& r : kRecipes) want.insert(std::string(r.name) + ".ini");
  for (const auto& e : fs::directory_iterator(source_path("launch/configs")))
    have.insert(e.path().filename().string());
  EXPECT_EQ(have, want);
}

class RecipeConfig : public ::testing::TestWithParam<Recipe> {};

TEST_P(RecipeConfig, MatchesTheOfficialSettingsAndValidates) {
  const Recipe& r = GetParam();
  const RunOptions o = parse_config(r.name);
  const ModelConfig& m = o.model;
  EXPECT_EQ(m.n_layer, r.layers);
  EXPECT_EQ(m.d_model, 512);
  EXPECT_EQ(m.n_head, 8);
  EXPECT_EQ(m.d_inner, 2048);
  EXPECT_EQ(m.chunk_size, 16);
  EXPECT_EQ(m.chunk_rank, 1);
  EXPECT_EQ(m.window_len, 512);
  EXPECT_EQ(m.tokens_per_sample, r.length);
  EXPECT_EQ(m.mem_len, r.length);
  EXPECT_TRUE(m.pre_ln);
  EXPECT_TRUE(m.use_gelu);
  EXPECT_FALSE(m.use_bias);
  EXPECT_EQ(m.clamp_len, -1);
  EXPECT_EQ(m.cpos_clamp_len, -1);
  EXPECT_DOUBLE_EQ(m.dropout, r.dropout);
  EXPECT_DOUBLE_EQ(m.emb_dropout, r.dropout);
  const TrainSettings& t = o.training;
  EXPECT_EQ(t.batch_size, r.batch);
  EXPECT_EQ(t.update_freq, r.update_freq);
  EXPECT_DOUBLE_EQ(t.optimizer.lr, r.lr);
  EXPECT_EQ(t.optimizer.warmup_updates, r.warmup);
  EXPECT_DOUBLE_EQ(t.optimizer.weight_decay, r.weight_decay);
  EXPECT_DOUBLE_EQ(t.optimizer.beta1, 0.9);
  EXPECT_DOUBLE_EQ(t.optimizer.beta2, 0.999);
  EXPECT_DOUBLE_EQ(t.optimizer.eps, 1e-8);
  EXPECT_DOUBLE_EQ(t.optimizer.clip_norm, 0.0) << "the official scripts set no --clip-norm";
  EXPECT_EQ(o.max_update, r.updates);
  EXPECT_EQ(o.seed, 2u);
  EXPECT_EQ(o.validate_interval, 1000);
  EXPECT_NO_THROW(m.validate());
  // The 8 ranks of the official runs as data parallelism, and split 2 x 2 x 2.
  EXPECT_NO_THROW(m.validate_layout(1, 1));
  EXPECT_NO_THROW(validate_batch(t.batch_size, 8));
  EXPECT_NO_THROW(m.validate_layout(2, 2));
  EXPECT_NO_THROW(validate_batch(t.batch_size, 2));
}

INSTANTIATE_TEST_SUITE_P(Official, RecipeConfig, ::testing::ValuesIn(kRecipes),
                         [](const auto& info) { return std::string(info.param.name); });

}  // namespace
}  // namespace tls::testing
