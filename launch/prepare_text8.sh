#!/usr/bin/env bash
# text8 (100,000,000 characters of cleaned Wikipedia text: lowercase a-z and spaces) cut into
# the standard 90M / 5M / 5M train / valid / test split the paper evaluates on.
#   launch/prepare_text8.sh text8.zip [OUT_DIR]       (default OUT_DIR: data/text8)
# TLS_SPLIT_HELDOUT and TLS_SPLIT_EXPECTED override the held-out size and the expected length
# (for small test archives only).
set -euo pipefail
[ $# -ge 1 ] || { echo "usage: launch/prepare_text8.sh text8.zip [OUT_DIR]" >&2; exit 2; }
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
exec "$here/split_archive.sh" "$1" text8 "${TLS_SPLIT_EXPECTED:-100000000}" "${2:-data/text8}" \
  "${TLS_SPLIT_HELDOUT:-5000000}"
