// The paper's recipe chain through the program (docs/DESIGN.md sections 5 and 6):
// checkpoint_best.h5 follows the lowest validation loss (also across a resume, and never pruned
// by --keep-last), a next phase fine-tunes from it with longer blocks, a resumed run says that
// --finetune-from-model was ignored, and the paper's evaluation protocol (blocks shorter than
// the window, memory longer than the training blocks) gives the BPC of a float64 single-process
// computation of the same protocol written out block by block.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <regex>
#include <sstream>

#include "checkpoint/checkpoint_dir.h"
#include "checkpoint/checkpoint_reader.h"
#include "layers/model.h"
#include "support/process.h"

namespace tls::testing {
namespace {

namespace fs = std::filesystem;

std::string corpus(const std::string& split) {
  return source_path("data/kernel-docs/" + split + ".txt");
}

std::string flags() {
  return " --config " + source_path("launch/tiny_demo.ini") +
         " --log-interval 10 --valid-max-bytes 0 --train-data " + corpus("train");
}

// The validation losses of metrics.jsonl, in order.
std::vector<double> valid_losses(const std::string& metrics) {
  std::vector<double> out;
  std::istringstream in(metrics);
  std::string line;
  const std::regex loss("\"loss\": ([-0-9.eE+]+)");
  while (std::getline(in, line)) {
    std::smatch m;
    if (line.find("\"split\": \"valid\"") != std::string::npos && std::regex_search(line, m, loss))
      out.push_back(std::stod(m[1]));
  }
  return out;
}

class Recipe : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_TRUE(fs::exists(corpus("train")))
        << "the default corpus is missing: run launch/prepare_corpus.sh data/kernel-docs";
  }
};

TEST_F(Recipe, BestCheckpointFollowsValidationAndTheNextPhaseStartsFromIt) {
  const std::string dir = scratch_dir("recipe_best"), run = dir + "/phase1";
  const std::string valid = dir + "/valid.txt";
  std::ofstream(valid, std::ios::binary) << read_file(corpus("valid")).substr(0, 4000);
  const std::string phase1 = tls_dist_binary() + " train" + flags() + " --valid-data " + valid +
                             " --validate-interval 10 --save-interval 0 --keep-last 1 --save-dir " +
                             run;
  ProcessResult first = run_command("mpirun -n 2 " + phase1 + " --sp 2 --max-update 40");
  ASSERT_EQ(first.exit_code, 0) << first.output;
  std::vector<double> losses = valid_losses(read_file(run + "/metrics.jsonl"));
  ASSERT_EQ(losses.size(), 4u);
  auto check_best = [&](const std::vector<double>& all) {
    const size_t i = static_cast<size_t>(std::min_element(all.begin(), all.end()) - all.begin());
    const CheckpointInfo best = read_checkpoint_info(best_checkpoint_path(run));
    EXPECT_EQ(best.step, 10 * static_cast<int64_t>(i + 1));
    EXPECT_NEAR(best.valid_loss, all[i], 1e-6 * all[i]);
  };
  check_best(losses);
  // --keep-last 1: one numbered checkpoint, the best still there beside it.
  EXPECT_EQ(checkpoint_steps(run), (std::vector<int64_t>{40}));

  // A second start resumes the run (the fine-tuning source is ignored, and says so), and the
  // best stays the lowest of both runs' validations.
  ProcessResult second =
      run_command(phase1 + " --max-update 50 --finetune-from-model " + best_checkpoint_path(run));
  ASSERT_EQ(second.exit_code, 0) << second.output;
  EXPECT_NE(second.output.find("resumed from " + run +
                               "/checkpoint_last.h5 at update 40; "
                               "--finetune-from-model " +
                               best_checkpoint_path(run) + " is ignored"),
            std::string::npos)
      << second.output;
  losses = valid_losses(read_file(run + "/metrics.jsonl"));
  ASSERT_EQ(losses.size(), 5u);
  check_best(losses);

  // Phase 2: twice the block and memory, from phase 1's best.
  ProcessResult next =
      run_command(tls_dist_binary() + " train" + flags() +
                  " --tokens-per-sample 256 --mem-len 256 --max-update 2 "
                  "--validate-interval 0 --save-interval 0 --finetune-from-model " +
                  best_checkpoint_path(run) + " --save-dir " + dir + "/phase2");
  ASSERT_EQ(next.exit_code, 0) << next.output;
  EXPECT_NE(next.output.find("fine-tuning from the weights of " + best_checkpoint_path(run)),
            std::string::npos)
      << next.output;
  EXPECT_EQ(read_checkpoint_info(dir + "/phase2/checkpoint_last.h5").config.tokens_per_sample, 256);
}

// tls_dist eval as the paper runs it (batch 1, the file as one stream, --tokens-per-sample far
// below the training block and the window, --mem-len far above the training memory), here on
// two tensor-parallel ranks in float32, against the same protocol computed in float64 in one
// process: block by block, the caches carried, every byte after the first predicted once.
TEST_F(Recipe, ThePapersEvaluationProtocolMatchesAFloat64Reference) {
  const std::string dir = scratch_dir("recipe_eval"), run = dir + "/run";
  ProcessResult train = run_command(tls_dist_binary() + " train" + flags() +
                                    " --max-update 20 --validate-interval 0 --save-interval 0 "
                                    "--save-dir " +
                                    run);
  ASSERT_EQ(train.exit_code, 0) << train.output;
  const int64_t T = 16, M = 512;  // training: T = M = 128, window 32
  const std::string text = read_file(corpus("test")).substr(0, 100 * T + 1);
  const std::string data = dir + "/test.txt";
  std::ofstream(data, std::ios::binary) << text;
  const std::string checkpoint = run + "/checkpoint_last.h5";
  ProcessResult eval = run_command(
      "mpirun -n 2 " + tls_dist_binary() + " eval --tp 2 --checkpoint " + checkpoint + " --data " +
      data + " --tokens-per-sample " + std::to_string(T) + " --mem-len " + std::to_string(M));
  ASSERT_EQ(eval.exit_code, 0) << eval.output;
  std::smatch m;
  const std::string last = last_line(eval.output);
  ASSERT_TRUE(std::regex_match(last, m, std::regex("bpc ([0-9.]+) tokens ([0-9]+)"))) << last;
  EXPECT_EQ(std::stoll(m[2]), 100 * T);

  CheckpointInfo info = read_checkpoint_info(checkpoint);
  ModelConfig cfg = info.config;
  ASSERT_LT(T, cfg.window_len);
  ASSERT_GT(M, cfg.mem_len);
  cfg.tokens_per_sample = T;
  cfg.mem_len = M;
  cfg.dropout = cfg.emb_dropout = 0;
  auto ops = make_cpu_ops();
  TransformerLSModel model(*ops, cfg, DType::f64);
  CheckpointContents contents = checkpoint_contents(model, nullptr, nullptr, 0, TrainSettings());
  LoadOptions load;
  load.weights_only = true;
  load.allow_length_change = true;
  load_checkpoint(checkpoint, contents, Topology::single(), *ops, load);
  ModelState state = model.initial_state(1);
  double nll = 0;
  for (int64_t b = 0; b < 100; ++b) {
    std::vector<double> in, tg;
    for (int64_t t = 0; t < T; ++t) {
      in.push_back(static_cast<unsigned char>(text[static_cast<size_t>(b * T + t)]));
      tg.push_back(static_cast<unsigned char>(text[static_cast<size_t>(b * T + t + 1)]));
    }
    Tensor tokens = ops->empty({1, T}, DType::i32), targets = ops->empty({1, T}, DType::i32);
    ops->from_host(tokens, in);
    ops->from_host(targets, tg);
    ModelSaved saved;
    nll += model.forward(tokens, targets, state, saved, PassContext{});
  }
  const double bpc = nll / static_cast<double>(100 * T) / std::log(2.0);
  EXPECT_NEAR(std::stod(m[1]), bpc, 1e-5 * bpc) << "program (float32, tp 2) vs float64 reference";
}

}  // namespace
}  // namespace tls::testing
