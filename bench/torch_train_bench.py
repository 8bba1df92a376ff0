#!/usr/bin/env python3
"""Peer benchmark: full-parameter training of a SmolLM2-135M-shaped
LlamaForCausalLM with PyTorch + transformers on the CPU.

Run with the newest PyTorch from PyPI (bench/peer-env.sh):
    build/peer-env/bin/python bench/torch_train_bench.py --mode autocast --attention sdpa
        [--seq-len 512] [--steps 6] [--warmup 2] [--threads 2] [--layers 30]

Model: hidden 576, 30 layers, 9 heads, 3 kv heads, intermediate 1536, vocab
49152, tied embeddings, rope_theta 1e5, rms_norm_eps 1e-5 (SmolLM2-135M's
shape), random HF init; --attention sdpa (torch.nn.functional's
scaled_dot_product_attention) or eager. Each step: batch 1 of random token
ids, forward with labels = input ids (HF's shifted mean cross entropy),
backward, torch.optim.AdamW step (lr 1e-4, betas (0.9, 0.999), eps 1e-8,
weight decay 0.1 on every parameter), zero_grad. --warmup steps are run first
and not timed. --mode:
  fp32      everything in float32;
  autocast  forward and loss under torch.autocast("cpu", dtype=torch.bfloat16)
            — what HF Trainer's bf16=True does on a CPU: BF16 matmuls, FP32
            master weights, gradients and AdamW;
  bf16      the model and AdamW's state in bfloat16 (pure BF16 training).

Prints one JSON line: median step seconds, median tokens/s, peak RSS (GiB,
from resource.getrusage ru_maxrss, i.e. the whole process's high-water mark).
"""
import argparse
import json
import platform
import resource
import statistics
import sys
import time

import torch
import transformers
from transformers import LlamaConfig, LlamaForCausalLM


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seq-len", type=int, default=512)
    ap.add_argument("--steps", type=int, default=6, help="timed steps")
    ap.add_argument("--warmup", type=int, default=2, help="untimed steps before the timed ones")
    ap.add_argument("--threads", type=int, default=2, help="torch.set_num_threads")
    ap.add_argument("--layers", type=int, default=30, help="number of decoder layers (30 = SmolLM2-135M)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--mode", choices=["fp32", "autocast", "bf16"], default="fp32")
    ap.add_argument("--attention", choices=["eager", "sdpa"], default="eager")
    args = ap.parse_args()
    if args.steps < 1 or args.warmup < 0 or args.seq_len < 2 or args.layers < 1 or args.threads < 1:
        ap.error("need --steps >= 1, --warmup >= 0, --seq-len >= 2, --layers >= 1, --threads >= 1")

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    batch = 1

    cfg = LlamaConfig(
        vocab_size=49152, hidden_size=576, intermediate_size=1536,
        num_hidden_layers=args.layers, num_attention_heads=9, num_key_value_heads=3,
        max_position_embeddings=max(8192, args.seq_len), rope_theta=100000.0,
        rms_norm_eps=1e-5, tie_word_embeddings=True, hidden_act="silu",
        attention_bias=False, mlp_bias=False,
        use_cache=False, bos_token_id=1, eos_token_id=2,
    )
    cfg._attn_implementation = args.attention
    model = LlamaForCausalLM(cfg)
    model = model.to(torch.bfloat16) if args.mode == "bf16" else model.float()
    model.train()
    n_params = sum(p.numel() for p in model.parameters())

    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, betas=(0.9, 0.999), eps=1e-8,
                            weight_decay=0.1)
    gen = torch.Generator().manual_seed(args.seed + 1)

    def step():
        ids = torch.randint(0, cfg.vocab_size, (batch, args.seq_len), generator=gen)
        t0 = time.perf_counter()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=args.mode == "autocast"):
            loss = model(input_ids=ids, labels=ids, use_cache=False).loss
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        dt = time.perf_counter() - t0
        return dt, loss.item()

    for _ in range(args.warmup):
        step()
    times, losses = [], []
    for _ in range(args.steps):
        dt, loss = step()
        times.append(dt)
        losses.append(loss)

    tokens = batch * args.seq_len
    peak_rss_gib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / (1024 ** 2)  # KiB on Linux
    print(json.dumps({
        "bench": "torch_train",
        "mode": args.mode,
        "attention": args.attention,
        "model": "llama-smollm2-135m-shape",
        "layers": args.layers,
        "params": n_params,
        "seq_len": args.seq_len,
        "batch": batch,
        "threads": args.threads,
        "warmup": args.warmup,
        "steps": args.steps,
        "median_step_s": statistics.median(times),
        "tokens_per_s": statistics.median(tokens / t for t in times),
        "peak_rss_gib": round(peak_rss_gib, 4),
        "step_s": [round(t, 4) for t in times],
        "losses": [round(x, 4) for x in losses],
        "optimizer": "torch.optim.AdamW(lr=1e-4, betas=(0.9,0.999), eps=1e-8, wd=0.1)",
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "python": platform.python_version(),
    }))
    sys.stdout.flush()


if __name__ == "__main__":
    main()
