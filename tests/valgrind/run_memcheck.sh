#!/usr/bin/env bash
# valgrind memcheck of a short two-rank training run: no invalid reads or writes, no
# leaks attributed to tls_dist. Too slow for CI (a few minutes); run by hand:
#
#   bash tests/valgrind/run_memcheck.sh [path/to/tls_dist] [output folder]
#
# Defaults: build/cpu/tls_dist, /tmp/tls_memcheck. Each rank writes memcheck.<phase>.<rank>.log there.
# Suppressions: Open MPI's own file (when installed) plus tests/valgrind/tls_dist.supp (one-time
# allocations of Open MPI, HDF5, OpenBLAS and OpenMP kept until exit, nothing in tls_dist).
# Exit status: 0 when both ranks report no errors (valgrind --error-exitcode=1 otherwise).
set -euo pipefail
REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
BIN="$(realpath "${1:-$REPO_ROOT/build/cpu/tls_dist}")"
OUT="${2:-/tmp/tls_memcheck}"
DATA="${TLS_MEMCHECK_DATA:-$REPO_ROOT/data/kernel-docs/train.txt}"
cd "$REPO_ROOT"

export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMPI_MCA_rmaps_base_oversubscribe=1
export OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1
# Keep Open MPI's and PMIx's plugins loaded until exit, so valgrind can name their frames (and the
# suppressions can match them) instead of printing "???".
export OMPI_MCA_mca_base_component_disable_dlclose=1 PMIX_MCA_mca_base_component_disable_dlclose=1

supp=(--suppressions="$REPO_ROOT/tests/valgrind/tls_dist.supp")
if [ -f /usr/share/openmpi/openmpi-valgrind.supp ]; then
  supp+=(--suppressions=/usr/share/openmpi/openmpi-valgrind.supp)
fi

rm -rf "$OUT" && mkdir -p "$OUT"
# phase <name> <max-update>: two ranks under memcheck; "train" starts from scratch (2 updates, a
# checkpoint after each), "resume" loads checkpoint_last.h5 and does one more update.
phase() {
  mpirun -n 2 --oversubscribe --bind-to none \
    valgrind --tool=memcheck --leak-check=full --show-leak-kinds=definite,indirect,possible \
      --errors-for-leak-kinds=definite,indirect,possible --error-exitcode=1 --num-callers=60 \
      "${supp[@]}" --log-file="$OUT/memcheck.$1.%q{OMPI_COMM_WORLD_RANK}.log" \
      "$BIN" train --config launch/tiny_demo.ini --d-model 16 --n-head 2 --d-inner 32 \
        --tokens-per-sample 16 --mem-len 16 --window-len 8 --chunk-size 4 --batch-size 2 \
        --max-update "$2" --log-interval 1 --save-interval 1 --validate-interval 0 \
        --train-data "$DATA" --save-dir "$OUT/run" > "$OUT/$1.log" 2>&1
}
status=0
phase train 2 || status=1
phase resume 3 || status=1
for p in train resume; do
  for r in 0 1; do
    echo "== $p, rank $r ($OUT/memcheck.$p.$r.log)"
    grep -E "ERROR SUMMARY|definitely lost|indirectly lost|possibly lost|still reachable|Invalid (read|write)" \
      "$OUT/memcheck.$p.$r.log" | sed 's/^==[0-9]*== //'
  done
done
grep -h "^step\|^saved\|resum" "$OUT/train.log" "$OUT/resume.log" || true
echo "exit status: $status (0: no memcheck errors on any rank)"
exit "$status"
