#!/usr/bin/env bash
# A short QFT fine-tune of a small random-init model of one of the newer
# architectures through qft finetune with that model family's own chat
# template (from tests/data/chat_templates, in tokenizer_config.json, so the
# default), on the demo's Alpaca records:
#   llama31  Llama-3.1 shape: RoPE scaling "llama3", factor 8 over an 8192-token
#            original context, 131072 positions; Llama-3.1-Instruct's template.
#   gemma2   Gemma-2 shape: GeGLU, (1 + w) and sandwich norms, √C embeddings,
#            soft caps 50 / 30, query_pre_attn_scalar 64, a 128-token window on
#            even layers (shorter than the sequences); Gemma-2-it's template.
#   phi3     Phi-3.5-mini shape: fused qkv_proj and gate_up_proj, longrope over
#            an original 4096-token context (131072 positions), a 2047-token
#            window; Phi-3.5-mini-instruct's template.
# The tokenizer is SmolLM2's (from the demo GGUF) with the family's special
# tokens added, so the template's markers are single tokens.
#
# Usage: bash bench/arch_finetune.sh llama31|gemma2|phi3 [STEPS]   (after make build; writes build/ARCH/)
set -euo pipefail
cd "$(dirname "$0")/.."
ARCH=${1:?usage: bash bench/arch_finetune.sh llama31|gemma2|phi3 [STEPS]}
STEPS=${2:-30}
case "$ARCH" in llama31|gemma2|phi3) ;; *) echo "unknown architecture '$ARCH' (llama31, gemma2, phi3)" >&2; exit 2 ;; esac
QFT=build/qft
PY=build/pyenv/bin/python
OUT=build/$ARCH
GGUF=build/models/SmolLM2-135M-Instruct.Q4_1.gguf
[ -f "$GGUF" ] || bash scripts/fetch-smollm2.sh
rm -rf "$OUT" && mkdir -p "$OUT"
"$QFT" export --model "$GGUF" --out "$OUT/smollm2" --dtype bf16 >/dev/null

"$PY" - "$OUT" "$ARCH" <<'EOF'
import json, os, sys
import torch
from tokenizers import Tokenizer
from transformers import (Gemma2Config, Gemma2ForCausalLM, LlamaConfig, LlamaForCausalLM, Phi3Config,
                          Phi3ForCausalLM)
out, arch = sys.argv[1], sys.argv[2]
model_dir = os.path.join(out, "model")
os.makedirs(model_dir)
tokenizer = Tokenizer.from_file(os.path.join(out, "smollm2", "tokenizer.json"))
if arch == "llama31":
    specials = ["<|begin_of_text|>", "<|end_of_text|>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"]
    bos, eos, template = "<|begin_of_text|>", "<|eot_id|>", "llama-3.1-instruct"
elif arch == "gemma2":
    specials = ["<bos>", "<eos>", "<start_of_turn>", "<end_of_turn>"]
    bos, eos, template = "<bos>", "<end_of_turn>", "gemma-2-it"
else:
    specials = ["<s>", "<|endoftext|>", "<|system|>", "<|user|>", "<|assistant|>", "<|end|>"]
    bos, eos, template = "<s>", "<|endoftext|>", "phi-3.5-mini-instruct"
tokenizer.add_special_tokens(specials)
tokenizer.save(os.path.join(model_dir, "tokenizer.json"))
with open(f"tests/data/chat_templates/{template}.jinja") as f:
    chat_template = f.read()
json.dump({"bos_token": bos, "eos_token": eos, "add_bos_token": False,
           "chat_template": chat_template, "tokenizer_class": "PreTrainedTokenizerFast"},
          open(os.path.join(model_dir, "tokenizer_config.json"), "w"), indent=1)
common = dict(vocab_size=tokenizer.get_vocab_size(), hidden_size=256, intermediate_size=768,
              num_hidden_layers=4, num_attention_heads=4, num_key_value_heads=2, head_dim=64,
              tie_word_embeddings=True, bos_token_id=tokenizer.token_to_id(bos),
              eos_token_id=tokenizer.token_to_id(eos))
torch.manual_seed(0)
if arch == "llama31":
    config = LlamaConfig(**common, max_position_embeddings=131072, rope_theta=500000.0, rms_norm_eps=1e-5,
                         rope_scaling={"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                                       "high_freq_factor": 4.0, "original_max_position_embeddings": 8192})
    LlamaForCausalLM(config).save_pretrained(model_dir, safe_serialization=True)
elif arch == "phi3":
    # Phi-3.5-mini's shape of scaling: 32 factors per list there, head_dim / 2 = 32 here too.
    short = [1.0 + 0.02 * i for i in range(32)]
    long = [1.0 + 1.5 * i for i in range(32)]
    config = Phi3Config(**common, max_position_embeddings=131072, original_max_position_embeddings=4096,
                        rope_theta=10000.0, rms_norm_eps=1e-5, sliding_window=2047,
                        rope_scaling={"type": "longrope", "short_factor": short, "long_factor": long},
                        pad_token_id=tokenizer.token_to_id(eos))
    Phi3ForCausalLM(config).save_pretrained(model_dir, safe_serialization=True)
else:
    config = Gemma2Config(**common, max_position_embeddings=8192, rope_theta=10000.0, rms_norm_eps=1e-6,
                          hidden_activation="gelu_pytorch_tanh", query_pre_attn_scalar=64,
                          attn_logit_softcapping=50.0, final_logit_softcapping=30.0, sliding_window=128)
    Gemma2ForCausalLM(config).save_pretrained(model_dir, safe_serialization=True)
EOF

if [ "$ARCH" = gemma2 ]; then  # Gemma's template refuses a system turn
  printf '%s\n' '[{"role": "user", "content": "Name a prime."}, {"role": "assistant", "content": "7"}]' > "$OUT/messages.json"
else
  printf '%s\n' '[{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Name a prime."}, {"role": "assistant", "content": "7"}]' \
    > "$OUT/messages.json"
fi
echo "== what finetune trains on (qft template --json):"
"$QFT" template --model "$OUT/model" --messages "$OUT/messages.json" --json
echo "== qft finetune, $STEPS steps:"
"$QFT" finetune --model "$OUT/model" --data examples/data/alpaca_en_demo_400.json --out "$OUT/run" \
  --optimizer qlion --lr 1e-3 --seq-len 256 --batch 4 --max-steps "$STEPS" --log-every 5 --eval-split 0.05 \
  --eval-every "$STEPS" --seed 0 --threads "$(nproc)"
