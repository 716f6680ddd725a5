#!/usr/bin/env bash
# Prepares the GPU check for a GPU machine that cannot build tls_dist: one with the CUDA toolkit,
# CMake and Python but none of tls_dist's other dependencies (Open MPI, parallel HDF5, OpenBLAS,
# Boost, GoogleTest) and no network, where bench/gpu_check.sh cannot build. Run on a machine
# that can build tls_dist, this script builds the CUDA preset for sm_90 and packs what the GPU
# check runs into gpu_bundle.tar.xz at the repository root (git-ignored; copy it to the root of a
# checkout on the GPU machine):
#   tls_gpu/build/gpu/{tls_dist,tests/cuda_*_test,bench/gpu_bench}  the programs
#   tls_gpu/lib/    every shared library they and Open MPI's components load, except CUDA's own
#                   (driver, cudart, cuBLAS, NCCL and the like: the GPU machine's are used), and
#                   the build machine's dynamic loader: each program's interpreter and rpath
#                   point here, so they run whatever C library the GPU machine has
#   tls_gpu/ompi/   Open MPI's components and help files (found through OPAL_PKGLIBDIR /
#                   OPAL_PKGDATADIR; single-process runs need no orted: ess_singleton_isolated)
# bench/gpu_check.sh unpacks it into /tmp/tls_gpu when the tools to build are missing.
#   bench/gpu_bundle.sh            (JOBS=2 by default here)
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
build=$root/build/gpu
jobs=${JOBS:-2}
dest=/tmp/tls_gpu  # where the bundle lives on the GPU machine (absolute: interpreters need it)
cuda_libs='libcuda\.|libcudart|libcublas|libnccl|libcudnn|libnvrtc|libnvJitLink|libcupti'

command -v patchelf >/dev/null || apt-get install -y -q patchelf >/dev/null
export PATH="$PATH:/usr/local/cuda/bin"
cmake -S "$root" -B "$build" -DCMAKE_BUILD_TYPE=Release -DTLS_WITH_CUDA=ON \
  -DCMAKE_CUDA_ARCHITECTURES=90 -DTLS_BUILD_TESTS=ON -DTLS_BUILD_BENCH=ON >/dev/null
programs=(tls_dist tests/cuda_ops_test tests/cuda_tensor_core_attention_test tests/cuda_model_test
  tests/cuda_program_test tests/cuda_parallel_model_mpi_test bench/gpu_bench)
targets=()
for p in "${programs[@]}"; do targets+=("$(basename "$p")"); done
cmake --build "$build" -j"$jobs" --target "${targets[@]}"

stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT
out=$stage/tls_gpu
mkdir -p "$out/lib" "$out/ompi" "$out/build/gpu/tests" "$out/build/gpu/bench"
ompi_components=$(dirname "$(find /usr/lib -path '*openmpi*' -name 'mca_ess_singleton.so' | head -1)")
cp -r "$ompi_components" "$out/ompi/components"
cp -r /usr/share/openmpi "$out/ompi/share"

# The shared libraries a file loads (resolved here), CUDA's own left out.
needed_libs() { ldd "$1" | awk '/=> \// {print $3}' | grep -Ev "$cuda_libs" || true; }

for p in "${programs[@]}"; do cp "$build/$p" "$out/build/gpu/$p"; done
{
  for p in "${programs[@]}"; do needed_libs "$build/$p"; done
  for c in "$out"/ompi/components/*.so; do needed_libs "$c"; done
} | sort -u | while read -r lib; do cp -L "$lib" "$out/lib/"; done
cp -L /lib64/ld-linux-x86-64.so.2 "$out/lib/"
# Libraries with a RUNPATH of their own (Open MPI's point at its install folder) would look there
# and in the system's folders for what they need, not at the program's rpath: point every one
# at the bundle.
for lib in "$out"/lib/*.so* "$out"/ompi/components/*.so; do
  case $(basename "$lib") in ld-linux*) continue ;; esac
  patchelf --force-rpath --set-rpath "$dest/lib" "$lib"
done
for p in "${programs[@]}"; do
  patchelf --set-interpreter "$dest/lib/ld-linux-x86-64.so.2" --force-rpath \
    --set-rpath "$dest/lib" "$out/build/gpu/$p"
done
echo "$root" >"$out/source_root"  # the paths compiled into the tests start here
# CUDA's libraries the programs load, which gpu_check.sh looks for on the GPU machine.
for p in "${programs[@]}"; do ldd "$build/$p"; done | awk '/=> / {print $1}' |
  grep -E "$cuda_libs" | grep -v '^libcuda\.' | sort -u >"$out/cuda_libs"
tar -C "$stage" -cJf "$root/gpu_bundle.tar.xz" tls_gpu
echo "gpu_bundle: $(du -h "$root/gpu_bundle.tar.xz" | cut -f1) in $root/gpu_bundle.tar.xz" \
  "($(ls "$out/lib" | wc -l) libraries)"
