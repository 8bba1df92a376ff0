#!/usr/bin/env bash
# Data-parallel training on this machine (issue 11's evidence): SmolLM2-135M's
# shape, seq 512, the same global batch of 2 sequences per step, as
#   1 rank  x 2 threads, --batch 2        (qft alone, no MPI)
#   2 ranks x 1 thread,  --batch 1 each   (mpirun -np 2, shared memory)
# for QLion and FP32 AdamW; then the same step's collectives alone and
# blocking (bench/collectives_bench), to tell how much of the communication
# the training step hid behind its compute. One JSON line per run.
set -euo pipefail
cd "$(dirname "$0")/.."
source bench/lib.sh
WARMUP=${WARMUP:-2}
STEPS=${STEPS:-6}
BUILD=${BUILD:-build}
CONFIG=${CONFIG:-bench/smollm2-135m-config.json}
MPIRUN=(mpirun --allow-run-as-root --oversubscribe -x OMP_NUM_THREADS=1)
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT

random_token_lines $((2 * (WARMUP + STEPS))) 49152 512 > "$WORK/tokens.txt"

summarize() {  # FILE OPTIMIZER RANKS THREADS
  python3 - "$@" "$WARMUP" <<'PY'
import json, statistics, sys
path, optimizer, ranks, threads, warmup = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
records = [json.loads(line) for line in open(path) if line.startswith("{")]
steps = [r for r in records if "step" in r]
final = records[-1]
timed = steps[warmup:]
out = {"bench": "qft_data_parallel", "optimizer": optimizer, "ranks": ranks, "threads_per_rank": threads,
       "steps": len(timed), "tokens_per_s": round(statistics.median(r["tokens_per_second"] for r in timed), 1),
       "median_step_s": round(statistics.median(r["seconds"] for r in timed), 3),
       "peak_rss_gib_rank0": round(final["memory"]["peak_rss_bytes"] / 2**30, 3),
       "plan_peak_gib_rank0": round(final["plan"]["peak"] / 2**30, 3)}
if "traffic" in final:
    out["bytes_sent_per_step_rank0"] = final["traffic"]["bytes_sent"] // len(steps)
    out["wait_s_per_step_rank0"] = round(final["traffic"]["wait_seconds"] / len(steps), 4)
print(json.dumps(out))
PY
}

for optimizer in qlion adamw; do
  common=(train --config "$CONFIG" --init random --tokens "$WORK/tokens.txt" --steps $((WARMUP + STEPS))
          --lr 1e-4 --optimizer "$optimizer" --compute fp32 --json)
  OMP_NUM_THREADS=2 "$BUILD/qft" "${common[@]}" --batch 2 --threads 2 > "$WORK/one.jsonl"
  summarize "$WORK/one.jsonl" "$optimizer" 1 2
  "${MPIRUN[@]}" -np 2 "$BUILD/qft" "${common[@]}" --batch 1 --threads 1 > "$WORK/two.jsonl"
  summarize "$WORK/two.jsonl" "$optimizer" 2 1
done
"${MPIRUN[@]}" -np 2 "$BUILD/bench/collectives_bench" "$CONFIG" 5
