// ModelConfig::validate: valid configurations pass; each rule of docs/DESIGN.md section 1 is
// refused with a one-line message that names the flag.
#include <gtest/gtest.h>

#include <functional>
#include <string>

#include "kernels/error.h"
#include "layers/model_config.h"

namespace tls {
namespace {

// The message of the error validate() throws for `config`, or "" when it passes.
std::string refusal(const ModelConfig& config) {
  try {
    config.validate();
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

ModelConfig with(const std::function<void(ModelConfig&)>& change) {
  ModelConfig c;
  change(c);
  return c;
}

TEST(ConfigTest, DefaultsAndPaperLikeSettingsPass) {
  EXPECT_NO_THROW(ModelConfig().validate());
  // Shapes like the golden files': T = M; T < w with M > T and M not a multiple of w; paper-sized.
  EXPECT_NO_THROW(with([](ModelConfig& c) {
                    c.d_model = 32, c.n_head = 4, c.chunk_size = 4, c.window_len = 8;
                    c.mem_len = 32, c.tokens_per_sample = 32;
                  }).validate());
  EXPECT_NO_THROW(with([](ModelConfig& c) {
                    c.chunk_size = 4, c.window_len = 16, c.tokens_per_sample = 8, c.mem_len = 24;
                  }).validate());
  EXPECT_NO_THROW(with([](ModelConfig& c) {
                    c.n_layer = 12, c.d_model = 512, c.n_head = 8, c.d_inner = 2048;
                    c.chunk_size = 16, c.window_len = 256, c.mem_len = 4096;
                    c.tokens_per_sample = 4096, c.dropout = 0.2, c.emb_dropout = 0.0;
                  }).validate());
}

TEST(ConfigTest, EverySizeMustBePositive) {
  struct Case {
    const char* flag;
    std::function<void(ModelConfig&)> change;
  };
  const Case cases[] = {
      {"--vocab-size", [](ModelConfig& c) { c.vocab_size = 0; }},
      {"--n-layer", [](ModelConfig& c) { c.n_layer = 0; }},
      {"--d-model", [](ModelConfig& c) { c.d_model = -4; }},
      {"--n-head", [](ModelConfig& c) { c.n_head = 0; }},
      {"--d-inner", [](ModelConfig& c) { c.d_inner = 0; }},
      {"--chunk-size", [](ModelConfig& c) { c.chunk_size = 0; }},
      {"--chunk-rank", [](ModelConfig& c) { c.chunk_rank = 0; }},
      {"--window-len", [](ModelConfig& c) { c.window_len = 0; }},
      {"--mem-len", [](ModelConfig& c) { c.mem_len = 0; }},
      {"--tokens-per-sample", [](ModelConfig& c) { c.tokens_per_sample = -1; }},
  };
  for (const Case& k : cases) {
    std::string message = refusal(with(k.change));
    EXPECT_NE(message.find(std::string(k.flag) + " "), std::string::npos) << message;
    EXPECT_NE(message.find("must be positive"), std::string::npos) << message;
    EXPECT_EQ(message.find('\n'), std::string::npos) << message;
  }
}

TEST(ConfigTest, HeadsMustDivideAnEvenModelWidth) {
  std::string m = refusal(with([](ModelConfig& c) { c.d_model = 66, c.n_head = 4; }));
  EXPECT_EQ(m, "--d-model 66 must be a multiple of --n-head 4");
  m = refusal(with([](ModelConfig& c) { c.d_model = 63, c.n_head = 3; }));
  EXPECT_EQ(m, "--d-model 63 must be even");
}

TEST(ConfigTest, BlockAndMemoryMustBeWholeChunks) {
  std::string m = refusal(with([](ModelConfig& c) { c.tokens_per_sample = 30, c.chunk_size = 4; }));
  EXPECT_EQ(m, "--tokens-per-sample 30 must be a multiple of --chunk-size 4");
  m = refusal(with([](ModelConfig& c) { c.mem_len = 68, c.chunk_size = 8; }));
  EXPECT_EQ(m, "--mem-len 68 must be a multiple of --chunk-size 8");
}

TEST(ConfigTest, BlockMustBeWholeWindowsOrAtMostOne) {
  std::string m =
      refusal(with([](ModelConfig& c) { c.tokens_per_sample = 72, c.window_len = 16; }));
  EXPECT_NE(m.find("--tokens-per-sample 72 must be a multiple of --window-len 16"),
            std::string::npos)
      << m;
  EXPECT_NO_THROW(
      with([](ModelConfig& c) { c.tokens_per_sample = 8, c.window_len = 16; }).validate());
}

TEST(ConfigTest, MemoryMustCoverTheWindow) {
  std::string m = refusal(
      with([](ModelConfig& c) { c.mem_len = 8, c.window_len = 16, c.tokens_per_sample = 16; }));
  EXPECT_EQ(m, "--mem-len 8 must be at least --window-len 16");
  // M need not be a multiple of w.
  EXPECT_NO_THROW(with([](ModelConfig& c) { c.mem_len = 24, c.window_len = 16; }).validate());
}

TEST(ConfigTest, DropoutsMustBeProbabilitiesBelowOne) {
  EXPECT_NE(refusal(with([](ModelConfig& c) { c.dropout = 1.0; })).find("--dropout 1"),
            std::string::npos);
  EXPECT_NE(refusal(with([](ModelConfig& c) { c.dropout = -0.1; })).find("--dropout -0.1"),
            std::string::npos);
  EXPECT_NE(refusal(with([](ModelConfig& c) { c.emb_dropout = 1.5; })).find("--emb-dropout 1.5"),
            std::string::npos);
  EXPECT_NO_THROW(with([](ModelConfig& c) { c.dropout = 0.99, c.emb_dropout = 0.5; }).validate());
}

TEST(ConfigTest, DescribeIsOneLine) {
  std::string line = describe(ModelConfig());
  EXPECT_EQ(line.find('\n'), std::string::npos);
  EXPECT_NE(line.find("n_layer 2"), std::string::npos) << line;
  EXPECT_NE(line.find("d_model 64"), std::string::npos) << line;
  EXPECT_NE(line.find("pre-LN"), std::string::npos) << line;
  EXPECT_NE(line.find("clamp_len off"), std::string::npos) << line;
}

}  // namespace
}  // namespace tls
