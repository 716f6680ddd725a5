#!/usr/bin/env bash
# tls_dist setup: the commands the README's quick start calls.
#
#   bash launch/setup.sh deps            install missing Debian packages (apt-get, once)
#   bash launch/setup.sh build [preset]  configure + build a CMake preset (default: cpu)
#   bash launch/setup.sh test            deps + corpus + build and run the tests (cpu preset), again
#                                        under ASan + UBSan, run each libFuzzer target for a minute,
#                                        and build the CUDA backend (its tests skip without a GPU)
#   bash launch/setup.sh demo            deps + corpus + build + train, evaluate and sample the
#                                        tiny demo model under mpirun (2 ranks, a few minutes)
#
# Runs from any directory; works as root (containers) and as a user with sudo.
set -euo pipefail

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO_ROOT"

# Open MPI refuses root and oversubscription by default; containers and 2-core CI need both.
export OMPI_ALLOW_RUN_AS_ROOT=1
export OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
export OMPI_MCA_rmaps_base_oversubscribe=1

PACKAGES=(cmake g++ make libopenmpi-dev openmpi-bin libhdf5-openmpi-dev
  libboost-program-options-dev libopenblas-dev libgtest-dev hdf5-tools unzip
  # Slurm for tests/launch/slurm_test.cpp and launch/slurm/train.sbatch. Slurm's mpi/pmix plugin
  # (slurm-wlm-basic-plugins) dlopens libpmix.so, which only libpmix-dev provides.
  slurmctld slurmd slurm-client munge libpmix-dev
  # clang, libFuzzer and clang's OpenMP for the fuzz targets in tests/fuzz.
  clang libclang-rt-dev libomp-dev)
JOBS="${TLS_BUILD_JOBS:-2}"

log() { echo "[setup] $*" >&2; }

deps() {
  local missing=()
  for p in "${PACKAGES[@]}"; do
    dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
  done
  if [ "${#missing[@]}" -eq 0 ]; then
    log "all ${#PACKAGES[@]} Debian packages present"
    return 0
  fi
  log "installing: ${missing[*]}"
  local sudo=""
  if [ "$(id -u)" -ne 0 ]; then sudo="sudo"; fi
  $sudo apt-get update
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y --no-install-recommends "${missing[@]}"
}

build() {
  local preset="${1:-cpu}"
  log "configure + build preset '$preset' (build/$preset)"
  cmake --preset "$preset"
  cmake --build --preset "$preset" -j"$JOBS"
}

# Whether the sanitizer report in $1 is a crash inside libhdf5 on HDF5's own memory: HDF5 1.10
# over-reads some malformed object headers before any check of ours can run (tests/fuzz/README.md).
# The topmost frame that is ours or HDF5's must be HDF5's, and the memory must not be ours.
hdf5_internal_crash() {
  local first
  first="$(grep -m1 -E '^ *#[0-9]+ .*( in tls::| in LLVMFuzzerTestOneInput|libhdf5)' "$1" || true)"
  [[ "$first" == *libhdf5* ]] && ! sed -n '/allocated by thread/,/^$/p' "$1" | grep -q 'tls::'
}

# A short libFuzzer run (tests/fuzz): both targets built with clang (-fsanitize=fuzzer,address,
# undefined), each run for FUZZ_SECONDS on a scratch copy of its seed corpus (fork mode, so one
# finding does not end the run). Every input that crashes, hangs, leaks or trips a sanitizer is
# run again and fails the stage, except crashes inside libhdf5 itself, which are listed.
# Skipped, saying why, without clang, libFuzzer or clang's OpenMP.
fuzz_smoke() {
  local seconds="${FUZZ_SECONDS:-60}" dir=build/fuzz probe
  if ! command -v clang++ >/dev/null 2>&1; then
    log "clang++ not found: the fuzz targets were not run"
    return 0
  fi
  probe="$(mktemp -d)"
  printf 'extern "C" int LLVMFuzzerTestOneInput(const unsigned char*, unsigned long) { return 0; }\n' \
    > "$probe/probe.cpp"
  if ! clang++ -fsanitize=fuzzer,address "$probe/probe.cpp" -o "$probe/probe" >/dev/null 2>&1; then
    log "clang++ cannot link -fsanitize=fuzzer (libFuzzer missing): the fuzz targets were not run"
    rm -rf "$probe"
    return 0
  fi
  printf '#include <omp.h>\nint main() { return omp_get_max_threads() > 0 ? 0 : 1; }\n' > "$probe/omp.cpp"
  if ! clang++ -fopenmp "$probe/omp.cpp" -o "$probe/omp" >/dev/null 2>&1; then
    log "clang++ has no OpenMP (libomp-dev missing): the fuzz targets were not run"
    rm -rf "$probe"
    return 0
  fi
  rm -rf "$probe"
  log "fuzz: build $dir with clang, then ${seconds} s per target"
  CC=clang CXX=clang++ cmake -S . -B "$dir" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DTLS_WITH_CUDA=OFF \
    -DTLS_BUILD_TESTS=OFF -DTLS_BUILD_BENCH=OFF -DTLS_BUILD_FUZZ=ON
  cmake --build "$dir" -j"$JOBS" --target options_fuzz checkpoint_fuzz
  local t work a failed=0
  local -x OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1
  for t in options_fuzz checkpoint_fuzz; do
    work="$dir/fuzz-work/$t"
    rm -rf "$work" && mkdir -p "$work/corpus" "$work/artifacts"
    # The seeds (the regress_* inputs among them) first: each must pass.
    "$dir/tests/fuzz/$t" -runs=0 -timeout=30 "tests/fuzz/corpus/$t" > "$work/seeds.log" 2>&1 ||
      { cat "$work/seeds.log" >&2; log "fuzz: $t fails on its seed corpus"; return 1; }
    "$dir/tests/fuzz/$t" -fork=1 -ignore_crashes=1 -ignore_timeouts=1 -ignore_ooms=1 \
      -max_total_time="$seconds" -timeout=30 -rss_limit_mb=4096 -print_final_stats=1 \
      -artifact_prefix="$work/artifacts/" "$work/corpus" "tests/fuzz/corpus/$t" \
      > "$work/fuzz.log" 2>&1 || true
    grep -E '^#[0-9]+: cov' "$work/fuzz.log" | tail -n 1 >&2 || true
    for a in "$work"/artifacts/*; do
      [ -f "$a" ] || continue
      case "$a" in *.report) continue ;; esac
      if "$dir/tests/fuzz/$t" -timeout=30 "$a" > "$a.report" 2>&1; then
        log "fuzz: $t: $a did not fail again (flaky; see $work/fuzz.log)"
      elif hdf5_internal_crash "$a.report"; then
        log "fuzz: $t: $a crashes inside libhdf5 (an HDF5 bug on a malformed file; tests/fuzz/README.md)"
      else
        cat "$a.report" >&2
        log "fuzz: $t: $a is a finding in tls_dist (report above)"
        failed=1
      fi
    done
  done
  [ "$failed" -eq 0 ] || return 1
}

run_tests() {
  deps
  bash launch/prepare_corpus.sh data/kernel-docs
  build cpu
  ctest --preset cpu --output-on-failure
  # The whole suite again under AddressSanitizer + UndefinedBehaviorSanitizer (any report fails
  # the test), multi-rank suites included; Slurm's daemons are left to the first run.
  build asan
  ctest --preset asan --output-on-failure -E 'Slurm|[Cc]uda'
  fuzz_smoke
  # The CUDA backend must compile and link for sm_80 and sm_90 wherever nvcc is; its tests skip,
  # naming the reason, when the machine has no GPU.
  if command -v nvcc >/dev/null 2>&1 || [ -x /usr/local/cuda/bin/nvcc ]; then
    export PATH="$PATH:/usr/local/cuda/bin"
    build cuda
    ctest --preset cuda --output-on-failure -R '[Cc]uda'
  else
    log "nvcc not found: the CUDA backend was not built"
  fi
}

# Runs one stage of the demo and says how long it took.
timed() {
  local name="$1" start=$SECONDS
  shift
  "$@"
  log "$name: $((SECONDS - start)) s"
}

# The demo builds only the program it runs (the test suites are the test command's business).
demo() {
  timed "packages" deps
  timed "corpus" bash launch/prepare_corpus.sh data/kernel-docs
  timed "configure" cmake --preset cpu
  timed "build tls_dist" cmake --build --preset cpu -j"$JOBS" --target tls_dist
  timed "train, evaluate and sample" bash launch/train_demo.sh build/cpu/tls_dist data/kernel-docs runs/demo
}

case "${1:-}" in
  deps) deps ;;
  build) shift; build "$@" ;;
  test) run_tests ;;
  demo) demo ;;
  *)
    echo "usage: bash launch/setup.sh deps | build [cpu|cuda|debug|asan] | test | demo" >&2
    exit 2
    ;;
esac
