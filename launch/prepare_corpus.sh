#!/usr/bin/env bash
# The default corpus: the Linux kernel's documentation (Debian's linux-doc-6.1, real English
# prose), concatenated in a fixed order into one byte file and cut into train / valid / test
# (90 / 5 / 5 %). Usage: launch/prepare_corpus.sh [OUT_DIR] [BYTES]   (defaults: data/kernel-docs, 6000000)
set -euo pipefail
out="${1:-data/kernel-docs}"
bytes="${2:-6000000}"
docs=/usr/share/doc/linux-doc-6.1/Documentation
if [ ! -d "$docs" ]; then
  echo "[corpus] installing linux-doc-6.1 (the kernel's documentation) from Debian" >&2
  sudo=""; [ "$(id -u)" -ne 0 ] && sudo=sudo
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends linux-doc-6.1 >/dev/null
fi
if [ -s "$out/train.txt" ] && [ -s "$out/valid.txt" ] && [ -s "$out/test.txt" ]; then
  echo "[corpus] $out already prepared" >&2
  exit 0
fi
mkdir -p "$out"
all="$out/all.txt"
# Sorted paths (C locale) make the corpus byte-identical on every machine.
# (head closes the pipe early on purpose: that SIGPIPE is not an error.)
(set +o pipefail; find "$docs" -name '*.rst.gz' | LC_ALL=C sort | xargs zcat -- 2>/dev/null | head -c "$bytes" > "$all")
[ -s "$all" ] || { echo "[corpus] no documentation found under $docs" >&2; exit 1; }
n=$(stat -c %s "$all")
train=$((n * 90 / 100)); valid=$((n * 5 / 100))
cut_bytes() {  # cut_bytes OFFSET COUNT OUT
  dd if="$all" of="$3" bs=1M iflag=skip_bytes,count_bytes skip="$1" count="$2" status=none
}
cut_bytes 0 "$train" "$out/train.txt"
cut_bytes "$train" "$valid" "$out/valid.txt"
cut_bytes $((train + valid)) $((n - train - valid)) "$out/test.txt"
rm -f "$all"
echo "[corpus] $out: train $(stat -c %s "$out/train.txt"), valid $(stat -c %s "$out/valid.txt"), test $(stat -c %s "$out/test.txt") bytes" >&2
