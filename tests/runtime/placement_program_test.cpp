// The start-up placement warning of a real run (runtime/placement_check.h): mpirun binds a
// single rank to one core by default, so OMP_NUM_THREADS above that core's hardware threads
// makes them share it and tls_dist says so, once per node; with --bind-to none the rank may use
// every CPU and nothing is said. Skipped where the machine has too few CPUs to tell the two apart.
#include <gtest/gtest.h>
#include <sched.h>

#include <filesystem>
#include <fstream>
#include <string>

#include "support/process.h"

namespace tls::testing {
namespace {

// Hardware threads of the core holding CPU 0 (what --bind-to core gives a rank).
int threads_per_core() {
  std::ifstream in("/sys/devices/system/cpu/cpu0/topology/thread_siblings_list");
  std::string list;
  if (!(in >> list)) return 1;
  int count = 0;
  for (size_t at = 0; at < list.size();) {
    const size_t comma = list.find(',', at);
    const std::string part = list.substr(at, comma == std::string::npos ? comma : comma - at);
    const size_t dash = part.find('-');
    count += dash == std::string::npos ? 1 : std::stoi(part.substr(dash + 1)) - std::stoi(part) + 1;
    if (comma == std::string::npos) break;
    at = comma + 1;
  }
  return count;
}

int cpus_here() {
  cpu_set_t mask;
  CPU_ZERO(&mask);
  return sched_getaffinity(0, sizeof mask, &mask) == 0 ? CPU_COUNT(&mask) : 1;
}

size_t count(const std::string& text, const std::string& part) {
  size_t n = 0;
  for (size_t at = text.find(part); at != std::string::npos; at = text.find(part, at + 1)) ++n;
  return n;
}

TEST(PlacementProgram, ThreadsBoundToOneCoreWarnOnceAndUnboundDoNot) {
  const int threads = threads_per_core() + 1;
  if (cpus_here() < threads)
    GTEST_SKIP() << "needs " << threads << " CPUs to run " << threads << " threads unbound";
  ASSERT_TRUE(std::filesystem::exists(source_path("data/kernel-docs/train.txt")));
  auto run = [&](const std::string& binding, int ranks = 1) {
    const std::string dir = scratch_dir("placement_" + binding + std::to_string(ranks));
    return run_command("OMP_NUM_THREADS=" + std::to_string(threads) + " mpirun -n " +
                           std::to_string(ranks) + " --bind-to " + binding + " " +
                           tls_dist_binary() + " train --config " +
                           source_path("launch/tiny_demo.ini") +
                           " --max-update 1 --validate-interval 0 --save-interval 0 --train-data " +
                           source_path("data/kernel-docs/train.txt") + " --save-dir " + dir,
                       120);
  };
  const ProcessResult bound = run("core");
  ASSERT_EQ(bound.exit_code, 0) << bound.output;
  EXPECT_EQ(count(bound.output, "tls_dist: warning: node "), 1u) << bound.output;
  EXPECT_NE(bound.output.find(std::to_string(threads) + " threads on CPU(s) "), std::string::npos)
      << bound.output;
  EXPECT_NE(bound.output.find("--bind-to none"), std::string::npos) << bound.output;
  EXPECT_NE(bound.output.find("--map-by ppr:1:node:PE=" + std::to_string(threads)),
            std::string::npos)
      << bound.output;

  // Two ranks, each bound to a core: one line for the node, naming both.
  const ProcessResult two = run("core", 2);
  ASSERT_EQ(two.exit_code, 0) << two.output;
  EXPECT_EQ(count(two.output, "tls_dist: warning: node "), 1u) << two.output;
  EXPECT_NE(two.output.find("(ranks 0,1)"), std::string::npos) << two.output;
  EXPECT_NE(two.output.find("rank(s) 0,1 "), std::string::npos) << two.output;

  const ProcessResult unbound = run("none");
  ASSERT_EQ(unbound.exit_code, 0) << unbound.output;
  EXPECT_EQ(unbound.output.find("warning"), std::string::npos) << unbound.output;
}

}  // namespace
}  // namespace tls::testing
