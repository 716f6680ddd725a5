#!/usr/bin/env bash
# enwik8 (the first 100,000,000 bytes of an English Wikipedia XML dump, raw bytes) cut into the
# standard 90M / 5M / 5M train / valid / test split the paper evaluates on.
#   launch/prepare_enwik8.sh enwik8.zip [OUT_DIR]     (default OUT_DIR: data/enwik8)
# TLS_SPLIT_HELDOUT and TLS_SPLIT_EXPECTED override the held-out size and the expected length
# (for small test archives only).
set -euo pipefail
[ $# -ge 1 ] || { echo "usage: launch/prepare_enwik8.sh enwik8.zip [OUT_DIR]" >&2; exit 2; }
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
exec "$here/split_archive.sh" "$1" enwik8 "${TLS_SPLIT_EXPECTED:-100000000}" "${2:-data/enwik8}" \
  "${TLS_SPLIT_HELDOUT:-5000000}"
