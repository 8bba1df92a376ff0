#!/usr/bin/env bash
# Long-run soak (not CI): trains a tiny random model for STEPS steps with a
# checkpoint every SAVE_EVERY steps, SIGKILLs it at random moments, resumes
# each time, and checks that the final training state and the saved model
# equal an uninterrupted run's byte for byte, and that every step's loss
# (re-run steps included) equals the uninterrupted run's.
#
#   scripts/soak.sh [WORK_DIR]     STEPS=100000 SAVE_EVERY=500 KILL_MIN=1 KILL_MAX=20
#                                  OPTIMIZER=qlion SEED=1 QFT=build/qft
# Prints one summary line per run and a final verdict; exits non-zero on any
# difference.
set -euo pipefail
cd "$(dirname "$0")/.."
WORK=${1:-build/soak}
STEPS=${STEPS:-100000}
SAVE_EVERY=${SAVE_EVERY:-500}
KILL_MIN=${KILL_MIN:-1}
KILL_MAX=${KILL_MAX:-20}
OPTIMIZER=${OPTIMIZER:-qlion}
SEED=${SEED:-1}
QFT=${QFT:-build/qft}
[ -x "$QFT" ] || { echo "soak: $QFT not found; build first (cmake --build build)" >&2; exit 1; }

rm -rf "$WORK"
mkdir -p "$WORK"
cat >"$WORK/config.json" <<'EOF'
{"architectures": ["LlamaForCausalLM"], "vocab_size": 64, "hidden_size": 32, "intermediate_size": 64,
 "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2}
EOF
# 97 lines of 6–21 tokens: a prime count, so batches wrap around differently each epoch.
python3 - "$WORK/tokens.txt" <<'EOF'
import random, sys
rng = random.Random(7)
with open(sys.argv[1], "w") as f:
    for _ in range(97):
        f.write(" ".join(str(rng.randrange(64)) for _ in range(rng.randrange(6, 22))) + "\n")
EOF

train() {  # train DIR [extra options...]: one JSON object per step on stdout
  local dir=$1
  shift
  # exec: in a background job the shell becomes qft, so $! is the process to kill.
  exec "$QFT" train --config "$WORK/config.json" --init random --seed "$SEED" --tokens "$WORK/tokens.txt" \
    --batch 2 --steps "$STEPS" --lr 1e-3 --optimizer "$OPTIMIZER" --json --threads 2 \
    --checkpoint "$dir/checkpoint" --save-every "$SAVE_EVERY" --out "$dir/model" "$@"
}

start=$(date +%s)
echo "soak: uninterrupted run of $STEPS steps ($OPTIMIZER, a checkpoint every $SAVE_EVERY steps)"
mkdir -p "$WORK/straight"
(train "$WORK/straight") >"$WORK/straight/log.jsonl"
straight_seconds=$(($(date +%s) - start))
echo "soak: uninterrupted: ${straight_seconds} s"

start=$(date +%s)
mkdir -p "$WORK/killed"
kills=0
runs=0
while [ ! -d "$WORK/killed/model" ]; do
  resume=()
  if [ -e "$WORK/killed/checkpoint" ] || [ -e "$WORK/killed/checkpoint.old" ]; then
    resume=(--resume "$WORK/killed/checkpoint")
  fi
  runs=$((runs + 1))
  train "$WORK/killed" "${resume[@]}" >>"$WORK/killed/log.jsonl" 2>>"$WORK/killed/stderr.log" &
  pid=$!
  delay=$(python3 -c "import random; print(round(random.uniform($KILL_MIN, $KILL_MAX), 2))")
  for _ in $(seq 1 "$(python3 -c "print(int($delay * 10))")"); do
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
  done
  kill -9 "$pid" 2>/dev/null || true
  status=0
  wait "$pid" 2>/dev/null || status=$?
  [ "$status" -eq 137 ] && kills=$((kills + 1))
  if [ "$status" -ne 0 ] && [ "$status" -ne 137 ]; then
    echo "soak: run $runs failed with status $status:" >&2
    tail -n 5 "$WORK/killed/stderr.log" >&2
    exit 1
  fi
  last=$(grep -o '"step":[0-9]*' "$WORK/killed/log.jsonl" | tail -n 1 | cut -d: -f2)
  echo "soak: run $runs ended after ${delay} s at step ${last:-0} ($([ "$status" -eq 137 ] && echo killed || echo finished))"
done
killed_seconds=$(($(date +%s) - start))

# Every logged step's loss (the last word on a step that was re-run after a
# kill, and every earlier one too) against the uninterrupted run.
python3 - "$WORK/straight/log.jsonl" "$WORK/killed/log.jsonl" <<'EOF'
import json, sys
def losses(path):
    out = {}
    for line in open(path):
        line = line.strip()
        if not line.startswith("{"):
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue  # a line cut short by SIGKILL
        if "loss" in record:
            out.setdefault(record["step"], []).append(record["loss"])
    return out
want, got = losses(sys.argv[1]), losses(sys.argv[2])
missing = [s for s in want if s not in got]
wrong = [s for s, values in got.items() if any(v != want.get(s, [None])[0] for v in values)]
reruns = sum(len(v) - 1 for v in got.values())
print(f"soak: {len(want)} steps; {reruns} steps re-run after kills; {len(missing)} missing, {len(wrong)} with another loss")
sys.exit(1 if missing or wrong else 0)
EOF
same_state=no
cmp -s "$WORK/straight/checkpoint/state.safetensors" "$WORK/killed/checkpoint/state.safetensors" && same_state=yes
same_model=no
cmp -s "$WORK/straight/model/model.safetensors" "$WORK/killed/model/model.safetensors" && same_model=yes
echo "soak: $STEPS steps, $runs runs, $kills SIGKILLs, ${killed_seconds} s interrupted vs ${straight_seconds} s straight;" \
  "final state identical: $same_state; saved model identical: $same_model"
[ "$same_state" = yes ] && [ "$same_model" = yes ]
