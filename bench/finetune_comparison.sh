#!/usr/bin/env bash
# The QFT paper's Table 2 on SmolLM2-135M-Instruct: fine-tuned on the same
# Alpaca records, steps, schedule and seed with QLion (stochastic rounding),
# QLion (round-to-nearest), FP32 Lion, FP32 AdamW, 8-bit AdamW and LoRA (the
# paper's r 8, alpha 16, dropout 0.05, AdamW at the same lr; on an FP32 and an
# INT8 base; and at 10x the lr, where LoRA is usually run); then every
# fine-tuned model and the base model on fixed subsets of ARC-Easy,
# ARC-Challenge, HellaSwag and MMLU. Writes OUT/summary.md (the table in
# docs/results.md) and OUT/loss_curves.svg.
#   bash bench/finetune_comparison.sh [OUT]      STEPS (default 160), THREADS (2), RUNS (all),
#     SEED (data order and rounding; default 1), BENCHMARKS=0 (eval loss only: no benchmarks, no table)
# Several seeds, eval loss mean ± standard deviation (issue 30's momentum comparison):
#   for s in 1 2 3; do SEED=$s BENCHMARKS=0 RUNS="qlion-stochastic qlion-momentum4 lion" \
#     bash bench/finetune_comparison.sh build/momentum-seed$s; done
#   python3 bench/seeds_summary.py build/momentum-seed1 build/momentum-seed2 build/momentum-seed3
set -euo pipefail
cd "$(dirname "$0")/.."

OUT=${1:-build/finetune-comparison}
SHARED=${QFT_SHARED:-../shared}
STEPS=${STEPS:-160}
THREADS=${THREADS:-2}
SEED=${SEED:-1}
EVAL="$SHARED/data/eval"
mkdir -p "$OUT"
# A copy, so rebuilding build/qft while this runs changes nothing here.
QFT="$OUT/qft"
cp build/qft "$QFT"
MODEL=$(bash scripts/fetch-smollm2.sh build/models | tail -n 1)

# Records 0-999 to learn from, the last 200 of the file to measure eval loss on.
python3 - "$SHARED/data/train/alpaca_5000.json" "$OUT" <<'PY'
import json, sys
records = json.load(open(sys.argv[1]))
json.dump(records[:1000], open(sys.argv[2] + "/train.json", "w"))
json.dump(records[-200:], open(sys.argv[2] + "/eval.json", "w"))
PY

declare -A OPTIONS=(
  [qlion-stochastic]="--optimizer qlion --rounding stochastic"
  [qlion-nearest]="--optimizer qlion --rounding nearest"
  [qlion-momentum4]="--optimizer qlion --momentum-bits 4"
  [lion]="--optimizer lion"
  [adamw]="--optimizer adamw"
  [adamw8bit]="--optimizer adamw8bit"
  [lora]="--method lora"
  [lora-int8]="--method lora --lora-base int8"
  [lora-lr2e-4]="--method lora --lr 2e-4"
)
RUNS=${RUNS:-"qlion-stochastic qlion-nearest lion adamw adamw8bit lora lora-int8 lora-lr2e-4"}

for run in $RUNS; do
  [ -f "$OUT/$run/result.json" ] && continue
  rm -rf "${OUT:?}/$run"
  echo "== fine-tuning: $run" >&2
  # shellcheck disable=SC2086
  "$QFT" finetune --model "$MODEL" --data "$OUT/train.json" --eval-data "$OUT/eval.json" --out "$OUT/$run" \
    --seq-len 512 --batch 4 --max-steps "$STEPS" --lr 2e-5 --seed "$SEED" ${OPTIONS[$run]} \
    --eval-every 40 --export-dtype f32 --threads "$THREADS" --log-every 10 > "$OUT/$run.result.json"
  # The model state of the plan (what the table's bytes/param come from); memory takes no --rounding or --lr.
  # shellcheck disable=SC2086
  "$QFT" memory --model "$MODEL" --seq-len 512 --batch 4 --json \
    $(echo "${OPTIONS[$run]}" | sed -E 's/--(rounding|lr) [^ ]+//g') > "$OUT/$run/plan.json"
  mv "$OUT/$run.result.json" "$OUT/$run/result.json"
done

[ "${BENCHMARKS:-1}" = 0 ] && exit 0

evaluate() {  # MODEL NAME
  local dir="$OUT/$2/benchmarks"
  [ -f "$dir/done" ] && return
  mkdir -p "$dir"
  echo "== benchmarks: $2" >&2
  "$QFT" eval --model "$1" --data "$EVAL/arc_easy_test.jsonl" --task choice --limit 200 --threads "$THREADS" --json > "$dir/arc_easy.json"
  "$QFT" eval --model "$1" --data "$EVAL/arc_challenge_test.jsonl" --task choice --limit 200 --threads "$THREADS" --json > "$dir/arc_challenge.json"
  "$QFT" eval --model "$1" --data "$EVAL/hellaswag_val.jsonl" --task choice --limit 200 --threads "$THREADS" --json > "$dir/hellaswag.json"
  "$QFT" eval --model "$1" --data "$EVAL/mmlu_test.jsonl" --task choice --limit-per-subject 20 --limit 200 \
    --threads "$THREADS" --json > "$dir/mmlu.json"
  touch "$dir/done"
}
evaluate "$MODEL" base
for run in $RUNS; do evaluate "$OUT/$run/model" "$run"; done

python3 bench/finetune_comparison.py "$OUT" base $RUNS
