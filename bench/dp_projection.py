#!/usr/bin/env python3
"""Scaling projection for data-parallel QLion (issue 11): a latency-bandwidth
model of one step's collectives next to a measured compute time per step.

Per parameter and step, QftStore issues one reduce-scatter of the FP32
gradient (4 bytes per value) and all-gathers of the updated rows: INT8 codes
(1 byte per value), row ranges (8 bytes per row), the outliers (4 bytes each,
1 % of the values); a norm vector is one all-gather of FP32 values. Open MPI's
ring algorithms send (N-1)/N of each buffer per rank in N-1 rounds, so

    T_comm(N) = sum over collectives [ (N-1)·alpha + (N-1)/N · bytes / beta ]

Two bounds for the step: nothing hidden (T_compute + T_comm) and the share
of the sums that backward can hide (the fused update overlaps each sum with
the next layer's backward, about 2/3 of the step): T_compute + max(0, T_comm - 2/3·T_compute).
Tokens per second = N · tokens per rank per step / T_step (the global batch grows with N).

usage: dp_projection.py CONFIG.json STEP_SECONDS TOKENS_PER_RANK [alpha_us]
"""
import json
import sys


def collectives(config):
    C, I, V, L = (config["hidden_size"], config["intermediate_size"], config["vocab_size"],
                  config["num_hidden_layers"])
    heads, kv = config["num_attention_heads"], config.get("num_key_value_heads", config["num_attention_heads"])
    d = C // heads
    matrices = [(V, C)] + [(C, C), (kv * d, C), (kv * d, C), (C, C), (I, C), (I, C), (C, I)] * L
    if not config.get("tie_word_embeddings", False):
        matrices.append((V, C))
    vectors = [C] * (2 * L + 1)
    out = []  # bytes of each collective per rank before the (N-1)/N share
    for rows, cols in matrices:
        values = rows * cols
        out += [4 * values, values, 8 * rows, 4 * values // 100]
    for size in vectors:
        out += [4 * size, 4 * size]
    return out


def main():
    config = json.load(open(sys.argv[1]))
    step_seconds, tokens = float(sys.argv[2]), int(sys.argv[3])
    alpha = (float(sys.argv[4]) if len(sys.argv) > 4 else 30.0) * 1e-6
    sizes = collectives(config)
    total_gb = sum(sizes) / 1e9
    print(f"collectives per step: {len(sizes)}, {total_gb:.2f} GB before the (N-1)/N share; "
          f"compute {step_seconds:.1f} s per step for {tokens} tokens per rank; alpha {alpha * 1e6:.0f} us")
    print("| link | N | T_comm (s) | tokens/s, nothing hidden | efficiency | tokens/s, backward hides | efficiency |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for gbits in (10, 25, 100):
        beta = gbits * 1e9 / 8
        for n in (2, 4, 8, 16, 32):
            comm = sum((n - 1) * alpha + (n - 1) / n * size / beta for size in sizes)
            exposed = step_seconds + comm
            hidden = step_seconds + max(0.0, comm - 2 / 3 * step_seconds)
            ideal = n * tokens / step_seconds
            print(f"| {gbits} Gb/s | {n} | {comm:.1f} | {n * tokens / exposed:.1f} | {n * tokens / exposed / ideal:.0%} "
                  f"| {n * tokens / hidden:.1f} | {n * tokens / hidden / ideal:.0%} |")


if __name__ == "__main__":
    main()
