#!/usr/bin/env bash
# QLion (INT8 weights, momentum, fused update in backward, stochastic
# rounding) against FP32 Lion: step time on SmolLM2-135M's shape, seq 512,
# batch 1, THREADS threads. The two programs alternate ROUNDS times so both
# see the same machine noise; prints each run and the ratio of the medians.
set -euo pipefail
cd "$(dirname "$0")/.."
source bench/lib.sh
THREADS=${THREADS:-2}
ROUNDS=${ROUNDS:-3}
STEPS=${STEPS:-5}
BUILD=${BUILD:-build}
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT

random_token_lines "$STEPS" 49152 512 > "$WORK/tokens.txt"

for round in $(seq "$ROUNDS"); do
  for optimizer in lion qlion; do
    "$BUILD/qft" train --config bench/smollm2-135m-config.json --init random --tokens "$WORK/tokens.txt" \
      --batch 1 --steps "$STEPS" --lr 1e-4 --optimizer "$optimizer" --threads "$THREADS" --json \
      | python3 -c "
import json, statistics, sys
steps = [json.loads(l) for l in sys.stdin if '\"step\"' in l][1:]  # the first step warms up
print('$optimizer', statistics.median(s['seconds'] for s in steps))" >> "$WORK/times.txt"
  done
done
python3 - "$WORK/times.txt" <<'PY'
import json, statistics, sys
times = {}
for line in open(sys.argv[1]):
    name, seconds = line.split()
    times.setdefault(name, []).append(float(seconds))
lion, qlion = statistics.median(times["lion"]), statistics.median(times["qlion"])
print(json.dumps({"bench": "qlion_step_time", "lion_step_s": times["lion"], "qlion_step_s": times["qlion"],
                  "lion_median_s": round(lion, 3), "qlion_median_s": round(qlion, 3),
                  "ratio": round(qlion / lion, 3)}))
PY
