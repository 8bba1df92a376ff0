#!/usr/bin/env bash
# Every reference generator, run by the tests' `reference` fixture:
#   make_all.sh PYENV_DIR OUT_DIR
set -euo pipefail
PYENV=$1
OUT=$2
HERE=$(cd "$(dirname "$0")" && pwd)
bash "$HERE/../../scripts/setup-python-env.sh" "$PYENV"
"$PYENV/bin/python" "$HERE/make_reference.py" "$OUT" > /dev/null
"$PYENV/bin/python" "$HERE/make_chat_reference.py" "$OUT"
# LoRA through PEFT: adapters, their gradients and a short AdamW run, on three of the cases above.
"$PYENV/bin/python" "$HERE/make_lora_reference.py" "$OUT"
# GGUF: every tensor/metadata type, tiny models as HF + GGUF, and SmolLM2-135M
# (fetched into the build directory's models/) through transformers' GGUF loading.
"$PYENV/bin/python" "$HERE/make_gguf_reference.py" "$OUT/gguf" "$(dirname "$OUT")/models" > /dev/null
# Tokenizers: HF `tokenizers` ids for SmolLM2's GGUF vocabulary and trained byte-level
# BPE and SentencePiece tokenizers on a corpus of ~3400 strings.
"$PYENV/bin/python" "$HERE/make_tokenizer_reference.py" "$OUT" > /dev/null
# Evaluation: SmolLM2's log-likelihoods of hand-written multiple-choice questions,
# tokenized as lm-evaluation-harness does.
"$PYENV/bin/python" "$HERE/make_eval_reference.py" "$OUT" "$(dirname "$OUT")/models" > /dev/null
