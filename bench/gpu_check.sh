#!/usr/bin/env bash
# One command for the GPU checks: configure and build the CUDA backend for sm_90 (Release),
# run the GPU tests (ctest -R cuda, case-insensitive: the per-op, model, layout and program
# suites of tests/**/cuda_*_test.cpp; those needing more GPUs than the machine has skip) and
# the GPU benchmark (bench/gpu_bench.cpp), which prints markdown tables. Meant to finish within
# 8 minutes on one H100. Without a GPU it still builds, the tests skip with the reason, and the
# benchmark prints "no GPU: <reason>"; the script then exits 0.
#   bench/gpu_check.sh [build-dir]      (default: build-gpu next to the sources; JOBS=16)
#
# On a GPU machine without tls_dist's build dependencies (CUDA, CMake and Python only, no
# network) it runs the prebuilt programs of gpu_bundle.tar.xz instead (made by bench/gpu_bundle.sh
# on a machine that can build tls_dist): the same GPU tests, run directly, then the bench.
#
#   bench/gpu_check.sh --emulated       the benchmark's tables at tiny shapes on the CUDA emulator
#                                       (no GPU needed: builds gpu_bench_emulated in build/cpu)
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)

if [ "${1:-}" = "--emulated" ]; then
  cpu_build=$root/build/cpu
  [ -f "$cpu_build/CMakeCache.txt" ] || (cd "$root" && cmake --preset cpu >/dev/null)
  cmake --build "$cpu_build" -j"${JOBS:-2}" --target gpu_bench_emulated >/dev/null
  exec "$cpu_build/tests/cuda_emulator/gpu_bench_emulated" --emulated
fi
build=${1:-$root/build-gpu}
jobs=${JOBS:-16}

run_bundle() {
  echo "== prebuilt bundle $root/gpu_bundle.tar.xz"
  rm -rf /tmp/tls_gpu
  tar -C /tmp -xJf "$root/gpu_bundle.tar.xz"
  # The paths compiled into the tests: the checkout they were built from, its build/gpu.
  local src
  src=$(cat /tmp/tls_gpu/source_root)
  if [ "$src" != "$root" ] && [ ! -e "$src" ]; then
    mkdir -p "$(dirname "$src")"
    ln -s "$root" "$src"
  fi
  mkdir -p "$src/build"
  rm -rf "$src/build/gpu"
  ln -s /tmp/tls_gpu/build/gpu "$src/build/gpu"
  # CUDA's own libraries from this machine (toolkit folders or Python wheels).
  local dirs="" lib python_dirs
  python_dirs=$(python3 -c 'import site; print(" ".join(site.getsitepackages() + [site.getusersitepackages()]))' 2>/dev/null || true)
  for lib in $(cat /tmp/tls_gpu/cuda_libs); do
    local at
    at=$(find /usr/local/cuda/ /usr/lib /usr/local/lib /opt $python_dirs -name "$lib" 2>/dev/null |
      head -1 || true)
    [ -n "$at" ] || { echo "gpu_check: $lib not found on this machine" >&2; exit 1; }
    dirs="$dirs:$(dirname "$at")"
  done
  export LD_LIBRARY_PATH="${dirs#:}${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
  export OPAL_PKGLIBDIR=/tmp/tls_gpu/ompi/components OPAL_PKGDATADIR=/tmp/tls_gpu/ompi/share
  export OMPI_MCA_ess_singleton_isolated=1 OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
  export OMP_NUM_THREADS=${OMP_NUM_THREADS:-8} OPENBLAS_NUM_THREADS=${OPENBLAS_NUM_THREADS:-8}
  echo "== GPU tests"
  local t failed=0
  for t in cuda_ops_test cuda_tensor_core_attention_test cuda_model_test cuda_program_test \
    cuda_parallel_model_mpi_test; do
    echo "-- $t"
    timeout 300 "$src/build/gpu/tests/$t" --gtest_brief=1 || failed=1
  done
  echo "== GPU benchmark"
  timeout 420 "$src/build/gpu/bench/gpu_bench" || failed=1
  return $failed
}

# TLS_GPU_CHECK_BUNDLE=1 runs the bundle even where tls_dist could be built (to test it).
if [ "${TLS_GPU_CHECK_BUNDLE:-0}" = 1 ] || ! command -v mpicc >/dev/null 2>&1; then
  if [ -f "$root/gpu_bundle.tar.xz" ]; then
    run_bundle
    exit $?
  fi
  echo "gpu_check: no MPI compiler here, so tls_dist cannot be built; make gpu_bundle.tar.xz with" \
    "bench/gpu_bundle.sh on a machine that can build it and bring it along" >&2
  exit 1
fi

cuda_flags=()
if ! command -v nvcc >/dev/null 2>&1 && [ -x /usr/local/cuda/bin/nvcc ]; then
  cuda_flags+=(-DCMAKE_CUDA_COMPILER=/usr/local/cuda/bin/nvcc)
fi

mkdir -p "$build"
echo "== configure ($build)"
cmake -S "$root" -B "$build" -DCMAKE_BUILD_TYPE=Release -DTLS_WITH_CUDA=ON \
  -DCMAKE_CUDA_ARCHITECTURES=90 -DTLS_BUILD_TESTS=ON -DTLS_BUILD_BENCH=ON "${cuda_flags[@]}" >"$build/gpu_check_configure.log" 2>&1 \
  || { cat "$build/gpu_check_configure.log"; exit 1; }
if ! grep -q "CUDA backend ON" "$build/gpu_check_configure.log"; then
  grep "tls_dist:" "$build/gpu_check_configure.log" || true
  echo "gpu_check: the CUDA backend was not enabled (nvcc, cuBLAS or NCCL missing)"
  exit 1
fi

echo "== build (-j$jobs)"
cmake --build "$build" -j"$jobs" --target tls_dist cuda_ops_test cuda_tensor_core_attention_test \
  cuda_model_test cuda_program_test \
  cuda_parallel_model_mpi_test gpu_bench

echo "== GPU tests"
(cd "$build" && ctest -R '[Cc]uda' --output-on-failure -j4 --timeout 300)
"$build/tests/cuda_ops_test" --gtest_filter=CudaOpsTest.Gemm 2>&1 | grep -i -m1 "no CUDA device" || true

echo "== GPU benchmark"
timeout 420 "$build/bench/gpu_bench"
