#!/usr/bin/env python3
"""LoRA reference through PEFT itself (peft 0.13.2 on torch 1.13, transformers 4.49), for lora_test.

Usage: python make_lora_reference.py REFERENCE_DIR
       python make_lora_reference.py --loss MODEL_DIR ADAPTER_DIR TOKENS_FILE

The first form reads the cases make_reference.py wrote (REFERENCE_DIR/<case>/: the HF model,
tokens.txt, train_tokens.txt) and writes REFERENCE_DIR/<case>/lora/:
  adapter/             PEFT's save_pretrained of a LoraConfig(r=4, lora_alpha=8, lora_dropout=0,
                       every linear of attention and MLP): A as PEFT initialises it, B drawn from
                       N(0, 0.05^2) so that every gradient is non-zero (PEFT's B = 0 would make
                       A's gradient vanish and test nothing).
  expected.safetensors loss [1] and grad.<name> of every adapter tensor, named without PEFT's
                       "base_model.model." prefix; float64 (the base de-quantised exactly, the HF
                       float32 islands lifted by make_reference.Float64Exact), dropout off, over
                       the lines of tokens.txt as make_reference.py computes the loss.
  train.safetensors    adamw.losses [10]: torch.optim.AdamW on the adapters only (the base frozen),
                       float32, make_reference.TRAIN_SETTINGS' AdamW hyper-parameters, batches and
                       loss, starting from adapter/.

The second form prints one JSON line {"loss": ..., "merged_loss": ...}: PeftModel.from_pretrained
of ADAPTER_DIR onto MODEL_DIR (float64), the mean loss over the lines of TOKENS_FILE, and the
same after merge_and_unload() -- how a user's PEFT loads an adapter that qft exported.
"""
import json
import os
import shutil
import sys

import torch
from peft import LoraConfig, PeftModel, get_peft_model
from safetensors.torch import save_file

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from make_reference import (CASES, TRAIN_SETTINGS, Float64Exact, batch_loss,  # noqa: E402
                            load_stored, run_steps)

LORA_CASES = ["llama_gqa_untied", "llama_tied", "qwen2_bias"]
TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
RANK, ALPHA = 4, 8
PREFIX = "base_model.model."


def read_lines(path):
    with open(path) as f:
        return [[int(t) for t in line.split()] for line in f if line.strip()]


def lora_parameters(model):
    return {n: p for n, p in model.named_parameters() if "lora_" in n}


def qft_name(peft_name):
    # base_model.model.model.layers.0.self_attn.q_proj.lora_A.default.weight -> model.layers.0...lora_A.weight
    return peft_name[len(PREFIX):].replace(".default.", ".")


def make_adapter(case, casedir, adapter_dir):
    torch.manual_seed(1234)
    model = load_stored(CASES[case], casedir, torch.float32)
    config = LoraConfig(r=RANK, lora_alpha=ALPHA, lora_dropout=0.0, target_modules=TARGETS, task_type="CAUSAL_LM")
    peft_model = get_peft_model(model, config)
    with torch.no_grad():
        for name, p in lora_parameters(peft_model).items():
            if "lora_B" in name:
                p.normal_(0.0, 0.05)
    peft_model.save_pretrained(adapter_dir)


def case_for(casedir):
    with open(os.path.join(casedir, "config.json")) as f:
        architecture = json.load(f)["architectures"][0]
    return next(c for c in CASES.values() if c["cls"].__name__ == architecture)


def gradients(casedir, adapter_dir):
    model = PeftModel.from_pretrained(load_stored(case_for(casedir), casedir, torch.float64), adapter_dir,
                                      is_trainable=True)
    params = lora_parameters(model)
    if len(params) == 0:
        raise RuntimeError("PEFT made no adapters")
    lines = read_lines(os.path.join(casedir, "tokens.txt"))
    with Float64Exact() as exact:
        loss = batch_loss(model, lines)
        loss.backward()
    exact.check_used()
    expected = {"loss": loss.detach().reshape(1)}
    for name, p in params.items():
        expected["grad." + qft_name(name)] = p.grad.detach().contiguous()
    return expected


def train_losses(casedir, adapter_dir):
    s = TRAIN_SETTINGS
    h = s["adamw"]
    model = PeftModel.from_pretrained(load_stored(case_for(casedir), casedir, torch.float32), adapter_dir,
                                      is_trainable=True)
    model.train()
    params = list(lora_parameters(model).values())
    opt = torch.optim.AdamW(params, lr=h["lr"], betas=(h["beta1"], h["beta2"]), eps=h["eps"],
                            weight_decay=h["weight_decay"])
    return run_steps(model, opt, read_lines(os.path.join(casedir, s["tokens_file"])), "lora adamw")


def make_case(case, root):
    casedir = os.path.join(root, case)
    outdir = os.path.join(casedir, "lora")
    if os.path.isdir(outdir):
        shutil.rmtree(outdir)
    os.makedirs(outdir)
    adapter_dir = os.path.join(outdir, "adapter")
    make_adapter(case, casedir, adapter_dir)
    save_file({k: v.float() for k, v in gradients(casedir, adapter_dir).items()},
              os.path.join(outdir, "expected.safetensors"), metadata={"dtype": "float64"})
    save_file({"adamw.losses": train_losses(casedir, adapter_dir)}, os.path.join(outdir, "train.safetensors"))


def loss_through_peft(model_dir, adapter_dir, tokens_file):
    model = PeftModel.from_pretrained(load_stored(case_for(model_dir), model_dir, torch.float64), adapter_dir)
    model.eval()
    lines = read_lines(tokens_file)
    with torch.no_grad(), Float64Exact():
        loss = batch_loss(model, lines).item()
        merged = batch_loss(model.merge_and_unload(), lines).item()
    print(json.dumps({"loss": loss, "merged_loss": merged}))


def main(argv):
    if len(argv) == 5 and argv[1] == "--loss":
        return loss_through_peft(argv[2], argv[3], argv[4])
    if len(argv) != 2:
        sys.exit(__doc__)
    for case in LORA_CASES:
        make_case(case, argv[1])


if __name__ == "__main__":
    main(sys.argv)
