#!/usr/bin/env bash
# The README's main job: train the tiny demo config on the default corpus with mpirun (2 ranks,
# sequence parallel), evaluate it on the test split, and sample some text.
# Usage: launch/train_demo.sh BINARY CORPUS_DIR RUN_DIR
set -euo pipefail
bin="${1:-build/cpu/tls_dist}"
corpus="${2:-data/kernel-docs}"
run="${3:-runs/demo}"
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMPI_MCA_rmaps_base_oversubscribe=1
export OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1   # 2 ranks x 1 thread on a 2-core machine

echo "[demo] training (a fresh run, or resuming $run if it is there)"
mpirun -n 2 "$bin" train --config "$here/tiny_demo.ini" --sp 2 \
  --train-data "$corpus/train.txt" --valid-data "$corpus/valid.txt" --save-dir "$run"
echo "[demo] evaluating on the test split"
mpirun -n 2 "$bin" eval --checkpoint "$run/checkpoint_last.h5" --data "$corpus/test.txt" --sp 2 | tee "$run/eval.txt"
echo "[demo] sampling"
"$bin" generate --checkpoint "$run/checkpoint_last.h5" --prompt "The kernel " --max-new-bytes 300 \
  --temperature 0.8 --top-k 20
echo "[demo] test-split result: $(tail -n 1 "$run/eval.txt")  (metrics: $run/metrics.jsonl)"
