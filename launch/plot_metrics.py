#!/usr/bin/python3
"""Plot training loss and validation BPC against the update from <save-dir>/metrics.jsonl.

usage: launch/plot_metrics.py RUN_DIR/metrics.jsonl OUT.png   (Debian: python3-matplotlib)
"""
import json
import math
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def main(path, out):
    train, valid = [], []
    with open(path) as f:
        for line in f:
            if not line.strip():
                continue
            row = json.loads(line)
            (valid if row.get("split") == "valid" else train).append(row)
    if not train:
        sys.exit(f"plot_metrics: {path} has no training lines")
    fig, ax = plt.subplots(figsize=(8, 4.5))
    ax.plot([r["step"] for r in train], [r["loss"] / math.log(2) for r in train], lw=1, label="train (bits/byte)")
    if valid:
        ax.plot([r["step"] for r in valid], [r["bpc"] for r in valid], "o-", label="valid BPC")
    ax.set_xlabel("update")
    ax.set_ylabel("bits per character")
    ax.set_title(path)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(out, dpi=120)
    print(f"wrote {out}")


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    main(sys.argv[1], sys.argv[2])
