#include "kernels/cpu/blas_core.h"

#include <unistd.h>

#include <array>
#include <cstdlib>
#include <string>

extern "C" char* openblas_get_corename(void);

namespace tls::cpu {
namespace {

// Set in the environment of the re-executed program, so its start-up line can say why
// OPENBLAS_CORETYPE is set.
constexpr const char* kChosenMark = "TLS_OPENBLAS_CORETYPE_CHOSEN";

// OpenBLAS x86 cores whose kernels predate AVX2.
bool is_pre_avx2_core(const std::string& name) {
  static constexpr std::array<const char*, 16> kOld = {
      "Prescott",  "Core2",      "Penryn",      "Dunnington", "Nehalem", "Atom",
      "Katmai",    "Coppermine", "Northwood",   "Banias",     "Opteron", "Opteron_SSE3",
      "Barcelona", "Bobcat",     "Sandybridge", "Bulldozer"};
  for (const char* old : kOld)
    if (name == old) return true;
  return false;
}

}  // namespace

std::string blas_core_name() {
  const char* name = openblas_get_corename();
  return name ? std::string(name) : std::string("unknown");
}

std::string fitting_blas_core() {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_cpu_init();
  if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
      __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq"))
    return "SkylakeX";
  if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) return "Haswell";
#endif
  return "";
}

bool blas_core_is_generic() {
  return !fitting_blas_core().empty() && is_pre_avx2_core(blas_core_name());
}

void ensure_fitting_blas_core(char** argv) {
  if (std::getenv("OPENBLAS_CORETYPE") != nullptr || !blas_core_is_generic()) return;
  const std::string core = fitting_blas_core();
  setenv("OPENBLAS_CORETYPE", core.c_str(), 1);
  setenv(kChosenMark, blas_core_name().c_str(), 1);
  execv("/proc/self/exe", argv);
  // execv failed: carry on with the slow kernels, as before (the start-up line shows them).
  unsetenv("OPENBLAS_CORETYPE");
  unsetenv(kChosenMark);
}

std::string blas_core_description() {
  std::string line = "OpenBLAS " + blas_core_name() + " kernels";
  if (const char* was = std::getenv(kChosenMark))
    line += std::string(" (OPENBLAS_CORETYPE set by tls_dist: this OpenBLAS gave the CPU its ") +
            was + " kernels)";
  else if (blas_core_is_generic())
    line += " (generic: set OPENBLAS_CORETYPE=" + fitting_blas_core() + " for this CPU)";
  return line;
}

}  // namespace tls::cpu
