#!/usr/bin/env bash
# Multi-node tls_dist with mpirun and a hostfile: one rank per GPU, tp peers on the same node
# (ranks are numbered tp fastest, so --map-by with a node's slot count keeps a tp group local).
#
#   hosts.txt:   node01 slots=8
#                node02 slots=8
#   launch/mpirun_example.sh hosts.txt 16 --tp 8 --sp 2 --device cuda --config launch/configs/enwik8_base_phase1.ini \
#                --train-data data/enwik8/train.txt --valid-data data/enwik8/valid.txt --save-dir runs/enwik8
set -euo pipefail
hostfile="$1"; ranks="$2"; shift 2
exec mpirun --hostfile "$hostfile" -n "$ranks" --map-by slot --bind-to none \
  -x OMP_NUM_THREADS=1 -x OPENBLAS_NUM_THREADS=1 -x LD_LIBRARY_PATH \
  "${TLS_DIST:-build/cpu/tls_dist}" train "$@"
