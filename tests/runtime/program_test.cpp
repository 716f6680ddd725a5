// The tls_dist program end to end (docs/DESIGN.md section 6): training under mpirun on the default
// corpus with the loss and validation BPC falling, eval's output contract, generate, inspect,
// SIGTERM with resume, a dying rank ending the job, and bad input refused with one line, a
// non-zero exit and no checkpoint touched.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <map>
#include <regex>
#include <sstream>

#include "support/process.h"

namespace tls::testing {
namespace {

namespace fs = std::filesystem;

std::string corpus(const std::string& split) {
  return source_path("data/kernel-docs/" + split + ".txt");
}

std::string tiny_flags() {
  return " --config " + source_path("launch/tiny_demo.ini") +
         " --validate-interval 0 --save-interval 0 --log-interval 1 --valid-max-bytes 0";
}

double unigram_entropy_bits(const std::string& bytes) {
  std::map<unsigned char, double> counts;
  for (unsigned char c : bytes) counts[c] += 1;
  double h = 0;
  for (auto& [c, n] : counts) h -= n / bytes.size() * std::log2(n / bytes.size());
  return h;
}

std::vector<double> logged(const std::string& metrics, const std::string& key, bool valid) {
  std::vector<double> values;
  std::istringstream in(metrics);
  std::string line;
  const std::regex field("\"" + key + "\": ([-0-9.eE+]+)");
  while (std::getline(in, line)) {
    if ((line.find("\"split\": \"valid\"") != std::string::npos) != valid) continue;
    std::smatch m;
    if (std::regex_search(line, m, field)) values.push_back(std::stod(m[1]));
  }
  return values;
}

int count_lines_starting(const std::string& text, const std::string& prefix) {
  std::istringstream in(text);
  std::string line;
  int n = 0;
  while (std::getline(in, line)) n += line.rfind(prefix, 0) == 0;
  return n;
}

void write_file(const std::string& path, const std::string& text) {
  std::ofstream(path, std::ios::binary) << text;
}

class Program : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_TRUE(fs::exists(corpus("train")))
        << "the default corpus is missing: run launch/prepare_corpus.sh data/kernel-docs";
  }
};

TEST_F(Program, TrainsEvaluatesGeneratesAndInspectsUnderMpirun) {
  const std::string dir = scratch_dir("e2e");
  const std::string valid = dir + "/valid.txt";
  write_file(valid, read_file(corpus("valid")).substr(0, 30000));
  ProcessResult train =
      run_command("mpirun -n 2 " + tls_dist_binary() + " train" + tiny_flags() +
                  " --sp 2 --max-update 150 --log-interval 10 --train-data " + corpus("train") +
                  " --valid-data " + valid + " --save-dir " + dir + "/run");
  ASSERT_EQ(train.exit_code, 0) << train.output;
  const std::string metrics = read_file(dir + "/run/metrics.jsonl");
  const std::vector<double> loss = logged(metrics, "loss", false),
                            bpc = logged(metrics, "bpc", true);
  ASSERT_GE(loss.size(), 10u) << metrics;
  EXPECT_LT(loss.back(), loss.front() - 1.0) << "the training loss did not fall";
  ASSERT_EQ(bpc.size(), 1u) << metrics;
  const double unigram = unigram_entropy_bits(read_file(valid));
  EXPECT_LT(bpc.back(), unigram) << "validation BPC not below the corpus's unigram entropy";
  ASSERT_TRUE(fs::exists(dir + "/run/checkpoint_150.h5"));
  ASSERT_TRUE(fs::exists(dir + "/run/checkpoint_last.h5"));

  // eval on another layout; the last line is the contract scripts parse.
  ProcessResult eval =
      run_command("mpirun -n 2 " + tls_dist_binary() + " eval --tp 2 --checkpoint " + dir +
                  "/run/checkpoint_last.h5 --data " + valid);
  ASSERT_EQ(eval.exit_code, 0) << eval.output;
  std::smatch m;
  const std::string last = last_line(eval.output);
  ASSERT_TRUE(std::regex_match(last, m, std::regex("bpc ([0-9]\\.[0-9]{9,}) tokens ([0-9]+)")))
      << last;
  EXPECT_EQ(std::stoll(m[2]), 30000 - 1);
  EXPECT_NEAR(std::stod(m[1]), bpc.back(), 1e-3) << "eval and the run's validation disagree";

  ProcessResult gen =
      run_command(tls_dist_binary() + " generate --checkpoint " + dir +
                  "/run/checkpoint_last.h5 --prompt 'The kernel ' --max-new-bytes 40 --top-k 5");
  ASSERT_EQ(gen.exit_code, 0) << gen.output;
  EXPECT_EQ(gen.output.rfind("The kernel ", 0), 0u) << gen.output;
  EXPECT_GE(gen.output.size(), std::string("The kernel ").size() + 40);

  ProcessResult inspect =
      run_command(tls_dist_binary() + " inspect " + dir + "/run/checkpoint_last.h5");
  ASSERT_EQ(inspect.exit_code, 0) << inspect.output;
  EXPECT_NE(inspect.output.find("step 150"), std::string::npos) << inspect.output;
  EXPECT_NE(inspect.output.find("layers.1.attn.r_r_bias"), std::string::npos) << inspect.output;
}

TEST_F(Program, SigtermSavesThenTheNextStartResumes) {
  const std::string dir = scratch_dir("sigterm");
  const std::string run = dir + "/run";
  const std::string cmd = tls_dist_binary() + " train" + tiny_flags() +
                          " --max-update 100000 --train-data " + corpus("train") + " --save-dir " +
                          run;
  ProcessResult first =
      run_command(cmd +
                  " & pid=$!; for i in $(seq 600); do "
                  "[ $(cat " +
                  run +
                  "/metrics.jsonl 2>/dev/null | wc -l) -ge 3 ] && break; sleep 0.1; done; "
                  "kill -TERM $pid; wait $pid");
  ASSERT_EQ(first.exit_code, 0) << first.output;
  EXPECT_NE(first.output.find("stopping on signal 15"), std::string::npos) << first.output;
  const std::vector<double> steps = logged(read_file(run + "/metrics.jsonl"), "step", false);
  ASSERT_FALSE(steps.empty());
  const int64_t stopped = static_cast<int64_t>(steps.back());
  ASSERT_TRUE(fs::exists(run + "/checkpoint_" + std::to_string(stopped) + ".h5")) << first.output;

  ProcessResult second = run_command(tls_dist_binary() + " train" + tiny_flags() +
                                     " --max-update " + std::to_string(stopped + 3) +
                                     " --train-data " + corpus("train") + " --save-dir " + run);
  ASSERT_EQ(second.exit_code, 0) << second.output;
  EXPECT_NE(second.output.find("at update " + std::to_string(stopped)), std::string::npos)
      << second.output;
  const std::vector<double> after = logged(read_file(run + "/metrics.jsonl"), "step", false);
  ASSERT_EQ(after.size(), steps.size() + 3);
  for (int i = 0; i < 3; ++i) EXPECT_EQ(after[steps.size() + i], stopped + 1 + i);
}

// A background save copies the parameters and moments during the next step, before its update
// (BackgroundSaver::wait_for_snapshot); with the copy held back 2 s, a checkpoint that took
// update 4's values would resume into other losses.
TEST_F(Program, ABackgroundSaveKeepsTheStateOfItsStepWhileTrainingGoesOn) {
  const std::string dir = scratch_dir("snapshot");
  const std::string slow = dir + "/slow", again = dir + "/again";
  const std::string train = tls_dist_binary() + " train" + tiny_flags() + " --train-data " +
                            corpus("train") + " --save-interval 3 --keep-last 0 --max-update 5";
  ProcessResult first =
      run_command("TLS_FAULT_INJECT=save_slow mpirun -n 2 " + train + " --save-dir " + slow, 120);
  ASSERT_EQ(first.exit_code, 0) << first.output;
  // The same run resumed from its checkpoint of update 3.
  fs::create_directories(again);
  for (const fs::directory_entry& e : fs::directory_iterator(slow)) {
    const std::string name = e.path().filename().string();
    if (name.rfind("checkpoint_3.", 0) == 0) fs::copy_file(e.path(), again + "/" + name);
  }
  fs::create_symlink("checkpoint_3.h5", again + "/checkpoint_last.h5");
  ProcessResult second = run_command("mpirun -n 2 " + train + " --save-dir " + again, 120);
  ASSERT_EQ(second.exit_code, 0) << second.output;
  EXPECT_NE(second.output.find("at update 3"), std::string::npos) << second.output;
  const std::vector<double> whole = logged(read_file(slow + "/metrics.jsonl"), "loss", false);
  const std::vector<double> resumed = logged(read_file(again + "/metrics.jsonl"), "loss", false);
  ASSERT_EQ(whole.size(), 5u);
  ASSERT_EQ(resumed.size(), 2u);
  EXPECT_EQ(resumed[0], whole[3]);
  EXPECT_EQ(resumed[1], whole[4]);
}

TEST_F(Program, ADyingRankEndsTheJobAndNamesIt) {
  for (const std::string point : {"step", "halo"}) {
    const std::string dir = scratch_dir("death_" + point);
    ProcessResult r =
        run_command("TLS_FAULT_INJECT=" + point + "_abort_rank1 mpirun -n 2 " + tls_dist_binary() +
                        " train" + tiny_flags() + " --sp 2 --max-update 50 --train-data " +
                        corpus("train") + " --save-dir " + dir,
                    60);
    EXPECT_NE(r.exit_code, 0) << r.output;
    EXPECT_NE(r.exit_code, 124) << "the job hung after rank 1 died at " << point;
    EXPECT_LT(r.seconds, 30) << point;
    EXPECT_NE(r.output.find("rank 1"), std::string::npos) << r.output;
  }
}

TEST_F(Program, NonFiniteStepsAreSkippedThenTheRunStopsWithTheLastGoodState) {
  const std::string dir = scratch_dir("nonfinite");
  ProcessResult r = run_command(
      "TLS_FAULT_INJECT=nonfinite_loss_from4 " + tls_dist_binary() + " train" + tiny_flags() +
      " --max-update 50 --max-bad-steps 3 --train-data " + corpus("train") + " --save-dir " + dir);
  EXPECT_NE(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("update 4 has a non-finite loss or gradient; skipped"), std::string::npos)
      << r.output;
  EXPECT_NE(r.output.find("3 consecutive updates had a non-finite loss"), std::string::npos)
      << r.output;
  // Updates 4-6 were skipped: the saved weights are those after update 3, the last good one.
  ASSERT_TRUE(fs::exists(dir + "/checkpoint_6.h5")) << r.output;
  ProcessResult resumed =
      run_command(tls_dist_binary() + " train" + tiny_flags() + " --max-update 8 --train-data " +
                  corpus("train") + " --save-dir " + dir);
  EXPECT_EQ(resumed.exit_code, 0) << resumed.output;
  EXPECT_NE(resumed.output.find("at update 6"), std::string::npos) << resumed.output;
}

// --precision bf16 on the CPU backend (GEMMs on bf16-rounded operands, float32 weights): it
// trains under mpirun, says so at the start, and its float32 checkpoint resumes in fp32.
TEST_F(Program, Bf16TrainsAndItsCheckpointResumesInFloat32) {
  const std::string dir = scratch_dir("bf16");
  const std::string train = " train" + tiny_flags() + " --train-data " + corpus("train") +
                            " --save-dir " + dir + " --save-interval 30";
  ProcessResult r = run_command("mpirun -n 2 " + tls_dist_binary() + train +
                                " --sp 2 --precision bf16 --max-update 30");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("cpu bf16 (bf16 GEMM operands; bfloat16 saved activations)"),
            std::string::npos)
      << r.output;
  EXPECT_NE(r.output.find("bfloat16 saved activations); OpenBLAS "), std::string::npos) << r.output;
  const std::vector<double> loss = logged(read_file(dir + "/metrics.jsonl"), "loss", false);
  ASSERT_EQ(loss.size(), 30u);
  for (double l : loss) ASSERT_TRUE(std::isfinite(l));
  EXPECT_LT(loss.back(), loss.front() - 0.5) << "the bf16 run did not learn";
  ProcessResult resumed = run_command(tls_dist_binary() + train + " --max-update 32");
  EXPECT_EQ(resumed.exit_code, 0) << resumed.output;
  EXPECT_NE(resumed.output.find("at update 30"), std::string::npos) << resumed.output;
  EXPECT_NE(resumed.output.find("cpu fp32"), std::string::npos) << resumed.output;
}

// --activation-checkpointing recomputes in the backward the same math (the same dropout masks;
// only sums over pieces run in another order), so its training curve is the plain run's.
TEST_F(Program, ActivationCheckpointingTrainsAsThePlainRunDoes) {
  const std::string dir = scratch_dir("checkpointing");
  std::vector<std::vector<double>> losses;
  for (const std::string flag : {"", " --activation-checkpointing"}) {
    const std::string run = dir + (flag.empty() ? "/plain" : "/recomputed");
    ProcessResult r = run_command("mpirun -n 2 " + tls_dist_binary() + " train" + tiny_flags() +
                                  " --sp 2 --dropout 0.1 --max-update 12 --train-data " +
                                  corpus("train") + " --save-dir " + run + flag);
    ASSERT_EQ(r.exit_code, 0) << r.output;
    losses.push_back(logged(read_file(run + "/metrics.jsonl"), "loss", false));
    ASSERT_EQ(losses.back().size(), 12u);
  }
  for (size_t i = 0; i < losses[0].size(); ++i)
    EXPECT_NEAR(losses[0][i], losses[1][i], 1e-6 * losses[0][i]) << "update " << i + 1;
}

TEST_F(Program, ResumingOnAChangedCorpusIsRefused) {
  const std::string dir = scratch_dir("changed_corpus");
  const std::string data = dir + "/train.txt";
  write_file(data, read_file(corpus("train")).substr(0, 200000));
  ProcessResult first =
      run_command(tls_dist_binary() + " train" + tiny_flags() + " --max-update 2 --train-data " +
                  data + " --save-dir " + dir + "/run");
  ASSERT_EQ(first.exit_code, 0) << first.output;
  std::string text = read_file(data);
  text[1000] = text[1000] == 'x' ? 'y' : 'x';  // same size, one byte changed
  write_file(data, text);
  ProcessResult second =
      run_command(tls_dist_binary() + " train" + tiny_flags() + " --max-update 4 --train-data " +
                  data + " --save-dir " + dir + "/run");
  EXPECT_NE(second.exit_code, 0) << second.output;
  EXPECT_NE(second.output.find("is not the corpus"), std::string::npos) << second.output;
  EXPECT_NE(second.output.find("different contents"), std::string::npos) << second.output;
}

// Mounts a tmpfs of `megabytes` at `dir` for the test's lifetime (root only).
class SmallDisk {
 public:
  SmallDisk(const std::string& dir, int megabytes) : dir_(dir) {
    fs::create_directories(dir);
    mounted_ =
        run_command("mount -t tmpfs -o size=" + std::to_string(megabytes) + "m tmpfs " + dir, 30)
            .exit_code == 0;
  }
  ~SmallDisk() {
    if (mounted_) run_command("umount " + dir_, 30);
  }
  bool mounted() const { return mounted_; }
  bool resize(int megabytes) {
    return run_command("mount -o remount,size=" + std::to_string(megabytes) + "m " + dir_, 30)
               .exit_code == 0;
  }

 private:
  std::string dir_;
  bool mounted_ = false;
};

// The disk filling up during a save: on a 9 MiB tmpfs one checkpoint of the tiny model (7.4 MB)
// fits and the next does not. Either the space check refuses the save before writing, or (with
// the check switched off) the write itself hits ENOSPC inside parallel HDF5. Both end the job
// within 30 s with one error line that says the disk is full, leave no temporary file, no
// checkpoint_6.h5 and none of its part files, keep checkpoint_last pointing at checkpoint_3.h5,
// which loads, and with space freed the same command resumes from update 3.
TEST_F(Program, AFullDiskFailsTheSaveAndKeepsThePreviousCheckpoint) {
  for (const std::string fault : {"", "save_no_space_check"}) {
    SCOPED_TRACE(fault.empty() ? "space check" : "ENOSPC during the write");
    const std::string dir = scratch_dir(fault.empty() ? "disk_full_check" : "disk_full_write");
    SmallDisk disk(dir + "/disk", 9);
    if (!disk.mounted())
      GTEST_SKIP() << "cannot mount a tmpfs here (needs root): the disk-full case is untested";
    const std::string run = dir + "/disk/run";
    const std::string train = "mpirun -n 2 " + tls_dist_binary() + " train" + tiny_flags() +
                              " --sp 2 --save-interval 3 --max-update 6 --train-data " +
                              corpus("train") + " --save-dir " + run;
    ProcessResult r =
        run_command((fault.empty() ? "" : "TLS_FAULT_INJECT=" + fault + " ") + train, 60);
    EXPECT_NE(r.exit_code, 0) << r.output;
    EXPECT_NE(r.exit_code, 124) << "the job hung on a full disk";
    EXPECT_LT(r.seconds, 30) << r.output;
    EXPECT_EQ(count_lines_starting(r.output, "tls_dist: error"), 1) << r.output;
    EXPECT_NE(r.output.find(fault.empty() ? "not enough space to save checkpoint" : "is full"),
              std::string::npos)
        << r.output;
    std::vector<std::string> names;
    int parts_of_3 = 0;
    for (const fs::directory_entry& e : fs::directory_iterator(run)) {
      const std::string name = e.path().filename().string();
      if (name.rfind("checkpoint_3.", 0) == 0 && name.find(".part") != std::string::npos)
        ++parts_of_3;  // the parts checkpoint_3.h5 reads
      else
        names.push_back(name);
    }
    std::sort(names.begin(), names.end());
    EXPECT_EQ(names,
              (std::vector<std::string>{"checkpoint_3.h5", "checkpoint_last.h5", "metrics.jsonl"}));
    EXPECT_EQ(parts_of_3, 2);
    EXPECT_EQ(fs::read_symlink(run + "/checkpoint_last.h5").string(), "checkpoint_3.h5");

    const std::string text = dir + "/text.txt";
    write_file(text, read_file(corpus("valid")).substr(0, 5000));
    ProcessResult eval = run_command(tls_dist_binary() + " eval --checkpoint " + run +
                                     "/checkpoint_last.h5 --data " + text);
    EXPECT_EQ(eval.exit_code, 0) << eval.output;

    ASSERT_TRUE(disk.resize(32));
    ProcessResult resumed = run_command(train, 120);
    EXPECT_EQ(resumed.exit_code, 0) << resumed.output;
    EXPECT_NE(resumed.output.find("at update 3"), std::string::npos) << resumed.output;
    EXPECT_TRUE(fs::exists(run + "/checkpoint_6.h5")) << resumed.output;
  }
}

struct BadInput {
  std::string name, command, expected;  // command: arguments after the binary
};

TEST_F(Program, BadInputIsRefusedWithOneLineAndNothingTouched) {
  const std::string dir = scratch_dir("bad");
  const std::string run = dir + "/run";
  const std::string train =
      " train" + tiny_flags() + " --train-data " + corpus("train") + " --save-dir " + run;
  ProcessResult seed = run_command(tls_dist_binary() + train + " --max-update 2");
  ASSERT_EQ(seed.exit_code, 0) << seed.output;
  const std::string checkpoint = run + "/checkpoint_2.h5";
  const std::string before = read_file(checkpoint);
  write_file(dir + "/empty.txt", "");
  write_file(dir + "/short.txt", std::string(100, 'a'));
  write_file(dir + "/bad.ini", "n-layer = 2\nthis is not an option line\n");
  // Boost's error formatting looped forever on its own placeholders in the user's text.
  write_file(dir + "/placeholder.ini", "n-layer = 2\nbad %invalid_line% line\n");
  write_file(dir + "/damaged.h5", before.substr(0, before.size() / 2));
  const std::string other = " train" + tiny_flags() + " --save-dir " + dir + "/other --train-data ";
  const std::vector<BadInput> cases = {
      {"unknown flag", train + " --bogus 3", "bogus"},
      {"malformed value", train + " --lr fast", "lr"},
      {"unknown precision", train + " --precision fp16", "--precision 'fp16'"},
      {"TF32 without a GPU backend", train + " --allow-tf32", "--allow-tf32 needs --device cuda"},
      {"missing data file", other + dir + "/absent.txt", "absent.txt"},
      {"empty data file", other + dir + "/empty.txt", "empty.txt"},
      {"corpus shorter than a block per row", other + dir + "/short.txt", "--batch-size"},
      {"config that does not parse",
       " train --config " + dir + "/bad.ini --train-data x --save-dir y", "bad.ini"},
      {"Boost placeholder in a config file",
       " train --config " + dir + "/placeholder.ini --train-data x --save-dir y",
       "contains '%invalid_line%'"},
      {"Boost placeholder in a value", train + " --batch-size 'x%value%y'", "contains '%value%'"},
      {"contradicting options", other + corpus("train") + " --validate-interval 5", "--valid-data"},
      {"model flag against the resumed checkpoint", train + " --d-model 64", "--d-model"},
      {"eval on a missing checkpoint",
       " eval --checkpoint " + dir + "/none.h5 --data " + corpus("valid"), "none.h5"},
      {"eval on a damaged checkpoint",
       " eval --checkpoint " + dir + "/damaged.h5 --data " + corpus("valid"), "damaged.h5"},
      {"generate with an overlong prompt",
       " generate --checkpoint " + checkpoint + " --prompt " + std::string(70000, 'x'), "--prompt"},
  };
  for (const BadInput& c : cases) {
    ProcessResult r = run_command(tls_dist_binary() + c.command, 120);
    EXPECT_NE(r.exit_code, 0) << c.name << ": " << r.output;
    EXPECT_NE(r.exit_code, 124) << c.name << " hung";
    EXPECT_NE(r.output.find("error"), std::string::npos) << c.name << ": " << r.output;
    EXPECT_NE(r.output.find(c.expected), std::string::npos) << c.name << ": " << r.output;
    EXPECT_EQ(std::count(r.output.begin(), r.output.end(), '\n'), 1) << c.name << ": " << r.output;
    EXPECT_TRUE(read_file(checkpoint) == before) << c.name << " changed " << checkpoint;
  }
}

TEST_F(Program, LayoutsThatDoNotDivideAreRefusedOnEveryRank) {
  const std::string dir = scratch_dir("layout");
  const std::string base =
      " train" + tiny_flags() + " --train-data " + corpus("train") + " --save-dir " + dir;
  const std::vector<BadInput> cases = {
      {"world not a multiple of tp x sp", "mpirun -n 3 " + tls_dist_binary() + base + " --tp 2",
       "--tp 2"},
      {"heads not divisible by tp", "mpirun -n 3 " + tls_dist_binary() + base + " --tp 3",
       "--tp 3"},
      {"slice shorter than the window",
       "mpirun -n 4 " + tls_dist_binary() + base + " --sp 4 --window-len 64", "--window-len"},
      {"sp with mem-len != tokens-per-sample",
       "mpirun -n 2 " + tls_dist_binary() + base + " --sp 2 --mem-len 256", "--mem-len"},
      {"batch not divisible by dp", "mpirun -n 3 " + tls_dist_binary() + base, "--batch-size"},
  };
  for (const BadInput& c : cases) {
    ProcessResult r = run_command(c.command, 60);
    EXPECT_NE(r.exit_code, 0) << c.name << ": " << r.output;
    EXPECT_NE(r.exit_code, 124) << c.name << " hung";
    EXPECT_NE(r.output.find(c.expected), std::string::npos) << c.name << ": " << r.output;
    // One line from tls_dist, however many ranks found the problem (mpirun adds its own banner).
    EXPECT_EQ(count_lines_starting(r.output, "tls_dist: error"), 1) << c.name << ": " << r.output;
  }
}

}  // namespace
}  // namespace tls::testing
