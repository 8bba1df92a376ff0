#!/usr/bin/env python3
"""How often transformers picks the same choice as `qft eval --task choice`.

Usage (with the venv from scripts/setup-python-env.sh):
    build/pyenv/bin/python bench/eval_agreement.py MODEL.gguf DATA.jsonl DETAILS.jsonl N

DETAILS.jsonl is what `qft eval --task choice --details FILE` wrote for the first N
records of DATA.jsonl (0-shot, no --limit-per-subject, no --add-bos). Each choice is
scored again by transformers 4.49 on the same GGUF (load_gguf_checkpoint: de-quantized
and un-permuted, float32), one forward per choice, with lm-evaluation-harness 0.4's
token pairs (tests/reference/make_eval_reference.py's encode_pair). Prints one JSON
line: questions compared, agreements on acc's and acc_norm's choice, the largest
log-likelihood difference, and transformers' seconds.
"""
import json
import os
import sys
import time

import torch
import torch.nn.functional as F
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer
from transformers.modeling_gguf_pytorch_utils import load_gguf_checkpoint

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "tests", "reference"))
from make_eval_reference import encode_pair  # noqa: E402


def argmax(values):
    return max(range(len(values)), key=lambda i: (values[i], -i))  # first of equals, as numpy


def main(argv):
    if len(argv) != 5:
        sys.exit(__doc__)
    path, data, details, n = argv[1], argv[2], argv[3], int(argv[4])
    directory, filename = os.path.split(path)
    tokenizer = AutoTokenizer.from_pretrained(directory, gguf_file=filename)
    config = AutoConfig.from_pretrained(directory, gguf_file=filename)
    config._attn_implementation = "eager"
    model = AutoModelForCausalLM.from_config(config, torch_dtype=torch.float32)
    model.load_state_dict(load_gguf_checkpoint(path, return_tensors=True, model_to_load=model)["tensors"], strict=False)
    model.eval()
    torch.set_num_threads(max(1, os.cpu_count() or 1))
    records = [json.loads(line) for line in open(data) if line.strip()][:n]
    qft = [json.loads(line) for line in open(details)][:n]
    if len(qft) != len(records):
        sys.exit(f"{details} has {len(qft)} questions, {n} asked")
    same = same_norm = 0
    largest = 0.0
    start = time.time()
    with torch.no_grad():
        for record, ours in zip(records, qft):
            sums = []
            for choice in record["choices"]:
                context, continuation = encode_pair(tokenizer, record["context"], choice)
                ids = torch.tensor([context + continuation])
                logits = model(input_ids=ids[:, :-1], use_cache=False).logits[0, -len(continuation):].double()
                logprobs = F.log_softmax(logits, dim=-1)
                sums.append(logprobs.gather(1, torch.tensor(continuation)[:, None]).sum().item())
            per_byte = [s / len(c.encode("utf-8")) for s, c in zip(sums, record["choices"])]
            same += argmax(sums) == ours["predicted"]
            same_norm += argmax(per_byte) == ours["predicted_norm"]
            largest = max(largest, max(abs(a - b) for a, b in zip(sums, ours["loglikelihoods"])))
    print(json.dumps({"questions": len(records), "same_acc_choice": same, "same_acc_norm_choice": same_norm,
                      "largest_loglikelihood_difference": largest, "transformers_seconds": time.time() - start}))


if __name__ == "__main__":
    main(sys.argv)
