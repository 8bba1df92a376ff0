#!/usr/bin/env bash
# The main job for now: a small LLaMA-shaped model with a byte vocabulary,
# randomly initialised, learns Tiny Shakespeare for a few hundred steps.
set -euo pipefail
cd "$(dirname "$0")/.."

SHARED=${QFT_SHARED:-../shared}
TEXT="$SHARED/data/text/tinyshakespeare.txt"
OUT=build/demo
[ -f "$TEXT" ] || { echo "demo: $TEXT not found (set QFT_SHARED to the shared/ folder)" >&2; exit 1; }
mkdir -p "$OUT"

# One 128-byte window per line; bytes are the token ids.
python3 - "$TEXT" "$OUT/tokens.txt" <<'PY'
import sys
data = open(sys.argv[1], "rb").read()
with open(sys.argv[2], "w") as out:
    for start in range(0, len(data) - 128, 128):
        out.write(" ".join(str(b) for b in data[start:start + 128]) + "\n")
PY

rm -rf "$OUT/model"
./build/qft train --config examples/byte-llama.json --init random --seed 0 \
  --tokens "$OUT/tokens.txt" --batch 16 --steps "${STEPS:-300}" --lr 2e-3 \
  --optimizer adamw --weight-decay 0.01 --out "$OUT/model"
echo "demo: trained model saved in $OUT/model"
