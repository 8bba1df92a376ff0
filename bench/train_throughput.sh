#!/usr/bin/env bash
# Training throughput on SmolLM2-135M's shape, same machine, same run: qft
# (QLion, FP32 Lion, FP32 AdamW; each with --compute fp32 and bf16) next to
# the newest PyTorch + transformers from PyPI (bench/peer-env.sh, SDPA
# attention, AdamW) in its three modes: FP32, bf16 autocast (FP32 master
# weights) and pure bf16 (model and AdamW in bf16).
# Sequence length 512, batch 1, random init, THREADS threads (default 2).
# Prints one JSON line per program: median tokens/s over the timed steps and
# the process peak RSS; last, qft QLion bf16's ratio to the best peer mode.
#   PEERS=0   qft only (no peer environment needed)
set -euo pipefail
cd "$(dirname "$0")/.."
source bench/lib.sh
THREADS=${THREADS:-2}
WARMUP=${WARMUP:-2}
STEPS=${STEPS:-6}
BUILD=${BUILD:-build}
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT

random_token_lines $(($WARMUP + $STEPS)) 49152 512 > "$WORK/tokens.txt"

for compute in fp32 bf16; do
for optimizer in qlion lion adamw; do
  OMP_NUM_THREADS=$THREADS "$BUILD/qft" train --config bench/smollm2-135m-config.json --init random \
    --tokens "$WORK/tokens.txt" --batch 1 --steps $((WARMUP + STEPS)) --lr 1e-4 \
    --optimizer "$optimizer" --compute "$compute" --threads "$THREADS" --json > "$WORK/qft-$optimizer.jsonl"
  python3 - "$WORK/qft-$optimizer.jsonl" "$optimizer" "$WARMUP" "$compute" <<'PY' | tee -a "$WORK/all.jsonl"
import json, statistics, sys
records = [json.loads(line) for line in open(sys.argv[1])]
steps = [r for r in records if "step" in r][int(sys.argv[3]):]
final = records[-1]["memory"]
print(json.dumps({"bench": "qft_train", "optimizer": sys.argv[2], "compute": sys.argv[4], "steps": len(steps),
                  "tokens_per_s": round(statistics.median(r["tokens_per_second"] for r in steps), 1),
                  "median_step_s": round(statistics.median(r["seconds"] for r in steps), 3),
                  "peak_rss_gib": round(final["peak_rss_bytes"] / 2**30, 3),
                  "peak_bytes": final["peak_bytes"]}))
PY
done
done

[ "${PEERS:-1}" = 0 ] && exit 0
PEER=$(bash bench/peer-env.sh "$BUILD/peer-env" | tail -n 1)
for mode in fp32 autocast bf16; do
  "$PEER/bin/python" bench/torch_train_bench.py --mode "$mode" --attention sdpa --threads "$THREADS" \
    --warmup "$WARMUP" --steps "$STEPS" | tail -n 1 | tee -a "$WORK/all.jsonl"
done
python3 - "$WORK/all.jsonl" <<'PY'
import json, sys
rows = [json.loads(line) for line in open(sys.argv[1])]
qlion = next(r for r in rows if r["bench"] == "qft_train" and r["optimizer"] == "qlion" and r["compute"] == "bf16")
peers = [r for r in rows if r["bench"] == "torch_train"]
best = max(peers, key=lambda r: r["tokens_per_s"])
print(json.dumps({"bench": "ratio", "qlion_bf16_tokens_per_s": qlion["tokens_per_s"], "best_peer": best["mode"],
                  "best_peer_tokens_per_s": round(best["tokens_per_s"], 1),
                  "ratio": round(qlion["tokens_per_s"] / best["tokens_per_s"], 2)}))
PY
