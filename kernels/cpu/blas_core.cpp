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

// The vector width, in bits, of the kernels an OpenBLAS x86 core type runs: 512 for its AVX-512
// cores, 128 for those that predate AVX2, 256 for the rest (Haswell, Zen, ...).
int core_vector_bits(const std::string& name) {
  static constexpr std::array<const char*, 3> kAvx512 = {"SkylakeX", "Cooperlake",
                                                         "SapphireRapids"};
  static constexpr std::array<const char*, 16> kPreAvx2 = {
      "Prescott",  "Core2",      "Penryn",      "Dunnington", "Nehalem", "Atom",
      "Katmai",    "Coppermine", "Northwood",   "Banias",     "Opteron", "Opteron_SSE3",
      "Barcelona", "Bobcat",     "Sandybridge", "Bulldozer"};
  for (const char* core : kAvx512)
    if (name == core) return 512;
  for (const char* old : kPreAvx2)
    if (name == old) return 128;
  return 256;
}

int cpu_vector_bits(const std::string& fitting_core) {
  if (fitting_core == "SkylakeX") return 512;
  if (fitting_core == "Haswell") return 256;
  return 0;
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

bool blas_core_is_narrower_than_cpu() {
  return cpu_vector_bits(fitting_blas_core()) > core_vector_bits(blas_core_name());
}

void ensure_fitting_blas_core(char** argv) {
  if (std::getenv("OPENBLAS_CORETYPE") != nullptr || !blas_core_is_narrower_than_cpu()) return;
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
  else if (blas_core_is_narrower_than_cpu())
    line += " (narrower than this CPU's vectors: OPENBLAS_CORETYPE=" + fitting_blas_core() +
            " fits it)";
  return line;
}

}  // namespace tls::cpu
