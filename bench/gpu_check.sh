#!/usr/bin/env bash
# One command for the GPU checks: configure and build the CUDA backend for sm_90 (Release),
# run the GPU tests (ctest -R cuda, case-insensitive: the per-op, model, layout and program
# suites of tests/**/cuda_*_test.cpp; those needing more GPUs than the machine has skip) and
# the GPU benchmark (bench/gpu_bench.cpp), which prints markdown tables. Meant to finish within
# 8 minutes on one H100. Without a GPU it still builds, the tests skip with the reason, and the
# benchmark prints "no GPU: <reason>"; the script then exits 0.
#   bench/gpu_check.sh [build-dir]      (default: build-gpu next to the sources; JOBS=16)
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
build=${1:-$root/build-gpu}
jobs=${JOBS:-16}

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
  echo "gpu_check: the CUDA backend was not enabled (nvcc, cuBLAS, NCCL or cuDNN missing)"
  exit 1
fi

echo "== build (-j$jobs)"
cmake --build "$build" -j"$jobs" --target tls_dist cuda_ops_test cuda_model_test cuda_program_test \
  cuda_parallel_model_mpi_test gpu_bench

echo "== GPU tests"
(cd "$build" && ctest -R '[Cc]uda' --output-on-failure -j4 --timeout 300)
"$build/tests/cuda_ops_test" --gtest_filter=CudaOpsTest.Gemm 2>&1 | grep -i -m1 "no CUDA device" || true

echo "== GPU benchmark"
timeout 420 "$build/bench/gpu_bench"
