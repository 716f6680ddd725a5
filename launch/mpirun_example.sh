#!/usr/bin/env bash
# Multi-node tls_dist with mpirun and a hostfile: one rank per GPU, tp peers on the same node
# (ranks are numbered tp fastest, so --map-by with a node's slot count keeps a tp group local).
# TLS_THREADS (default 1) threads per rank: above 1 each rank is bound to that many cores of its
# own (--map-by slot:PE=T; slots x T must not exceed a node's cores); at 1 the ranks are left
# unbound (--bind-to none), since Open MPI would otherwise bind a 1- or 2-rank job to one core
# each, whatever OMP_NUM_THREADS says.
#
#   hosts.txt:   node01 slots=8
#                node02 slots=8
#   launch/mpirun_example.sh hosts.txt 16 --tp 8 --sp 2 --device cuda --config launch/configs/enwik8_base_phase1.ini \
#                --train-data data/enwik8/train.txt --valid-data data/enwik8/valid.txt --save-dir runs/enwik8
set -euo pipefail
hostfile="$1"; ranks="$2"; shift 2
threads="${TLS_THREADS:-1}"
if [ "$threads" -gt 1 ]; then placement=(--map-by "slot:PE=$threads"); else placement=(--map-by slot --bind-to none); fi
export OMP_NUM_THREADS="$threads" OPENBLAS_NUM_THREADS="$threads"
exec mpirun --hostfile "$hostfile" -n "$ranks" "${placement[@]}" \
  -x OMP_NUM_THREADS -x OPENBLAS_NUM_THREADS -x LD_LIBRARY_PATH \
  "${TLS_DIST:-build/cpu/tls_dist}" train "$@"
