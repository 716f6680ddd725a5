#!/usr/bin/env bash
# The standard character-level split of enwik8 and text8 (as Transformer-XL and the paper's
# scripts cut them): the archive's one member, read as bytes, gives its last 2 x HELDOUT bytes
# to valid and test (HELDOUT = 5,000,000) and the rest to train, so the 100,000,000-byte files
# become 90M / 5M / 5M. Called by prepare_enwik8.sh and prepare_text8.sh.
#   launch/split_archive.sh ARCHIVE MEMBER EXPECTED_BYTES OUT_DIR [HELDOUT]
# EXPECTED_BYTES guards against a truncated or wrong download (0: any size, for small test
# archives). Prints each part's size and sha256.
set -euo pipefail
archive="$1" member="$2" expected="$3" out="$4" heldout="${5:-5000000}"
name="$(basename "$0")"
fail() { echo "[$name] $*" >&2; exit 1; }
[ -f "$archive" ] || fail "archive $archive: no such file"
command -v unzip >/dev/null 2>&1 || fail "unzip not found (apt-get install unzip)"
unzip -Z1 "$archive" 2>/dev/null | grep -qx "$member" ||
  fail "archive $archive: no member named '$member' (is it the right archive?)"
[[ "$heldout" =~ ^[1-9][0-9]*$ ]] || fail "held-out size '$heldout' must be a positive integer"
mkdir -p "$out"
all="$out/.all.$$"
trap 'rm -f "$all"' EXIT
unzip -p "$archive" "$member" > "$all"
n=$(stat -c %s "$all")
if [ "$expected" -gt 0 ] && [ "$n" -ne "$expected" ]; then
  fail "archive $archive: member '$member' has $n bytes, expected $expected (a truncated or different file)"
fi
[ "$n" -gt $((2 * heldout)) ] || fail "archive $archive: $n bytes leave nothing to train on after 2 x $heldout held-out bytes"
train=$((n - 2 * heldout))
cut_bytes() {  # cut_bytes OFFSET COUNT OUT: written under a temporary name, then renamed
  dd if="$all" of="$3.tmp" bs=1M iflag=skip_bytes,count_bytes skip="$1" count="$2" status=none
  mv "$3.tmp" "$3"
}
cut_bytes 0 "$train" "$out/train.txt"
cut_bytes "$train" "$heldout" "$out/valid.txt"
cut_bytes $((train + heldout)) "$heldout" "$out/test.txt"
for part in train valid test; do
  f="$out/$part.txt"
  echo "[$name] $f: $(stat -c %s "$f") bytes, sha256 $(sha256sum "$f" | cut -d' ' -f1)"
done
