// Which OpenBLAS kernels the process runs, and a guard against kernels narrower than the CPU.
//
// Debian's OpenBLAS is built for every x86 core (DYNAMIC_ARCH) and picks its kernels from the
// CPU model number when the library loads. 0.3.21 does not know CPUs newer than itself and
// may under-serve them: Emerald Rapids (Intel, model 207) gets the generic "Prescott" SSE3
// kernels (sgemm at 38 GFLOP/s instead of 174 on 2 cores). Vector width is what matters: AVX2
// kernels on an AVX-512 CPU lose half (on a Zen 5, 2 cores: sgemm 257 GFLOP/s with Haswell
// kernels, 485 with SkylakeX). The choice can only be changed by
// OPENBLAS_CORETYPE before the library loads, so the programs' main() re-executes itself once
// with the variable set (ensure_fitting_blas_core). A user's own OPENBLAS_CORETYPE is always
// respected, and reported when it is narrower than the CPU.
#pragma once

#include <string>

namespace tls::cpu {

// OpenBLAS's name for the kernels it runs ("SkylakeX", "Haswell", "Prescott", ...).
std::string blas_core_name();

// The OpenBLAS core type that fits this CPU's vector units ("SkylakeX" with AVX-512, "Haswell"
// with AVX2 + FMA), or "" when the CPU has neither.
std::string fitting_blas_core();

// True when OpenBLAS runs kernels with narrower vectors than the CPU has: no AVX2 on a CPU with
// AVX2 and FMA, or no AVX-512 on a CPU with AVX-512 (F, BW, VL and DQ).
bool blas_core_is_narrower_than_cpu();

// If OpenBLAS chose narrower kernels than this CPU runs and OPENBLAS_CORETYPE is unset, sets it
// to the fitting core and re-executes the program (same pid, same arguments) before anything
// else has started; returns normally otherwise, or if the re-execution fails. Call first in
// main().
void ensure_fitting_blas_core(char** argv);

// One line for start-up messages, e.g. "OpenBLAS SkylakeX kernels (OPENBLAS_CORETYPE set by
// tls_dist: this OpenBLAS gave the CPU its Haswell kernels)".
std::string blas_core_description();

}  // namespace tls::cpu
