#!/usr/bin/env python3
"""Writes the fuzz targets' seed corpus, fuzz/corpus/<target>/, from files this
project makes itself: a tiny LLaMA-shaped GGUF with a byte-level BPE vocabulary,
a safetensors file of each float type, a hand-made tokenizer.json, a tiny
SentencePiece model trained on Debian's licence texts, instruction data in each
format, chat-template fragments and the recipes. The checkpoint seeds come from
the checkpoint target itself (QFT_FUZZ_WRITE_SEEDS, see scripts/fuzz.sh).

Usage (the test venv has gguf, sentencepiece and numpy):
    build/pyenv/bin/python fuzz/make_seeds.py fuzz/corpus
"""
import glob
import io
import json
import os
import shutil
import struct
import sys

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)


def write(path, data):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write(data if isinstance(data, bytes) else data.encode("utf-8"))


def bytes_to_unicode():
    """GPT-2's byte -> printable character map."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return {b: chr(c) for b, c in zip(bs, cs)}


def byte_level_vocab():
    chars = bytes_to_unicode()
    tokens = [chars[b] for b in range(256)]
    merges = [("Ġ", "t"), ("h", "e"), ("Ġt", "he"), ("i", "n"), ("Ġ", "a")]
    tokens += [a + b for a, b in merges]
    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    return tokens, [f"{a} {b}" for a, b in merges], specials


def tokenizer_json():
    tokens, merges, specials = byte_level_vocab()
    vocab = {token: i for i, token in enumerate(tokens)}
    added = [{"id": len(tokens) + i, "content": s, "single_word": False, "lstrip": False, "rstrip": False,
              "normalized": False, "special": True} for i, s in enumerate(specials)]
    return {
        "version": "1.0", "truncation": None, "padding": None, "added_tokens": added,
        "normalizer": None,
        "pre_tokenizer": {"type": "Sequence", "pretokenizers": [
            {"type": "Digits", "individual_digits": True},
            {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": True}]},
        "post_processor": {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": False, "use_regex": True},
        "decoder": {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": True, "use_regex": True},
        "model": {"type": "BPE", "dropout": None, "unk_token": None, "continuing_subword_prefix": None,
                  "end_of_word_suffix": None, "fuse_unk": False, "byte_fallback": False, "ignore_merges": False,
                  "vocab": vocab, "merges": merges},
    }


def safetensors_bytes(tensors):
    header, blobs, offset = {}, [], 0
    for name, array, dtype in tensors:
        raw = array.tobytes()
        header[name] = {"dtype": dtype, "shape": list(array.shape), "data_offsets": [offset, offset + len(raw)]}
        blobs.append(raw)
        offset += len(raw)
    header["__metadata__"] = {"format": "pt"}
    text = json.dumps(header).encode()
    text += b" " * (-len(text) % 8)
    return struct.pack("<Q", len(text)) + text + b"".join(blobs)


def safetensors_seeds(out):
    rng = np.random.default_rng(0)
    f32 = rng.standard_normal((4, 8)).astype(np.float32)
    bf16 = (f32.view(np.uint32) >> 16).astype(np.uint16)
    write(f"{out}/f32_f16_bf16.safetensors", safetensors_bytes([
        ("a.weight", f32, "F32"), ("b.weight", f32.astype(np.float16), "F16"), ("c.weight", bf16, "BF16"),
        ("d.weight", f32[:2].astype(np.float64), "F64"), ("ids", np.arange(6, dtype=np.int64), "I64")]))
    write(f"{out}/empty.safetensors", safetensors_bytes([]))


def gguf_seeds(out):
    import gguf
    rng = np.random.default_rng(1)
    tokens, merges, specials = byte_level_vocab()
    tokens = tokens + specials
    hidden, inter, layers, heads, kv, vocab = 8, 16, 1, 2, 1, len(tokens)
    os.makedirs(out, exist_ok=True)
    path = f"{out}/tiny_llama.gguf"
    writer = gguf.GGUFWriter(path, "llama")
    writer.add_context_length(64)
    writer.add_embedding_length(hidden)
    writer.add_feed_forward_length(inter)
    writer.add_block_count(layers)
    writer.add_head_count(heads)
    writer.add_head_count_kv(kv)
    writer.add_layer_norm_rms_eps(1e-5)
    writer.add_rope_freq_base(10000.0)
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre("smollm")
    writer.add_token_list(tokens)
    writer.add_token_types([1] * (vocab - len(specials)) + [3] * len(specials))
    writer.add_token_merges(merges)
    writer.add_bos_token_id(vocab - 3)
    writer.add_eos_token_id(vocab - 1)
    writer.add_chat_template("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}")
    writer.add_array("fuzz.nested", [[1, 2], [3]])
    writer.add_bool("fuzz.flag", True)
    writer.add_float64("fuzz.f64", 2.5)
    writer.add_int8("fuzz.i8", -3)
    writer.add_uint64("fuzz.u64", 7)
    head_dim = hidden // heads

    def tensor(name, shape, qtype=gguf.GGMLQuantizationType.F32):
        values = (rng.standard_normal(shape) * 0.1).astype(np.float32)
        if qtype == gguf.GGMLQuantizationType.F32:
            writer.add_tensor(name, values)
        else:
            try:
                data = gguf.quants.quantize(values, qtype)
            except NotImplementedError:  # K-quants: the package only de-quantizes them; any bytes decode
                block, type_size = gguf.GGML_QUANT_SIZES[qtype]
                data = rng.integers(0, 256, (shape[0], shape[1] // block * type_size), dtype=np.uint8)
                data[:, :4] = [0, 0x2c, 0, 0x2c]  # small finite fp16 scales where the K formats keep d, dmin
            writer.add_tensor(name, data, raw_shape=data.shape, raw_dtype=qtype)

    Q = gguf.GGMLQuantizationType
    tensor("token_embd.weight", (vocab, hidden))
    tensor("output_norm.weight", (hidden,))
    tensor("blk.0.attn_norm.weight", (hidden,))
    tensor("blk.0.attn_q.weight", (heads * head_dim, hidden), Q.F16)
    tensor("blk.0.attn_k.weight", (kv * head_dim, hidden), Q.BF16)
    tensor("blk.0.attn_v.weight", (kv * head_dim, hidden))
    tensor("blk.0.attn_output.weight", (hidden, heads * head_dim))
    tensor("blk.0.ffn_norm.weight", (hidden,))
    tensor("blk.0.ffn_gate.weight", (inter, hidden))
    tensor("blk.0.ffn_up.weight", (inter, hidden))
    tensor("blk.0.ffn_down.weight", (hidden, inter))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    # Block formats, one tensor each, in a file of its own.
    path = f"{out}/block_types.gguf"
    writer = gguf.GGUFWriter(path, "llama")
    for qtype in (Q.Q8_0, Q.Q4_0, Q.Q4_1, Q.Q5_0, Q.Q5_1, Q.Q4_K, Q.Q5_K, Q.Q6_K):
        tensor(f"t.{qtype.name}", (1, 256), qtype)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


def tokenizer_model_seed(out):
    import sentencepiece as spm
    text = []
    for path in sorted(glob.glob("/usr/share/common-licenses/*")):
        if os.path.isfile(path) and not os.path.islink(path):
            with open(path, encoding="utf-8", errors="replace") as f:
                text += [line for line in f.read().split("\n") if line.strip()]
    model = io.BytesIO()
    spm.SentencePieceTrainer.train(sentence_iterator=iter(text[:2000]), model_writer=model, vocab_size=400,
                                   model_type="bpe", byte_fallback=True, character_coverage=0.995,
                                   bos_id=1, eos_id=2, unk_id=0, minloglevel=2,
                                   normalization_rule_name="identity")
    write(f"{out}/tiny_bpe.model", model.getvalue())


def write_data_file(path, text):
    """The file after the target's choice byte: its extension (0 .json, 1 .jsonl, 2 .txt),
    the format detected, records skipped rather than fatal."""
    extension = {".json": 0, ".jsonl": 1, ".txt": 2}[os.path.splitext(path)[1]]
    write(path, bytes([extension]) + text.encode("utf-8"))


def instruction_seeds(out):
    write_data_file(f"{out}/alpaca.json", json.dumps([
        {"instruction": "Name a colour.", "input": "", "output": "Blue."},
        {"instruction": "Add.", "input": "2 + 2", "output": "4", "system": "Be exact.",
         "history": [["Hi", "Hello"]]}]))
    write_data_file(f"{out}/sharegpt.jsonl", "\n".join(json.dumps(r) for r in [
        {"conversations": [{"from": "system", "value": "S"}, {"from": "human", "value": "Hi"},
                           {"from": "gpt", "value": "Hello"}]},
        {"id": "x", "conversations": [{"from": "human", "value": "é😀"}, {"from": "gpt", "value": "ok"}]}]) + "\n")
    write_data_file(f"{out}/messages.jsonl", json.dumps({"messages": [{"role": "user", "content": "Hi"},
                                                            {"role": "assistant", "content": "Hello"}]}) + "\n")
    write_data_file(f"{out}/text.jsonl", json.dumps({"text": "Plain text.\nTwo lines."}) + "\n")
    write_data_file(f"{out}/text.txt", "Once upon a time.\n\nThe end.\n")


def chat_template_seeds(out):
    write(f"{out}/chatml.jinja", "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
          "{{ '<|im_start|>system\\nYou are helpful.<|im_end|>\\n' }}{% endif %}{{'<|im_start|>' + message['role'] + "
          "'\\n' + message['content'] + '<|im_end|>' + '\\n'}}{% endfor %}")
    write(f"{out}/llama3.jinja", "{{ bos_token }}{% for m in messages %}<|start_header_id|>{{ m['role'] }}"
          "<|end_header_id|>\\n\\n{{ m['content'] | trim }}<|eot_id|>{% endfor %}")
    write(f"{out}/llama2.jinja", "{% for m in messages %}{% if m['role'] == 'user' %}{{ bos_token + '[INST] ' + "
          "m['content'] + ' [/INST]' }}{% else %}{{ ' ' + m['content'] + ' ' + eos_token }}{% endif %}{% endfor %}")
    write(f"{out}/alpaca.jinja", "{% for m in messages %}### Instruction:\\n{{ m['content'] }}\\n\\n### Response:\\n{% endfor %}")


def main(argv):
    if len(argv) != 2:
        sys.exit(f"usage: {argv[0]} CORPUS_DIR")
    out = argv[1]
    for target in ("safetensors", "gguf", "tokenizer_json", "tokenizer_model", "instruction_data", "chat_template",
                   "recipe"):
        shutil.rmtree(f"{out}/{target}", ignore_errors=True)
    safetensors_seeds(f"{out}/safetensors")
    gguf_seeds(f"{out}/gguf")
    write(f"{out}/tokenizer_json/byte_level_bpe.json", json.dumps(tokenizer_json()))
    tokenizer_model_seed(f"{out}/tokenizer_model")
    instruction_seeds(f"{out}/instruction_data")
    chat_template_seeds(f"{out}/chat_template")
    os.makedirs(f"{out}/recipe")
    for recipe in sorted(glob.glob(f"{REPO}/recipes/*.yaml")):
        shutil.copy(recipe, f"{out}/recipe/")


if __name__ == "__main__":
    main(sys.argv)
