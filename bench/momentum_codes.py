#!/usr/bin/env python3
"""How well candidate momentum codes hold a real Lion momentum.

Reads one FP32 tensor (default: optimizer.lion.m) from a checkpoint's
safetensors state file, takes it as rows of WIDTH values, quantizes it with
round-to-nearest by each candidate layout, and prints bytes per value, the
relative RMS error and the share of values whose sign is flipped or zeroed
(all Lion's update reads is the sign of β1·m + (1−β1)·g).

Usage: momentum_codes.py STATE.safetensors [TENSOR] [WIDTH]
"""
import json
import struct
import sys

import numpy as np


def read_tensor(path, name):
    with open(path, "rb") as f:
        size = struct.unpack("<Q", f.read(8))[0]
        header = json.loads(f.read(size))
        if name not in header:
            sys.exit(f"{path}: no tensor '{name}' (have: {', '.join(k for k in header if k != '__metadata__')})")
        entry = header[name]
        if entry["dtype"] != "F32":
            sys.exit(f"{path}: '{name}' is {entry['dtype']}, not F32")
        begin, end = entry["data_offsets"]
        f.seek(8 + size + begin)
        return np.frombuffer(f.read(end - begin), dtype="<f4").astype(np.float64)


def bf16_down(x):
    """Largest BF16 value ≤ x (float32 inputs)."""
    bits = np.asarray(x, dtype=np.float32).view(np.uint32).copy()
    negative = (bits >> 31) == 1
    truncated = bits & 0xFFFF0000
    inexact = (bits & 0xFFFF) != 0
    # Truncation rounds toward zero: down for positives, up for negatives.
    bumped = np.where(negative & inexact, truncated + 0x10000, truncated)
    return bumped.astype(np.uint32).view(np.float32).astype(np.float64)


def bf16_up(x):
    return -bf16_down(-np.asarray(x, dtype=np.float32))


def uniform_blocks(rows, block, levels, bf16_ranges):
    """Asymmetric codes: offset = block min, scale = range / levels."""
    n, width = rows.shape
    padded = -(-width // block) * block  # a short last block, as a row's tail: padded with its last value
    rows = np.concatenate([rows, np.repeat(rows[:, -1:], padded - width, axis=1)], axis=1)
    blocks = rows.reshape(n, padded // block, block)
    low = blocks.min(axis=2, keepdims=True)
    high = blocks.max(axis=2, keepdims=True)
    if bf16_ranges:
        low = bf16_down(low.astype(np.float32))
        scale = bf16_up(((high - low) / levels).astype(np.float32))
    else:
        low = low.astype(np.float32).astype(np.float64)
        scale = ((high - low) / levels).astype(np.float32).astype(np.float64)
    safe = np.where(scale > 0, scale, 1.0)
    codes = np.clip(np.rint((blocks - low) / safe), 0, levels)
    return (low + codes * scale).reshape(n, padded)[:, :width]


def report(name, bytes_per_value, m, q):
    error = np.sqrt(np.mean((q - m) ** 2)) / np.sqrt(np.mean(m ** 2))
    lost = np.mean((np.sign(q) != np.sign(m)) & (m != 0)) * 100
    print(f"| {name} | {bytes_per_value:.3f} | {error:.4f} | {lost:.2f} % |")


def main():
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    path = sys.argv[1]
    name = sys.argv[2] if len(sys.argv) > 2 else "optimizer.lion.m"
    width = int(sys.argv[3]) if len(sys.argv) > 3 else 576
    m = read_tensor(path, name)
    m = m[: m.size // width * width].reshape(-1, width)
    print(f"{name}: {m.size} values as {m.shape[0]} rows of {width}")
    print("| momentum codes | bytes/value | relative RMS error | sign of m flipped or zeroed |")
    print("|---|---:|---:|---:|")
    report("INT8, one FP32 range per row", 1 + 8 / width, m, uniform_blocks(m, width, 255, False))
    for block in (128, 64):
        report(f"4-bit, FP32 range per {block}", 0.5 + 8 / block, m, uniform_blocks(m, block, 15, False))
        report(f"4-bit, BF16 range per {block}", 0.5 + 4 / block, m, uniform_blocks(m, block, 15, True))


if __name__ == "__main__":
    main()
