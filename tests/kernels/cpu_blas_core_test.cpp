// The guard against OpenBLAS kernels narrower than the CPU (kernels/cpu/blas_core.h): a program
// started without OPENBLAS_CORETYPE ends up with kernels that fit the CPU and keeps its
// arguments, and a user's own OPENBLAS_CORETYPE is kept and reported when it is narrower.
#include <gtest/gtest.h>

#include <cstdlib>
#include <string>

#include "kernels/cpu/blas_core.h"
#include "support/process.h"

namespace tls {
namespace {

using testing::ProcessResult;
using testing::run_command;

std::string helper() { return std::string(TLS_TEST_HELPER_DIR) + "/blas_core_helper"; }

// The value after `key ` on its own line of the helper's output.
std::string field(const std::string& output, const std::string& key) {
  const size_t at = output.find(key + " ");
  if (at == std::string::npos) return "<missing " + key + ">";
  const size_t from = at + key.size() + 1;
  return output.substr(from, output.find('\n', from) - from);
}

// The helper run with the user's OPENBLAS_CORETYPE set to `core`; it must exit cleanly.
ProcessResult helper_with_core(const std::string& core) {
  const ProcessResult r =
      run_command("env -u TLS_OPENBLAS_CORETYPE_CHOSEN OPENBLAS_CORETYPE=" + core + " " + helper());
  EXPECT_EQ(r.exit_code, 0) << r.output;
  return r;
}

TEST(BlasCore, NamesTheKernelsAndTheFittingCore) {
  EXPECT_FALSE(cpu::blas_core_name().empty());
  EXPECT_NE(cpu::blas_core_description().find(cpu::blas_core_name()), std::string::npos);
  const std::string fit = cpu::fitting_blas_core();
  EXPECT_TRUE(fit.empty() || fit == "SkylakeX" || fit == "Haswell") << fit;
}

TEST(BlasCore, ThisTestProcessRunsKernelsThatFitTheCpu) {
  const char* user = std::getenv("OPENBLAS_CORETYPE");
  if (user != nullptr && std::getenv("TLS_OPENBLAS_CORETYPE_CHOSEN") == nullptr)
    GTEST_SKIP() << "OPENBLAS_CORETYPE=" << user << " was set by the user and is kept";
  EXPECT_FALSE(cpu::blas_core_is_narrower_than_cpu()) << cpu::blas_core_description();
}

TEST(BlasCore, AProgramStartedWithoutTheVariableGetsFittingKernelsAndKeepsItsArguments) {
  const ProcessResult r = run_command("env -u OPENBLAS_CORETYPE -u TLS_OPENBLAS_CORETYPE_CHOSEN " +
                                      helper() + " one 'two words'");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_EQ(field(r.output, "narrower"), "0") << r.output;
  EXPECT_EQ(field(r.output, "args"), "one two words") << r.output;
}

TEST(BlasCore, AUsersOwnCoreTypeIsKeptAndReported) {
  const ProcessResult r = helper_with_core("Prescott");
  ASSERT_EQ(r.exit_code, 0);
  EXPECT_EQ(field(r.output, "core"), "Prescott") << r.output;
  const std::string fit = cpu::fitting_blas_core();
  if (fit.empty()) GTEST_SKIP() << "this CPU has neither AVX2 nor AVX-512";
  EXPECT_EQ(field(r.output, "narrower"), "1") << r.output;
  EXPECT_NE(field(r.output, "description").find("OPENBLAS_CORETYPE=" + fit + " fits it"),
            std::string::npos)
      << r.output;
}

// AVX2 kernels on an AVX-512 CPU (what OpenBLAS 0.3.21 gives AMD Zen 4 and 5): narrower, and a
// user who chose them keeps them.
TEST(BlasCore, AUsersAvx2CoreOnAnAvx512CpuIsKeptAndReportedNarrower) {
  if (cpu::fitting_blas_core() != "SkylakeX") GTEST_SKIP() << "this CPU has no AVX-512";
  const ProcessResult r = helper_with_core("Haswell");
  ASSERT_EQ(r.exit_code, 0);
  EXPECT_EQ(field(r.output, "core"), "Haswell") << r.output;
  EXPECT_EQ(field(r.output, "narrower"), "1") << r.output;
}

TEST(BlasCore, Avx512KernelsAreNeverReportedNarrower) {
  const ProcessResult r = helper_with_core("SkylakeX");
  ASSERT_EQ(r.exit_code, 0);
  if (field(r.output, "core") != "SkylakeX")
    GTEST_SKIP() << "this OpenBLAS has no SkylakeX kernels: " << field(r.output, "core");
  EXPECT_EQ(field(r.output, "narrower"), "0") << r.output;
}

}  // namespace
}  // namespace tls
