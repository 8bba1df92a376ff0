#!/usr/bin/env python3
"""GGUF reference data for tests/gguf_test.cpp, from the gguf Python package
(llama.cpp's gguf-py) and transformers' own GGUF loading.

Usage (with the venv from scripts/setup-python-env.sh):
    build/pyenv/bin/python tests/reference/make_gguf_reference.py OUTDIR MODELS_DIR

Writes OUTDIR/:
  types.gguf            one 2-D tensor per supported ggml type, named by the type
                        ("F32", "Q4_K", ...), plus a 1-D F32 and a 3-D F16 tensor,
                        written with GGUFWriter. Block types are quantized with
                        gguf.quants.quantize where the package can (Q8_0, Q4_0,
                        Q4_1, Q5_0, Q5_1, BF16); Q4_K/Q5_K/Q6_K blocks are random
                        bytes with finite, moderate f16 scales.
  types_expected.safetensors
                        float32 tensors of the same names: gguf.quants.dequantize
                        of the bytes stored in types.gguf, in row-major (PyTorch)
                        shape, i.e. the GGUF dims reversed.
  metadata.gguf         a key of every GGUF value type (scalars, strings, arrays of
                        each, nested arrays), general.alignment = 64, two tensors.
  metadata_expected.json
                        {key: {"type": gguf type name, "value": value}} for every
                        key of metadata.gguf but general.alignment; arrays add
                        "element_type" and hold (nested) lists; float32 values are
                        written as their exact value.
  models/<case>/        tiny models written twice, by the real transformers classes
                        (save_pretrained: config.json + model.safetensors, float32)
                        and as <case>.gguf (float32 tensors under llama.cpp's names
                        and metadata; llama's attn_q/attn_k rows permuted the way
                        llama.cpp's convert_hf_to_gguf.py does, qwen2's and mistral's
                        not). Each GGUF but mistral's (gguf-py has no such
                        architecture) is read back with transformers'
                        load_gguf_checkpoint, which must reproduce every HF tensor
                        exactly (that checks the permutation against transformers'
                        un-permutation).
  smollm2/              SmolLM2-135M-Instruct Q4_1 (scripts/fetch-smollm2.sh into
                        MODELS_DIR) loaded with transformers' GGUF loading
                        (load_gguf_checkpoint: de-quantizes and un-permutes):
      model_path.txt    the .gguf path
      tokens.txt        3 token sequences, one per line
      expected.safetensors
          loss          [1] float64-computed mean next-token cross entropy over all
                        predicted positions of all lines (each line its own sequence)
          logits.<i>    [n_i, vocab] float64-computed logits of line i (as float32)
"""
import importlib.metadata
import json
import os
import shutil
import subprocess
import sys
import time

import numpy as np
import torch
from safetensors.numpy import save_file

import gguf
from gguf import GGMLQuantizationType as T
from gguf import GGUFValueType as V
import transformers
from transformers import (AutoConfig, AutoModelForCausalLM, LlamaConfig, LlamaForCausalLM,
                          MistralConfig, MistralForCausalLM, Qwen2Config, Qwen2ForCausalLM)
from transformers.modeling_gguf_pytorch_utils import load_gguf_checkpoint

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from make_reference import Float64Exact, batch_loss  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def fail(msg):
    raise RuntimeError(msg)


# ----------------------------------------------------------------- types ---

# Types quantized by the gguf package itself (float32 input → blocks).
PACKAGE_QUANTIZED = [T.BF16, T.Q8_0, T.Q4_0, T.Q4_1, T.Q5_0, T.Q5_1]
# K-quants: the package only de-quantizes them, so the blocks are built here.
K_QUANTS = [T.Q4_K, T.Q5_K, T.Q6_K]


def random_k_blocks(qtype, n_blocks, rng):
    """Random bytes for every field, with the f16 scales replaced by finite,
    moderate values (d in ±[1e-3, 1e-1], dmin in [0, 1e-2])."""
    block_size, type_size = gguf.GGML_QUANT_SIZES[qtype]
    blocks = rng.integers(0, 256, size=(n_blocks, type_size), dtype=np.uint8)

    def f16(values):
        return values.astype(np.float16).view(np.uint8).reshape(n_blocks, 2)

    d = rng.uniform(1e-3, 1e-1, n_blocks) * rng.choice([-1.0, 1.0], n_blocks)
    if qtype in (T.Q4_K, T.Q5_K):  # d, dmin first
        blocks[:, 0:2] = f16(d)
        blocks[:, 2:4] = f16(rng.uniform(0.0, 1e-2, n_blocks))
    elif qtype == T.Q6_K:  # d last
        blocks[:, type_size - 2:] = f16(d)
    else:
        fail(f"no block builder for {qtype.name}")
    return blocks


def write_types(outdir):
    rng = np.random.default_rng(4242)
    writer = gguf.GGUFWriter(os.path.join(outdir, "types.gguf"), arch="llama")
    writer.add_string("general.name", "qft de-quantization reference")
    expected = {}

    def add(name, shape, qtype, raw):
        """raw: the stored blocks (a float array for F32/F16); shape: row-major elements."""
        if qtype in (T.F32, T.F16):
            writer.add_tensor(name, raw)
        else:  # uint8 blocks, (rows, bytes per row): the writer derives the element shape
            writer.add_tensor(name, raw, raw_dtype=qtype)
        values = gguf.quants.dequantize(raw, qtype) if qtype not in (T.F32, T.F16) else raw.astype(np.float32)
        values = np.asarray(values, dtype=np.float32).reshape(shape)
        if not np.isfinite(values).all():
            fail(f"{name}: non-finite reference values")
        expected[name] = np.ascontiguousarray(values)

    # Plain float types: exact conversions.
    x = rng.standard_normal((3, 64)).astype(np.float32)
    add("F32", (3, 64), T.F32, x)
    add("F16", (3, 64), T.F16, (x * 3).astype(np.float16))
    add("F32.1d", (40,), T.F32, rng.standard_normal(40).astype(np.float32))
    add("F16.3d", (2, 3, 8), T.F16, rng.standard_normal((2, 3, 8)).astype(np.float16))
    # Values with f16 subnormals, infinities are avoided (the reference must be finite).
    tiny = np.array([6e-8, -6e-8, 1e-5, -3e-5, 0.0, -0.0, 65504.0, -65504.0], dtype=np.float16)
    add("F16.edge", (8,), T.F16, tiny)

    for qtype in PACKAGE_QUANTIZED:
        shape = (4, 64)
        values = (rng.standard_normal(shape) * rng.uniform(0.01, 2.0, (shape[0], 1))).astype(np.float32)
        values[1, :32] = 0.0  # an all-zero block
        raw = gguf.quants.quantize(values, qtype)
        add(qtype.name, shape, qtype, raw)
    for qtype in K_QUANTS:
        shape = (3, 512)
        block_size, type_size = gguf.GGML_QUANT_SIZES[qtype]
        blocks = random_k_blocks(qtype, shape[0] * shape[1] // block_size, rng)
        raw = blocks.reshape(shape[0], shape[1] // block_size * type_size)
        add(qtype.name, shape, qtype, raw)

    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    save_file(expected, os.path.join(outdir, "types_expected.safetensors"))

    # The package's own reader sees the same types and values.
    reader = gguf.GGUFReader(os.path.join(outdir, "types.gguf"))
    seen = {t.name: t for t in reader.tensors}
    for name, values in expected.items():
        t = seen[name]
        got = gguf.quants.dequantize(t.data, t.tensor_type).reshape(values.shape)
        if not np.array_equal(got.astype(np.float32), values):
            fail(f"types.gguf: {name} reads back differently")
    return sorted(expected)


# -------------------------------------------------------------- metadata ---

def f32(value):
    return float(np.float32(value))


METADATA = [
    # key, gguf type, value, sub type for arrays
    ("test.uint8", V.UINT8, 200, None),
    ("test.int8", V.INT8, -100, None),
    ("test.uint16", V.UINT16, 60000, None),
    ("test.int16", V.INT16, -30000, None),
    ("test.uint32", V.UINT32, 4000000000, None),
    ("test.int32", V.INT32, -2000000000, None),
    ("test.float32", V.FLOAT32, f32(0.1), None),
    ("test.bool_true", V.BOOL, True, None),
    ("test.bool_false", V.BOOL, False, None),
    ("test.string", V.STRING, "héllo, GGUF", None),
    ("test.empty_string", V.STRING, "", None),
    ("test.uint64", V.UINT64, 18000000000000000000, None),
    ("test.int64", V.INT64, -9000000000000000000, None),
    ("test.float64", V.FLOAT64, 2.718281828459045, None),
    ("test.array.uint8", V.ARRAY, [1, 2, 255], V.UINT8),
    ("test.array.int8", V.ARRAY, [-128, 0, 127], V.INT8),
    ("test.array.uint16", V.ARRAY, [0, 65535], V.UINT16),
    ("test.array.int16", V.ARRAY, [-32768, 32767], V.INT16),
    ("test.array.uint32", V.ARRAY, [7, 4294967295], V.UINT32),
    ("test.array.int32", V.ARRAY, [-5, 5, -2147483648], V.INT32),
    ("test.array.uint64", V.ARRAY, [1, 18446744073709551615], V.UINT64),
    ("test.array.int64", V.ARRAY, [-9223372036854775808, 9223372036854775807], V.INT64),
    ("test.array.float32", V.ARRAY, [f32(1.5), f32(-0.25), f32(3.14159)], V.FLOAT32),
    ("test.array.float64", V.ARRAY, [1e-300, -2.5], V.FLOAT64),
    ("test.array.bool", V.ARRAY, [True, False, True], V.BOOL),
    ("test.array.string", V.ARRAY, ["a", "", "ccc", "ünï"], V.STRING),
    ("test.array.nested", V.ARRAY, [[1, 2, 3], [4], [5, 6]], None),
    ("test.array.nested_strings", V.ARRAY, [["x", "y"], ["z"]], None),
    ("test.array.nested3", V.ARRAY, [[[1.0, 2.0]], [[3.0], [4.0, 5.0]]], None),
]


def gguf_type_name(vtype):
    return vtype.name.lower()


def describe(value, vtype, sub_type):
    """The JSON description: type and value; arrays (nested lists) name their
    element type."""
    if vtype != V.ARRAY:
        return {"type": gguf_type_name(vtype), "value": value}
    if sub_type is None:
        sub_type = V.get_type(value[0])
    return {"type": "array", "element_type": gguf_type_name(sub_type), "value": value}


def write_metadata(outdir):
    path = os.path.join(outdir, "metadata.gguf")
    writer = gguf.GGUFWriter(path, arch="llama")
    writer.add_custom_alignment(64)
    expected = {}
    for key, vtype, value, sub_type in METADATA:
        writer.add_key_value(key, value, vtype, sub_type=sub_type)
        expected[key] = describe(value, vtype, sub_type)
    writer.add_tensor("a", np.arange(5, dtype=np.float32))
    writer.add_tensor("b", np.arange(12, dtype=np.float32).reshape(3, 4) * 0.5)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    expected["general.architecture"] = {"type": "string", "value": "llama"}
    with open(os.path.join(outdir, "metadata_expected.json"), "w") as f:
        json.dump(expected, f, indent=1, ensure_ascii=False)

    reader = gguf.GGUFReader(path)
    for key, vtype, value, sub_type in METADATA:
        field = reader.fields[key]
        if field.types[0] != vtype:
            fail(f"metadata.gguf: {key} stored as {field.types}")
    if reader.alignment != 64:
        fail(f"metadata.gguf: alignment {reader.alignment}")


# ---------------------------------------------------------- tiny models ---

def cfg_common(**kw):
    base = dict(num_hidden_layers=2, max_position_embeddings=128, initializer_range=0.02,
                attention_dropout=0.0, hidden_act="silu", bos_token_id=1, eos_token_id=2,
                pad_token_id=None, use_cache=False, rope_scaling=None)
    base.update(kw)
    return base


MODEL_CASES = {
    # GQA, untied, heads of 16 with hidden 48 (head_dim != hidden / heads), permuted Q/K.
    "llama_gqa": dict(
        arch="llama", cls=LlamaForCausalLM, seed=2001,
        cfg=lambda: LlamaConfig(**cfg_common(
            vocab_size=80, hidden_size=48, intermediate_size=56, num_attention_heads=4,
            num_key_value_heads=2, head_dim=16, rope_theta=500000.0, rms_norm_eps=1e-5,
            tie_word_embeddings=False))),
    # Tied, attention and MLP biases (the Q/K biases are permuted too).
    "llama_bias": dict(
        arch="llama", cls=LlamaForCausalLM, seed=2002,
        cfg=lambda: LlamaConfig(**cfg_common(
            vocab_size=64, hidden_size=32, intermediate_size=48, num_attention_heads=4,
            num_key_value_heads=4, rope_theta=10000.0, rms_norm_eps=1e-6,
            tie_word_embeddings=True, attention_bias=True, mlp_bias=True))),
    # Not permuted (llama.cpp's Qwen2 uses NeoX RoPE on HF's row order).
    "qwen2_bias": dict(
        arch="qwen2", cls=Qwen2ForCausalLM, seed=2003,
        cfg=lambda: Qwen2Config(**cfg_common(
            vocab_size=100, hidden_size=32, intermediate_size=48, num_attention_heads=4,
            num_key_value_heads=2, rope_theta=1000000.0, rms_norm_eps=1e-6,
            tie_word_embeddings=True, use_sliding_window=False, sliding_window=None,
            max_window_layers=2))),
    # general.architecture "mistral", unpermuted: transformers' GGUF config mapping
    # knows "mistral" and un-permutes only "llama"; llama.cpp and gguf-py have no
    # "mistral" architecture (llama.cpp writes Mistral models as "llama", permuted).
    "mistral": dict(
        arch="mistral", cls=MistralForCausalLM, seed=2004,
        cfg=lambda: MistralConfig(**cfg_common(
            vocab_size=72, hidden_size=40, intermediate_size=64, num_attention_heads=4,
            num_key_value_heads=2, rope_theta=10000.0, rms_norm_eps=1e-5,
            tie_word_embeddings=False, sliding_window=None))),
}

HF_TO_GGUF_LAYER = {
    "input_layernorm": "attn_norm", "post_attention_layernorm": "ffn_norm",
    "self_attn.q_proj": "attn_q", "self_attn.k_proj": "attn_k", "self_attn.v_proj": "attn_v",
    "self_attn.o_proj": "attn_output", "mlp.gate_proj": "ffn_gate", "mlp.up_proj": "ffn_up",
    "mlp.down_proj": "ffn_down",
}


def gguf_name(hf_name):
    head = {"model.embed_tokens.weight": "token_embd.weight", "model.norm.weight": "output_norm.weight",
            "lm_head.weight": "output.weight"}
    if hf_name in head:
        return head[hf_name]
    parts = hf_name.split(".")  # model.layers.N.<module...>.<weight|bias>
    module = ".".join(parts[3:-1])
    return f"blk.{parts[2]}.{HF_TO_GGUF_LAYER[module]}.{parts[-1]}"


def llama_cpp_permute(weights, n_head):
    """convert_hf_to_gguf.py's LlamaModel.permute, from its definition in
    ggml's docs/gguf.md: rows of each head reordered (2, D/2) → (D/2, 2)."""
    return (weights.reshape(n_head, 2, weights.shape[0] // n_head // 2, *weights.shape[1:])
            .swapaxes(1, 2).reshape(weights.shape))


def build_model(case):
    cfg = case["cfg"]()
    cfg._attn_implementation = "eager"
    torch.manual_seed(case["seed"])
    model = case["cls"](cfg)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("norm.weight"):
                p.copy_(1.0 + 0.1 * torch.randn_like(p))
            elif name.endswith(".bias"):
                p.copy_(0.1 * torch.randn_like(p))
    return model


def write_model_case(name, case, root):
    outdir = os.path.join(root, name)
    if os.path.isdir(outdir):
        shutil.rmtree(outdir)
    os.makedirs(outdir)
    model = build_model(case)
    cfg = model.config
    model.save_pretrained(outdir, safe_serialization=True)
    state = {k: v.detach().numpy().copy() for k, v in model.state_dict().items()}
    if cfg.tie_word_embeddings:
        state.pop("lm_head.weight", None)

    arch = case["arch"]
    head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
    path = os.path.join(outdir, f"{name}.gguf")
    writer = gguf.GGUFWriter(path, arch=arch)
    writer.add_name(name)
    writer.add_context_length(cfg.max_position_embeddings)
    writer.add_embedding_length(cfg.hidden_size)
    writer.add_block_count(cfg.num_hidden_layers)
    writer.add_feed_forward_length(cfg.intermediate_size)
    writer.add_head_count(cfg.num_attention_heads)
    writer.add_head_count_kv(cfg.num_key_value_heads)
    writer.add_rope_freq_base(cfg.rope_theta)
    writer.add_layer_norm_rms_eps(cfg.rms_norm_eps)
    writer.add_vocab_size(cfg.vocab_size)
    if arch != "qwen2":
        writer.add_rope_dimension_count(head_dim)
    if head_dim != cfg.hidden_size // cfg.num_attention_heads:
        writer.add_key_length(head_dim)
        writer.add_value_length(head_dim)
    writer.add_file_type(gguf.LlamaFileType.ALL_F32)
    for hf_name, w in state.items():
        if arch == "llama" and ".self_attn.q_proj." in hf_name:
            w = llama_cpp_permute(w, cfg.num_attention_heads)
        elif arch == "llama" and ".self_attn.k_proj." in hf_name:
            w = llama_cpp_permute(w, cfg.num_key_value_heads)
        writer.add_tensor(gguf_name(hf_name), np.ascontiguousarray(w, dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()

    # transformers' GGUF loading must give back the HF tensors exactly. (It maps
    # weight names through gguf-py's architectures, which have no "mistral".)
    if arch == "mistral":
        return
    loaded = load_gguf_checkpoint(path, return_tensors=True, model_to_load=model)["tensors"]
    for hf_name, w in state.items():
        if hf_name not in loaded:
            fail(f"{name}: transformers' GGUF loading lacks {hf_name}")
        if not np.array_equal(loaded[hf_name].numpy(), w):
            fail(f"{name}: transformers' GGUF loading of {hf_name} differs from the HF tensor")


# ---------------------------------------------------------------- SmolLM2 ---

# The SmolLM2 tokenizer's encoding (transformers' GGUF tokenizer of this file)
# of "The capital of France is Paris, and the capital of Italy is Rome." and of
# "def fibonacci(n):\n    return n if n < 2 else fibonacci(n - 1) + fibonacci(n - 2)",
# then 12 random ids.
SMOLLM2_LINES = [
    [1, 504, 3575, 282, 4649, 314, 7042, 28, 284, 260, 3575, 282, 7158, 314, 7268, 30],
    [1, 1604, 3987, 46477, 24, 94, 727, 472, 1003, 304, 585, 304, 2067, 216, 34, 1745, 3987,
     46477, 24, 94, 731, 216, 33, 25, 1232, 3987, 46477, 24, 94, 731, 216, 34, 25],
]


def write_smollm2(outdir, models_dir):
    env = dict(os.environ, QFT_PYTHON=sys.executable)
    path = subprocess.run(["bash", os.path.join(ROOT, "scripts", "fetch-smollm2.sh"), models_dir],
                          check=True, capture_output=True, text=True, env=env).stdout.strip().splitlines()[-1]
    if not os.path.isfile(path):
        fail(f"fetch-smollm2.sh printed {path!r}, not a file")
    directory, filename = os.path.split(path)

    config = AutoConfig.from_pretrained(directory, gguf_file=filename)
    config._attn_implementation = "eager"
    # AutoModelForCausalLM.from_pretrained(dir, gguf_file=...) builds its dummy
    # model under `with torch.device("meta")`, which torch 1.13 lacks; this is the
    # same loading (load_gguf_checkpoint de-quantizes and un-permutes) into a
    # model built on the CPU.
    model = AutoModelForCausalLM.from_config(config, torch_dtype=torch.float32)
    state = load_gguf_checkpoint(path, return_tensors=True, model_to_load=model)["tensors"]
    result = model.load_state_dict(state, strict=False)
    allowed_missing = {"lm_head.weight"} if config.tie_word_embeddings else set()
    if set(result.missing_keys) - allowed_missing or result.unexpected_keys:
        fail(f"SmolLM2: state dict mismatch {result}")
    if config.tie_word_embeddings and model.lm_head.weight.data_ptr() != model.model.embed_tokens.weight.data_ptr():
        fail("SmolLM2: embeddings not tied")

    gen = torch.Generator().manual_seed(77)
    lines = SMOLLM2_LINES + [torch.randint(0, config.vocab_size, (12,), generator=gen).tolist()]
    model = model.double().eval()
    logits = {}
    with torch.no_grad():
        with Float64Exact() as exact:
            loss = batch_loss(model, lines, keep_logits=logits)
        exact.check_used()

    case_dir = os.path.join(outdir, "smollm2")
    os.makedirs(case_dir, exist_ok=True)
    with open(os.path.join(case_dir, "model_path.txt"), "w") as f:
        f.write(os.path.abspath(path) + "\n")
    with open(os.path.join(case_dir, "tokens.txt"), "w") as f:
        for line in lines:
            f.write(" ".join(str(t) for t in line) + "\n")
    expected = {"loss": np.array([loss.item()], dtype=np.float32)}
    expected.update({k: v.numpy() for k, v in logits.items()})
    save_file(expected, os.path.join(case_dir, "expected.safetensors"))
    with open(os.path.join(case_dir, "loss.txt"), "w") as f:
        f.write(repr(loss.item()) + "\n")  # the float64 value, for the test's tolerance
    return loss.item()


def main(argv):
    if len(argv) != 3:
        sys.exit(__doc__)
    outdir, models_dir = argv[1], argv[2]
    os.makedirs(outdir, exist_ok=True)
    torch.set_num_threads(max(1, os.cpu_count() or 1))
    t0 = time.time()
    names = write_types(outdir)
    write_metadata(outdir)
    for name, case in MODEL_CASES.items():
        write_model_case(name, case, os.path.join(outdir, "models"))
    loss = write_smollm2(outdir, models_dir)
    print(f"gguf reference: types {names}, models {list(MODEL_CASES)}, "
          f"SmolLM2 loss {loss:.6f}, {time.time() - t0:.1f}s (transformers {transformers.__version__}, "
          f"gguf {importlib.metadata.version('gguf')})")


if __name__ == "__main__":
    main(sys.argv)
