#!/usr/bin/env bash
# tls_dist setup: the commands the README's quick start calls.
#
#   bash launch/setup.sh deps            install missing Debian packages (apt-get, once)
#   bash launch/setup.sh build [preset]  configure + build a CMake preset (default: cpu)
#   bash launch/setup.sh test            deps + corpus + build and run the tests (cpu preset), again
#                                        under ASan + UBSan, and build the CUDA backend (its tests
#                                        skip without a GPU)
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
  libboost-program-options-dev libopenblas-dev libgtest-dev hdf5-tools
  # Slurm for tests/launch/slurm_test.cpp and launch/slurm/train.sbatch. Slurm's mpi/pmix plugin
  # (slurm-wlm-basic-plugins) dlopens libpmix.so, which only libpmix-dev provides.
  slurmctld slurmd slurm-client munge libpmix-dev)
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

run_tests() {
  deps
  bash launch/prepare_corpus.sh data/kernel-docs
  build cpu
  ctest --preset cpu --output-on-failure
  # The whole suite again under AddressSanitizer + UndefinedBehaviorSanitizer (any report fails
  # the test), multi-rank suites included; Slurm's daemons are left to the first run.
  build asan
  ctest --preset asan --output-on-failure -E 'Slurm|[Cc]uda'
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

demo() {
  deps
  bash launch/prepare_corpus.sh data/kernel-docs
  build cpu
  bash launch/train_demo.sh build/cpu/tls_dist data/kernel-docs runs/demo
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
