#!/usr/bin/env python3
"""Loads a tokenizer directory that qft wrote (write_tokenizer_files) with HF's
`tokenizers` library and transformers' AutoTokenizer, encodes the reference corpus and
compares with the ids HF produced for the original tokenizer.

Usage: check_tokenizer_json.py DIR CORPUS.json EXPECTED.json   (exit 1 on any mismatch)
"""
import json
import os
import sys

from tokenizers import Tokenizer
from transformers import AutoTokenizer


def main(directory, corpus_path, expected_path):
    with open(corpus_path, encoding="utf-8") as f:
        corpus = json.load(f)
    with open(expected_path, encoding="utf-8") as f:
        expected = json.load(f)
    tokenizer = Tokenizer.from_file(os.path.join(directory, "tokenizer.json"))
    auto = AutoTokenizer.from_pretrained(directory)
    ids = [e.ids for e in tokenizer.encode_batch(corpus, add_special_tokens=True)]
    auto_ids = [auto(text, add_special_tokens=True)["input_ids"] for text in corpus]
    decoded = tokenizer.decode_batch(expected["ids_plain"], skip_special_tokens=False)
    same = sum(a == b for a, b in zip(ids, expected["ids"]))
    same_auto = sum(a == b for a, b in zip(auto_ids, expected["ids"]))
    same_decoded = sum(a == b for a, b in zip(decoded, expected["decoded"]))
    n = len(corpus)
    print(f"[ HF reading qft's tokenizer.json ] tokenizers encode {same}/{n}, AutoTokenizer "
          f"({type(auto).__name__}) encode {same_auto}/{n}, decode {same_decoded}/{n}")
    return 0 if same == same_auto == same_decoded == n else 1


if __name__ == "__main__":
    if len(sys.argv) != 4:
        sys.exit(__doc__)
    sys.exit(main(*sys.argv[1:]))
