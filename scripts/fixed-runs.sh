#!/usr/bin/env bash
# Fixed runs whose outputs a refactor must leave byte for byte as they were:
# a short `qft finetune` of the demo recipe in FP32 and BF16 compute (its
# checkpoint, HF and GGUF exports, metrics and plot), `qft train` with every
# optimizer (QLion with --grad-accum 2, a checkpoint and a resume), LoRA
# (finetune with both exports, train on an INT8 base), cached `qft generate`
# (greedy and sampled, plain and chat), `qft grad`, `qft eval`, `qft memory`,
# and two ranks under mpirun.
#
# Usage: scripts/fixed-runs.sh [QFT_BINARY] [WORK_DIR]
#   (defaults: build/qft and a temporary directory, removed afterwards)
# Prints "sha256  name" per output file, sorted by name. Run it with the
# binary before and after a change on the same machine and diff the two lists.
#
# What is not the run's result is taken out before hashing: the seconds and
# tokens/s of a step, MPI wait times, the commit named in settings.yaml, the work
# directory's path, and
# the memory report and plan that `qft train --json` ends with (JSON keys,
# wherever they nest). Memory figures are compared on their own: the plans
# of `qft memory` are hashed here as printed.
set -euo pipefail
cd "$(dirname "$0")/.."
QFT=$(realpath "${1:-build/qft}")
if [ -n "${2:-}" ]; then
  WORK=$2
  rm -rf "$WORK" && mkdir -p "$WORK"
else
  WORK=$(mktemp -d)
  trap 'rm -rf "$WORK"' EXIT
fi
MODEL=$(bash scripts/fetch-smollm2.sh build/models | tail -n 1)
source bench/lib.sh
export OMP_NUM_THREADS=2
T=(--threads 2)

random_token_lines 8 49152 96 > "$WORK/tokens.txt"
TINY="$WORK/tiny-config.json"  # SmolLM2's family, 4 layers of width 256
python3 - bench/smollm2-135m-config.json "$TINY" <<'PY'
import json, sys
config = json.load(open(sys.argv[1]))
config.update(num_hidden_layers=4, hidden_size=256, intermediate_size=640, num_attention_heads=4,
              num_key_value_heads=2, head_dim=64)
json.dump(config, open(sys.argv[2], "w"))
PY
train() {  # train NAME ARGS...: a random 4-layer model on the token file
  local name=$1
  shift
  "$QFT" train --config "$TINY" --init random --seed 7 --tokens "$WORK/tokens.txt" --batch 2 --lr 1e-3 \
    --json "${T[@]}" "$@" > "$WORK/$name.stdout"
}

# --- qft finetune, the demo recipe, a few steps, both computes
for compute in fp32 bf16; do
  "$QFT" finetune --config recipes/demo.yaml --model "$MODEL" --out "$WORK/finetune-$compute" --max-steps 4 \
    --eval-every 2 --save-every 2 --export-gguf --compute "$compute" "${T[@]}" \
    > "$WORK/finetune-$compute.stdout" 2> /dev/null
done
"$QFT" finetune --config recipes/demo.yaml --model "$MODEL" --out "$WORK/finetune-lora" --max-steps 3 \
  --method lora --optimizer adamw --export-lora both --save-every 3 --compute bf16 "${T[@]}" > "$WORK/finetune-lora.stdout" 2> /dev/null

# --- qft train: QLion with accumulation, its checkpoint, and a resume
for compute in fp32 bf16; do
  train "qlion-accum-$compute" --optimizer qlion --grad-accum 2 --steps 3 --compute "$compute" \
    --checkpoint "$WORK/qlion-accum-$compute.ckpt" --save-every 1 --out "$WORK/qlion-accum-$compute.model"
done
train qlion-first-two --optimizer qlion --steps 2 --compute bf16 --checkpoint "$WORK/qlion-resumed.ckpt"
train qlion-resumed --optimizer qlion --steps 4 --compute bf16 --resume "$WORK/qlion-resumed.ckpt"
train qlion-checkpointing --optimizer qlion --steps 3 --checkpointing --stack-gradients --rounding nearest \
  --compute fp32 --checkpoint "$WORK/qlion-checkpointing.ckpt"
for optimizer in lion adamw adamw8bit mixed-adamw; do
  train "$optimizer" --optimizer "$optimizer" --steps 3 --grad-accum 2 --weight-decay 0.01 --compute bf16 \
    --checkpoint "$WORK/$optimizer.ckpt"
done
train lora-int8 --method lora --lora-base int8 --lora-rank 4 --steps 3 --compute fp32 --checkpoint "$WORK/lora-int8.ckpt"

# --- two ranks
MPIRUN=(mpirun --allow-run-as-root --oversubscribe --bind-to none -np 2 -x OMP_NUM_THREADS=1)
"${MPIRUN[@]}" "$QFT" train --config "$TINY" --init random --seed 7 --tokens "$WORK/tokens.txt" --batch 1 \
  --lr 1e-3 --steps 3 --optimizer qlion --compute fp32 --threads 1 --checkpoint "$WORK/mpi-qlion.ckpt" \
  --out "$WORK/mpi-qlion.model" --json > "$WORK/mpi-qlion.stdout"
"${MPIRUN[@]}" "$QFT" train --config "$TINY" --init random --seed 7 --tokens "$WORK/tokens.txt" --batch 1 \
  --lr 1e-3 --steps 2 --optimizer adamw --grad-accum 2 --compute bf16 --threads 1 \
  --checkpoint "$WORK/mpi-adamw.ckpt" --json > "$WORK/mpi-adamw.stdout"

# --- inference: cached generation, gradients, evaluation, plans
FINETUNED="$WORK/finetune-bf16/model"
PROMPT="Name three colours of the rainbow."
"$QFT" generate --model "$MODEL" --prompt "$PROMPT" --max-new-tokens 24 "${T[@]}" > "$WORK/generate-greedy.stdout"
"$QFT" generate --model "$FINETUNED" --chat --prompt "$PROMPT" --max-new-tokens 24 --temperature 0.8 --top-p 0.9 \
  --seed 3 "${T[@]}" > "$WORK/generate-chat-sampled.stdout"
"$QFT" generate --model "$MODEL" --chat --prompt "$PROMPT" --max-new-tokens 12 --compute bf16 "${T[@]}" \
  > "$WORK/generate-bf16.stdout"
for compute in fp32 bf16; do
  "$QFT" grad --model "$FINETUNED" --tokens "$WORK/tokens.txt" --out "$WORK/grad-$compute.safetensors" \
    --checkpointing --compute "$compute" "${T[@]}" > "$WORK/grad-$compute.stdout"
done
python3 -c 'import json; json.dump(json.load(open("examples/data/alpaca_en_demo_400.json"))[:12], open("'"$WORK"'/eval.json", "w"))'
"$QFT" eval --model "$MODEL" --data "$WORK/eval.json" --task perplexity --json "${T[@]}" > "$WORK/eval.stdout"
for optimizer in qlion adamw mixed-adamw; do
  "$QFT" memory --config bench/llama2-7b-config.json --optimizer "$optimizer" --seq-len 2048 --checkpointing \
    --compute bf16 "${T[@]}" > "$WORK/memory-7b-$optimizer.stdout"
done
"$QFT" memory --model "$MODEL" --method lora --lora-base int8 --seq-len 512 --batch 4 --ranks 1 --compute fp32 \
  --json "${T[@]}" > "$WORK/memory-lora.stdout"

# --- hash, with what is not the result taken out
python3 - "$WORK" <<'PY'
import hashlib, json, os, re, sys
work = sys.argv[1]
VOLATILE = {"seconds", "tokens_per_second", "peak_rss_bytes", "wait_seconds", "memory", "plan", "per_rank"}

def scrub(value):
    if isinstance(value, dict):
        return {k: scrub(v) for k, v in value.items() if k not in VOLATILE}
    if isinstance(value, list):
        return [scrub(v) for v in value]
    return value

def json_text(text):
    return json.dumps(scrub(json.loads(text)), sort_keys=True)

def normalized(path):
    data = open(path, "rb").read().replace(os.path.abspath(work).encode(), b"$WORK")
    name = os.path.basename(path)
    if name.endswith(".json"):
        try:
            return json_text(data.decode()).encode()
        except (UnicodeDecodeError, json.JSONDecodeError):
            return data
    if name.endswith((".jsonl", ".stdout")):
        try:
            lines = [json_text(line) if line.strip().startswith(("{", "[")) else line
                     for line in data.decode().splitlines()]
            return "\n".join(lines).encode()
        except (UnicodeDecodeError, json.JSONDecodeError):
            return data
    if name == "settings.yaml":
        return re.sub(rb"\(commit [0-9a-f]+[^)]*\)", b"(commit)", data)
    return data

rows = []
for root, _, files in os.walk(work):
    for name in files:
        path = os.path.join(root, name)
        relative = os.path.relpath(path, work)
        if relative.endswith(".lock") or "/.qft.lock" in "/" + relative:
            continue
        rows.append((relative, hashlib.sha256(normalized(path)).hexdigest()))
for relative, digest in sorted(rows):
    print(f"{digest}  {relative}")
PY
