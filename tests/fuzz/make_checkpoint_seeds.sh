#!/usr/bin/env bash
# Regenerates tests/fuzz/corpus/checkpoint_fuzz/: small checkpoints written by tls_dist (one
# update of tiny one-layer models), rewritten by h5repack with the latest file format so each
# stays under 100 KB (tls_dist's own v1 chunk B-trees cost ~2.5 KB a dataset), plus one
# weights-only file (/optimizer and /state removed, h5py) that keeps tls_dist's v1 layout.
#   bash tests/fuzz/make_checkpoint_seeds.sh path/to/tls_dist
set -euo pipefail
BIN="$(realpath "$1")"
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
OUT=tests/fuzz/corpus/checkpoint_fuzz
TMP="$(mktemp -d)"
trap 'rm -rf "$TMP"' EXIT
export OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1
base=(train --config launch/tiny_demo.ini --n-layer 1 --tokens-per-sample 16 --mem-len 16
  --window-len 8 --chunk-size 4 --batch-size 2 --max-update 1 --validate-interval 0
  --train-data data/kernel-docs/train.txt)
seed() {  # name, extra flags...
  local name="$1"; shift
  "$BIN" "${base[@]}" "$@" --save-dir "$TMP/$name" > "$TMP/$name.log" 2>&1
  h5repack -L -f FLET "$TMP/$name/checkpoint_1.h5" "$OUT/$name.h5"
}
seed fp32_d8_optimizer_state --d-model 8 --n-head 1 --d-inner 16
seed fp64_d4_bias_clamp --d-model 4 --n-head 1 --d-inner 8 --precision fp64 --use-bias \
  --clamp-len 8 --cpos-clamp-len 2
seed fp32_d8_rank2_dropout_b1 --d-model 8 --n-head 2 --d-inner 16 --chunk-rank 2 --batch-size 1 \
  --dropout 0.1
cp "$TMP/fp32_d8_optimizer_state/checkpoint_1.h5" "$TMP/w.h5"
python3 -c "import h5py, sys; f = h5py.File(sys.argv[1], 'r+'); del f['optimizer']; del f['state']" "$TMP/w.h5"
h5repack "$TMP/w.h5" "$OUT/weights_only_btree_v1.h5"
ls -l "$OUT"
