// Which OpenBLAS kernels the process runs, and a guard against the slow generic ones.
//
// Debian's OpenBLAS is built for every x86 core (DYNAMIC_ARCH) and picks its kernels from the
// CPU model number when the library loads. A CPU newer than the OpenBLAS build (for 0.3.21:
// Emerald Rapids, model 207) is not recognised and gets the generic "Prescott" SSE3 kernels:
// sgemm at 38 GFLOP/s instead of 174 on 2 cores of such a machine (bench/train_step_bench). The
// choice can only be changed by OPENBLAS_CORETYPE before the library loads, so the programs'
// main() re-executes itself once with the variable set (ensure_fitting_blas_core). A user's own
// OPENBLAS_CORETYPE is always respected.
#pragma once

#include <string>

namespace tls::cpu {

// OpenBLAS's name for the kernels it runs ("SkylakeX", "Haswell", "Prescott", ...).
std::string blas_core_name();

// The OpenBLAS core type that fits this CPU's vector units ("SkylakeX" with AVX-512, "Haswell"
// with AVX2 + FMA), or "" when the CPU has neither.
std::string fitting_blas_core();

// True when OpenBLAS runs kernels without AVX2 on a CPU that has AVX2 and FMA.
bool blas_core_is_generic();

// If OpenBLAS chose generic kernels on this CPU and OPENBLAS_CORETYPE is unset, sets it to the
// fitting core and re-executes the program (same pid, same arguments) before anything else has
// started; returns normally otherwise, or if the re-execution fails. Call first in main().
void ensure_fitting_blas_core(char** argv);

// One line for start-up messages, e.g. "OpenBLAS SkylakeX kernels (chosen by tls_dist: this
// OpenBLAS does not know the CPU)".
std::string blas_core_description();

}  // namespace tls::cpu
