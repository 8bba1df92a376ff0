#!/usr/bin/env bash
# Table 1's rows run side by side in this engine: every optimizer trains the
# SmolLM2-135M shape (random init, seq 512, batch 1, checkpointing, THREADS
# threads) for STEPS steps. Prints one JSON line per optimizer: the plan, the
# measured peak bytes per category, the process peak RSS and the median
# tokens/s of steps 2..STEPS.
set -euo pipefail
cd "$(dirname "$0")/.."
source bench/lib.sh
THREADS=${THREADS:-2}
STEPS=${STEPS:-4}
BUILD=${BUILD:-build}
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
random_token_lines "$STEPS" 49152 512 > "$WORK/tokens.txt"
for optimizer in adamw mixed-adamw adamw8bit lion qlion; do
  "$BUILD/qft" train --config bench/smollm2-135m-config.json --init random --tokens "$WORK/tokens.txt" \
    --batch 1 --steps "$STEPS" --lr 1e-4 --optimizer "$optimizer" --checkpointing --threads "$THREADS" --json \
    | python3 -c "
import json, statistics, sys
records = [json.loads(line) for line in sys.stdin]
steps = [r for r in records if 'step' in r][1:]
final = records[-1]
print(json.dumps({'optimizer': '$optimizer', 'tokens_per_s': round(statistics.median(s['tokens_per_second'] for s in steps), 1),
                  'peak_rss_bytes': final['memory']['peak_rss_bytes'], 'measured': final['memory']['peak_bytes'],
                  'measured_peak_total': final['memory']['peak_total_bytes'], 'plan': final['plan']}))"
done
