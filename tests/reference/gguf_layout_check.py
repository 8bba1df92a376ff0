#!/usr/bin/env python3
"""Checks a GGUF file qft exported against llama.cpp's own layout, as its
gguf-py package describes it, and against the HF directory it came from.

Usage: gguf_layout_check.py FILE.gguf HF_DIR

- general.architecture names an architecture gguf-py knows; every tensor in
  the file is one of gguf-py's tensors for that architecture (blk.N for N below
  block_count), and every HF parameter's tensor is there;
- each tensor holds the HF parameter as llama.cpp's converter
  (convert_hf_to_gguf.py) writes it: the same values, plus 1 for Gemma's norm
  weights (llama.cpp stores the scale 1 + w); Q/K rows of "llama" files are
  interleaved, so those are only compared as sorted multisets.
Prints one JSON line: {"architecture", "tensors", "max_abs_error"}.
"""
import json
import sys

import numpy as np
import torch
from gguf import GGUFReader
from gguf.constants import MODEL_ARCH, MODEL_ARCH_NAMES, MODEL_TENSORS, TENSOR_NAMES
from gguf.tensor_mapping import get_tensor_name_map
from safetensors.torch import load_file


def field_value(reader, key):
    field = reader.fields[key]
    part = field.parts[field.data[0]]
    return bytes(part).decode() if field.types[0].name == "STRING" else part[0]


def main():
    path, hf_dir = sys.argv[1], sys.argv[2]
    reader = GGUFReader(path)
    arch_name = field_value(reader, "general.architecture")
    arch = next(a for a, name in MODEL_ARCH_NAMES.items() if name == arch_name)
    blocks = int(field_value(reader, f"{arch_name}.block_count"))
    allowed = set()
    for tensor in MODEL_TENSORS[arch]:
        template = TENSOR_NAMES[tensor]
        for bid in range(blocks) if "{bid}" in template else [None]:
            allowed.add(template.format(bid=bid))
    names = {t.name: t for t in reader.tensors}
    for name in names:
        base = name.rsplit(".", 1)[0]
        if base not in allowed:
            sys.exit(f"{path}: tensor {name} is not one of gguf-py's {arch_name} tensors")

    hf = load_file(f"{hf_dir}/model.safetensors")
    name_map = get_tensor_name_map(arch, blocks)
    worst = 0.0
    for hf_name, value in hf.items():
        gguf_name = name_map.get_name(hf_name, try_suffixes=(".weight", ".bias"))
        if gguf_name is None:
            sys.exit(f"gguf-py maps no tensor to {hf_name}")
        if hf_name == "lm_head.weight" and arch == MODEL_ARCH.GEMMA2:
            continue  # llama.cpp's converter drops Gemma-2's (tied) head
        if gguf_name not in names:
            sys.exit(f"{path}: {gguf_name} ({hf_name}) is missing")
        want = value.to(torch.float64).numpy()
        if arch == MODEL_ARCH.GEMMA2 and hf_name.endswith("norm.weight"):
            want = want + 1.0
        got = np.asarray(names[gguf_name].data, dtype=np.float64).reshape(want.shape)
        if arch == MODEL_ARCH.LLAMA and (".q_proj." in hf_name or ".k_proj." in hf_name):
            got, want = np.sort(got, axis=None), np.sort(want, axis=None)
        worst = max(worst, float(np.max(np.abs(got - want))))
    print(json.dumps({"architecture": arch_name, "tensors": len(names), "max_abs_error": worst}))


if __name__ == "__main__":
    main()
