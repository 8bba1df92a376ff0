#!/usr/bin/env bash
# Create (or reuse) the Python virtual environment used by the PyTorch
# reference generator (tests/reference/make_reference.py) and the peer
# benchmark (bench/torch_train_bench.py).
#
# Usage: scripts/setup-python-env.sh [VENV_DIR]     (default: build/pyenv)
#
# Prerequisites (Debian 12): apt-get install python3-torch python3-numpy python3-venv
#
# The venv is created with --system-site-packages so Debian's torch 1.13 (CPU)
# and numpy are used; only the pure HF stack comes from PyPI.
#
# Why transformers 4.49.0: it is the newest release that works with torch 1.13.
#   * 4.50.x imports torch.distributed.tensor (torch >= 2.x) and fails while
#     importing modeling_llama;
#   * 4.51+ refuses torch < 2.x outright ("PyTorch >= 2.1 is required").
# 4.49.0 runs LlamaForCausalLM, MistralForCausalLM and Qwen2ForCausalLM (needs
# >= 4.37) forward+backward with torch 1.13 on Python 3.11 (eager attention), and
# its LlamaConfig honours an explicit head_dim != hidden_size/num_attention_heads
# (also true of 4.45.2-4.48.3, which were tried too).
#
# gguf 0.19.0 (the newest; needs only numpy >= 1.17, pyyaml, requests, tqdm) is
# ggml's own reader/writer and de-quantizer, and what transformers' GGUF loading
# (>= 0.10.0) uses. accelerate is required by transformers' GGUF loading; 1.2.1
# is the newest that accepts torch 1.13 (1.3.0+ require torch >= 2.0).
#
# peft 0.13.2 (runs on torch 1.13; psutil and pyyaml come from Debian): the LoRA reference
# (tests/reference/make_lora_reference.py) is PEFT itself, and lora_test checks that PEFT loads
# the adapters qft exports.
#
# sentencepiece and protobuf: the tokenizer reference trains a SentencePiece model and
# converts it to LlamaTokenizerFast (transformers' slow->fast conversion reads the
# model's protobuf).
#
# Idempotent: a stamp file records the pinned set; when it matches and the
# imports work, nothing is reinstalled. Quiet on success, loud on failure.
set -euo pipefail

PY=/usr/bin/python3
VENV_DIR=${1:-build/pyenv}

# Exact pins (everything pip installs into the venv on Debian 12 with
# python3-torch present; torch's dependencies requests/yaml/typing_extensions
# and numpy come from Debian).
PINS=(
  "transformers==4.49.0"
  "safetensors==0.8.0"
  "tokenizers==0.21.4"
  "sentencepiece==0.2.0"
  "protobuf==7.36.2"
  "huggingface-hub==0.36.2"
  "hf-xet==1.8.0"
  "filelock==4.2.12"
  "fsspec==2026.9.0"
  "packaging==26.3"
  "regex==2026.11.15"
  "tqdm==4.70.1"
  "jinja2==3.1.6"
  "markupsafe==3.0.4"
  "gguf==0.19.0"
  "accelerate==1.2.1"
)
# Installed without its dependencies (all of them are above or Debian's): it asks for
# torch >= 1.13.0, which Debian's 1.13.0a0 does not satisfy, and pip would fetch a CUDA torch.
PEFT_PIN="peft==0.13.2"

die() { echo "setup-python-env: ERROR: $*" >&2; exit 1; }

[ -x "$PY" ] || die "$PY not found (apt-get install python3)"
"$PY" -c 'import torch, numpy' 2>/dev/null \
  || die "Debian's torch/numpy not importable by $PY (apt-get install python3-torch python3-numpy)"
"$PY" -c 'import venv, ensurepip' 2>/dev/null \
  || die "python venv/ensurepip missing (apt-get install python3-venv)"

STAMP="$VENV_DIR/.qft-pins"
WANT=$(printf '%s\n' "${PINS[@]}" "$PEFT_PIN")

check_env() {
  "$VENV_DIR/bin/python" - <<'EOF'
import sys
import numpy, torch
# torch/numpy must be Debian's, not something pip pulled in.
for m in (numpy, torch):
    if not m.__file__.startswith("/usr/lib/python3/dist-packages/"):
        sys.exit(f"{m.__name__} imported from {m.__file__}, expected Debian's dist-packages")
import safetensors.torch  # noqa: F401
import sentencepiece  # noqa: F401
from sentencepiece import sentencepiece_model_pb2  # noqa: F401  (needs protobuf)
import gguf, accelerate, peft  # noqa: F401,E401
import transformers
from transformers.modeling_gguf_pytorch_utils import load_gguf_checkpoint  # noqa: F401
from transformers import (LlamaConfig, LlamaForCausalLM, MistralForCausalLM,  # noqa: F401
                          Qwen2ForCausalLM)
c = LlamaConfig(vocab_size=8, hidden_size=16, intermediate_size=8, num_hidden_layers=1,
                num_attention_heads=2, num_key_value_heads=1, head_dim=4)
m = LlamaForCausalLM(c)
assert tuple(m.model.layers[0].self_attn.q_proj.weight.shape) == (8, 16), "LlamaConfig ignores head_dim"
EOF
}

if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$WANT" ] && [ -x "$VENV_DIR/bin/python" ]; then
  if check_env >/dev/null 2>&1; then
    exit 0
  fi
  echo "setup-python-env: existing venv at $VENV_DIR is broken, reinstalling" >&2
fi

mkdir -p "$(dirname "$VENV_DIR")"
"$PY" -m venv --system-site-packages "$VENV_DIR" || die "venv creation failed"
rm -f "$STAMP"

export PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_INPUT=1
# No upgrade of already-satisfied dependencies: numpy must stay Debian's.
"$VENV_DIR/bin/python" -m pip install --quiet --upgrade-strategy only-if-needed "${PINS[@]}" \
  || die "pip install failed"
"$VENV_DIR/bin/python" -m pip install --quiet --no-deps "$PEFT_PIN" || die "pip install $PEFT_PIN failed"

check_env || die "the environment in $VENV_DIR does not work (see above)"
printf '%s\n' "$WANT" > "$STAMP"
