#!/usr/bin/env bash
# A short QFT fine-tune of a small random-init Llama-3.1-shaped model (RoPE
# scaling "llama3", factor 8 over an 8192-token original context, 131072
# positions) through qft finetune with the model's own chat template
# (Llama-3.1-Instruct's, from tests/data/chat_templates), on the demo's
# Alpaca records. The tokenizer is SmolLM2's (from the demo GGUF) with
# Llama-3's special tokens added, so the template's markers are single tokens.
#
# Usage: bash bench/llama31_finetune.sh [STEPS]     (after make build; writes build/llama31/)
set -euo pipefail
cd "$(dirname "$0")/.."
STEPS=${1:-30}
QFT=build/qft
PY=build/pyenv/bin/python
OUT=build/llama31
GGUF=build/models/SmolLM2-135M-Instruct.Q4_1.gguf
[ -f "$GGUF" ] || bash scripts/fetch-smollm2.sh
rm -rf "$OUT" && mkdir -p "$OUT"
"$QFT" export --model "$GGUF" --out "$OUT/smollm2" --dtype bf16 >/dev/null

"$PY" - "$OUT" <<'EOF'
import json, os, sys
import torch
from tokenizers import Tokenizer
from transformers import LlamaConfig, LlamaForCausalLM
out = sys.argv[1]
model_dir = os.path.join(out, "model")
os.makedirs(model_dir)
tokenizer = Tokenizer.from_file(os.path.join(out, "smollm2", "tokenizer.json"))
specials = ["<|begin_of_text|>", "<|end_of_text|>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"]
tokenizer.add_special_tokens(specials)
tokenizer.save(os.path.join(model_dir, "tokenizer.json"))
with open("tests/data/chat_templates/llama-3.1-instruct.jinja") as f:
    template = f.read()
json.dump({"bos_token": "<|begin_of_text|>", "eos_token": "<|eot_id|>", "add_bos_token": False,
           "chat_template": template, "tokenizer_class": "PreTrainedTokenizerFast"},
          open(os.path.join(model_dir, "tokenizer_config.json"), "w"), indent=1)
config = LlamaConfig(vocab_size=tokenizer.get_vocab_size(), hidden_size=256, intermediate_size=768,
                     num_hidden_layers=4, num_attention_heads=4, num_key_value_heads=2, head_dim=64,
                     max_position_embeddings=131072, rope_theta=500000.0, rms_norm_eps=1e-5,
                     tie_word_embeddings=True, bos_token_id=tokenizer.token_to_id("<|begin_of_text|>"),
                     eos_token_id=tokenizer.token_to_id("<|eot_id|>"),
                     rope_scaling={"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                                   "high_freq_factor": 4.0, "original_max_position_embeddings": 8192})
torch.manual_seed(0)
LlamaForCausalLM(config).save_pretrained(model_dir, safe_serialization=True)
EOF

printf '%s\n' '[{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Name a prime."}, {"role": "assistant", "content": "7"}]' \
  > "$OUT/messages.json"
echo "== what finetune trains on (qft template --json):"
"$QFT" template --model "$OUT/model" --messages "$OUT/messages.json" --json
echo "== qft finetune, $STEPS steps:"
"$QFT" finetune --model "$OUT/model" --data examples/data/alpaca_en_demo_400.json --out "$OUT/run" \
  --optimizer qlion --lr 1e-3 --seq-len 256 --batch 4 --max-steps "$STEPS" --log-every 5 --eval-split 0.05 \
  --eval-every "$STEPS" --seed 0 --threads "$(nproc)"
