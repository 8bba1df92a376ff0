#!/usr/bin/env python3
"""Loads a model qft exported with transformers — an HF directory, or a GGUF
file through transformers' own GGUF loader — and prints JSON: the ids its
tokenizer gives TEXT and the float64 mean next-token loss on them.

Usage: export_check.py (hf DIR | gguf FILE) TEXT [IDS]
With IDS (space-separated token ids) the loss is computed on them instead,
and a model without a tokenizer gives "ids": [].
"""
import json
import os
import sys

import torch
from gguf import GGUFReader
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer
from transformers.modeling_gguf_pytorch_utils import load_gguf_checkpoint


def main():
    kind, path, text = sys.argv[1], sys.argv[2], sys.argv[3]
    if kind == "hf":
        has_tokenizer = any(os.path.exists(os.path.join(path, f)) for f in ("tokenizer.json", "tokenizer.model"))
        tokenizer = AutoTokenizer.from_pretrained(path) if has_tokenizer or len(sys.argv) <= 4 else None
        model = AutoModelForCausalLM.from_pretrained(path, torch_dtype=torch.float32)
    else:
        # transformers' own GGUF loading (load_gguf_checkpoint de-quantizes and
        # undoes llama.cpp's Q/K interleaving) into a model built on the CPU:
        # from_pretrained(gguf_file=…) needs torch.device as a context manager,
        # which torch 1.13 lacks.
        directory, name = os.path.split(os.path.abspath(path))
        has_tokenizer = "tokenizer.ggml.model" in GGUFReader(path).fields
        tokenizer = AutoTokenizer.from_pretrained(directory, gguf_file=name) if has_tokenizer or len(sys.argv) <= 4 else None
        config = AutoConfig.from_pretrained(directory, gguf_file=name)
        model = AutoModelForCausalLM.from_config(config, torch_dtype=torch.float32)
        state = load_gguf_checkpoint(path, return_tensors=True, model_to_load=model)["tensors"]
        missing = set(model.load_state_dict(state, strict=False).missing_keys)
        if missing - ({"lm_head.weight"} if config.tie_word_embeddings else set()):
            sys.exit(f"missing tensors: {sorted(missing)}")
    ids = tokenizer(text)["input_ids"] if tokenizer else []
    loss_ids = [int(t) for t in sys.argv[4].split()] if len(sys.argv) > 4 else ids
    model = model.double().eval()
    with torch.no_grad():
        logits = model(torch.tensor([loss_ids]), use_cache=False).logits[0]  # no HybridCache on torch 1.13
        loss = torch.nn.functional.cross_entropy(logits[:-1], torch.tensor(loss_ids[1:]))
    print(json.dumps({"ids": ids, "loss": loss.item()}))


if __name__ == "__main__":
    main()
