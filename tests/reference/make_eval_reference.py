#!/usr/bin/env python3
"""Multiple-choice reference for tests/eval_test.cpp: SmolLM2-135M-Instruct (the
GGUF of scripts/fetch-smollm2.sh, loaded by transformers' GGUF loading) scores a
few hand-written questions exactly as lm-evaluation-harness 0.4 does.

Usage (with the venv from scripts/setup-python-env.sh):
    build/pyenv/bin/python tests/reference/make_eval_reference.py OUTDIR MODELS_DIR

Writes OUTDIR/eval/choice_reference.json:
  {"model_path": the .gguf path,
   "records": [{"context", "choices", "label",
                "context_tokens": [...], "continuation_tokens": [[...] per choice],
                "loglikelihoods": [float64 Σ log p(continuation | context) per choice]}]}

Tokens follow lm-eval's TemplateLM._encode_pair (trailing whitespace of the
context moves to the continuation; the continuation's tokens are those of
encode(context + continuation) after len(encode(context)); no special tokens;
an empty context becomes the prefix token: the BOS, else the EOS) and the model
reads context_tokens + continuation_tokens, as lm-eval's loglikelihood does.
The questions exercise a context ending in a space, one ending in a newline,
a word split across the boundary (the whole string tokenizes differently from
its parts), a choice without a leading space, non-ASCII text and an empty
context.
"""
import json
import os
import subprocess
import sys

import torch
import torch.nn.functional as F
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer
from transformers.modeling_gguf_pytorch_utils import load_gguf_checkpoint

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from make_reference import Float64Exact  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

RECORDS = [
    {"context": "Question: Which gas do plants take in from the air to make sugar?\nAnswer:",
     "choices": [" carbon dioxide", " oxygen", " nitrogen", " helium"], "label": 0},
    {"context": "The capital of France is ",
     "choices": ["Paris.", "Rome.", "a city in Europe known for its cafés and crêpes."], "label": 0},
    {"context": "Fill in the blank: two plus two equals\n",
     "choices": ["four", " four", "five"], "label": 0},
    {"context": "That story was simply un",
     "choices": ["believable", "done", "believably good"], "label": 0},
    {"context": "",
     "choices": ["Hello, world!", "Goodbye, moon."], "label": 1},
]


def fail(msg):
    raise RuntimeError(msg)


def encode_pair(tokenizer, context, continuation):
    """lm-eval 0.4's TemplateLM._encode_pair for a causal model."""
    n_spaces = len(context) - len(context.rstrip())
    if n_spaces > 0:
        continuation = context[-n_spaces:] + continuation
        context = context[:-n_spaces]
    if context == "":
        prefix = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.eos_token_id
        return [prefix], tokenizer.encode(continuation, add_special_tokens=False)
    whole = tokenizer.encode(context + continuation, add_special_tokens=False)
    context_enc = tokenizer.encode(context, add_special_tokens=False)
    return context_enc, whole[len(context_enc):]


def main(argv):
    if len(argv) != 3:
        sys.exit(__doc__)
    outdir, models_dir = argv[1], argv[2]
    env = dict(os.environ, QFT_PYTHON=sys.executable)
    path = subprocess.run(["bash", os.path.join(ROOT, "scripts", "fetch-smollm2.sh"), models_dir],
                          check=True, capture_output=True, text=True, env=env).stdout.strip().splitlines()[-1]
    directory, filename = os.path.split(path)
    tokenizer = AutoTokenizer.from_pretrained(directory, gguf_file=filename)
    config = AutoConfig.from_pretrained(directory, gguf_file=filename)
    config._attn_implementation = "eager"
    # As make_gguf_reference.py: torch 1.13 has no meta device, so the
    # checkpoint is loaded into a model built on the CPU.
    model = AutoModelForCausalLM.from_config(config, torch_dtype=torch.float32)
    state = load_gguf_checkpoint(path, return_tensors=True, model_to_load=model)["tensors"]
    result = model.load_state_dict(state, strict=False)
    if set(result.missing_keys) - {"lm_head.weight"} or result.unexpected_keys:
        fail(f"SmolLM2: state dict mismatch {result}")
    model = model.double().eval()

    records = []
    with torch.no_grad(), Float64Exact() as exact:
        for record in RECORDS:
            out = dict(record, continuation_tokens=[], loglikelihoods=[])
            for choice in record["choices"]:
                context_enc, continuation_enc = encode_pair(tokenizer, record["context"], choice)
                if not continuation_enc:
                    fail(f"{choice!r} has no continuation tokens")
                out["context_tokens"] = context_enc
                out["continuation_tokens"].append(continuation_enc)
                ids = torch.tensor([context_enc + continuation_enc], dtype=torch.long)
                logits = model(input_ids=ids[:, :-1], use_cache=False).logits[0]
                logprobs = F.log_softmax(logits[-len(continuation_enc):], dim=-1)
                target = torch.tensor(continuation_enc, dtype=torch.long)
                out["loglikelihoods"].append(logprobs.gather(1, target[:, None]).sum().item())
            records.append(out)
    exact.check_used()

    os.makedirs(os.path.join(outdir, "eval"), exist_ok=True)
    with open(os.path.join(outdir, "eval", "choice_reference.json"), "w") as f:
        json.dump({"model_path": os.path.abspath(path), "records": records}, f, indent=1, ensure_ascii=False)


if __name__ == "__main__":
    main(sys.argv)
