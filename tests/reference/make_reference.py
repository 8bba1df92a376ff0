#!/usr/bin/env python3
"""Independent PyTorch/transformers reference for the qft C++ tests.

Usage (with the venv from scripts/setup-python-env.sh):
    build/pyenv/bin/python tests/reference/make_reference.py OUTDIR [CASE ...]

For every case writes OUTDIR/<case>/:
  config.json, generation_config.json, model.safetensors
      (or model.safetensors.index.json + model-XXXXX-of-YYYYY.safetensors)
      -- a Hugging Face model directory written by the real transformers
         classes with save_pretrained().
  tokens.txt          3 lines of whitespace-separated token ids (lengths 7, 12, 5).
  expected.safetensors (all float32)
      loss               [1]  mean next-token cross entropy over all predicted
                              positions of all lines of tokens.txt (each line is
                              its own sequence, positions from 0; a line of n
                              tokens gives n-1 predictions; sum / total count).
      grad.<hf name>     gradient of that loss w.r.t. every parameter, named as
                              in model.named_parameters() (tied models have no
                              lm_head.weight; the gradient of
                              model.embed_tokens.weight includes the LM head's).
      Computed in float64 from the weights as stored on disk (reloaded with
      from_pretrained; f16/bf16 checkpoints are de-quantised exactly), with
      the float32 islands of the HF code (RMSNorm, RoPE, softmax) lifted to
      float64 -- see Float64Exact.
  logits.safetensors  (float32, for debugging forward passes)
      logits.<i>         [n_i, vocab] float64-computed logits of line i of tokens.txt.
  train_tokens.txt    4 lines of token ids (lengths 9, 6, 11, 4).
  train_settings.json optimiser hyper-parameters and the schedule of the run below.
  train.safetensors   (float32)
      adamw.losses       [10]
      lion.losses        [10]
      10 training steps in float32 starting from the stored weights; step s
      uses lines (2s) % 4 and (2s+1) % 4 of train_tokens.txt; the loss of a
      step is computed as above over its 2 lines, BEFORE that step's update.
"""
import json
import math
import os
import shutil
import sys
import time

import torch
import torch.nn.functional as F
from safetensors.torch import save_file
import transformers
from transformers import (Gemma2Config, Gemma2ForCausalLM, LlamaConfig, LlamaForCausalLM,
                          MistralConfig, MistralForCausalLM, Phi3Config, Phi3ForCausalLM,
                          Qwen2Config, Qwen2ForCausalLM)
from transformers.models.gemma2 import modeling_gemma2
from transformers.models.llama import modeling_llama
from transformers.models.mistral import modeling_mistral
from transformers.models.phi3 import modeling_phi3
from transformers.models.qwen2 import modeling_qwen2

TOKEN_LENGTHS = [7, 12, 5]
TRAIN_TOKEN_LENGTHS = [9, 6, 11, 4]

TRAIN_SETTINGS = {
    "steps": 10,
    "batch_lines": 2,
    "tokens_file": "train_tokens.txt",
    "schedule": "step s uses lines (B*s + j) % n_lines for j in 0..B-1 (file order, wrapping)",
    "loss": "sum of next-token cross entropy over all predicted positions of the step's lines "
            "/ number of predicted positions (a line of n tokens gives n-1); recorded before the update",
    "dtype": "float32",
    "initial_weights": "as stored in the checkpoint (f16/bf16 de-quantised to float32)",
    "weight_decay_applies_to": "all parameters (embeddings, linear weights, norm weights, biases)",
    "grad_clip": None,
    "lr_schedule": "constant",
    "adamw": {
        "lr": 1e-3, "beta1": 0.9, "beta2": 0.999, "eps": 1e-8, "weight_decay": 0.1,
        "formula": "torch.optim.AdamW: w *= 1 - lr*wd; m = b1*m + (1-b1)*g; v = b2*v + (1-b2)*g^2; "
                   "w -= lr * (m/(1-b1^t)) / (sqrt(v/(1-b2^t)) + eps), t from 1",
    },
    "lion": {
        "lr": 1e-4, "beta1": 0.9, "beta2": 0.99, "weight_decay": 0.1,
        "formula": "c = b1*m + (1-b1)*g; w -= lr*(sign(c) + wd*w); m = b2*m + (1-b2)*g; "
                   "m starts at 0; sign(0) = 0",
    },
}


def cfg_common(**kw):
    base = dict(
        num_hidden_layers=2,
        max_position_embeddings=128,
        initializer_range=0.02,
        attention_dropout=0.0,
        hidden_act="silu",
        bos_token_id=1,
        eos_token_id=2,
        pad_token_id=None,
        use_cache=False,
        rope_scaling=None,
    )
    base.update(kw)
    return base


def llama_tied_cfg():
    return LlamaConfig(**cfg_common(
        vocab_size=96, hidden_size=32, intermediate_size=64,
        num_attention_heads=4, num_key_value_heads=4,
        rope_theta=10000.0, rms_norm_eps=1e-6, tie_word_embeddings=True))


CASES = {
    # name: model class, config factory, init seed, storage dtype of the checkpoint,
    # optional shard (max_shard_size) and outliers (x50 on 1% of linear weights).
    "llama_tied": dict(cls=LlamaForCausalLM, cfg=llama_tied_cfg, seed=1001, dtype=torch.float32),
    "llama_gqa_untied": dict(
        cls=LlamaForCausalLM, seed=1002, dtype=torch.float32, shard="24KB",
        cfg=lambda: LlamaConfig(**cfg_common(
            vocab_size=80, hidden_size=48, intermediate_size=56,
            num_attention_heads=4, num_key_value_heads=2,
            head_dim=16,  # != hidden_size / num_attention_heads (= 12)
            rope_theta=500000.0, rms_norm_eps=1e-5, tie_word_embeddings=False))),
    "qwen2_bias": dict(
        cls=Qwen2ForCausalLM, seed=1003, dtype=torch.float32,
        cfg=lambda: Qwen2Config(**cfg_common(
            vocab_size=100, hidden_size=32, intermediate_size=48,
            num_attention_heads=4, num_key_value_heads=2,
            rope_theta=1000000.0, rms_norm_eps=1e-6, tie_word_embeddings=True,
            use_sliding_window=False, sliding_window=None, max_window_layers=2))),
    "mistral_outliers": dict(
        cls=MistralForCausalLM, seed=1004, dtype=torch.float32, outliers=True,
        cfg=lambda: MistralConfig(**cfg_common(
            vocab_size=72, hidden_size=40, intermediate_size=64,
            num_attention_heads=4, num_key_value_heads=2,
            rope_theta=10000.0, rms_norm_eps=1e-5, tie_word_embeddings=False,
            sliding_window=None))),
    "llama_bf16": dict(cls=LlamaForCausalLM, cfg=llama_tied_cfg, seed=1005, dtype=torch.bfloat16),
    # Llama-3.1's RoPE scaling, with the original context short enough (32) that
    # head_dim 16 has frequencies in all three bands (kept, blended, divided).
    "llama31_rope": dict(
        cls=LlamaForCausalLM, seed=1007, dtype=torch.float32,
        cfg=lambda: LlamaConfig(**cfg_common(
            vocab_size=80, hidden_size=32, intermediate_size=48, num_attention_heads=2, num_key_value_heads=1,
            head_dim=16, rope_theta=500000.0, rms_norm_eps=1e-5, tie_word_embeddings=True,
            rope_scaling={"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                          "original_max_position_embeddings": 32}))),
    "llama_yarn_rope": dict(
        cls=LlamaForCausalLM, seed=1008, dtype=torch.float32,
        cfg=lambda: LlamaConfig(**cfg_common(
            vocab_size=80, hidden_size=32, intermediate_size=48, num_attention_heads=2, num_key_value_heads=2,
            rope_theta=10000.0, rms_norm_eps=1e-6, tie_word_embeddings=False,
            rope_scaling={"rope_type": "yarn", "factor": 4.0}))),
    "llama_linear_rope": dict(
        cls=LlamaForCausalLM, seed=1009, dtype=torch.float32,
        cfg=lambda: LlamaConfig(**cfg_common(
            vocab_size=64, hidden_size=32, intermediate_size=48, num_attention_heads=4, num_key_value_heads=2,
            rope_theta=10000.0, rms_norm_eps=1e-6, tie_word_embeddings=True,
            rope_scaling={"rope_type": "linear", "factor": 2.0}))),
    "llama_f16": dict(cls=LlamaForCausalLM, cfg=llama_tied_cfg, seed=1006, dtype=torch.float16),
    # Mistral's sliding window, shorter than the 7- and 12-token lines.
    "mistral_window": dict(
        cls=MistralForCausalLM, seed=1010, dtype=torch.float32, window_matters=True,
        cfg=lambda: MistralConfig(**cfg_common(
            vocab_size=72, hidden_size=32, intermediate_size=48,
            num_attention_heads=4, num_key_value_heads=2,
            rope_theta=10000.0, rms_norm_eps=1e-5, tie_word_embeddings=False,
            sliding_window=4))),
    # Gemma-2: GeGLU, (1 + w) norms, sandwich norms, √C embeddings, both
    # soft caps (small enough to bend these scores), query_pre_attn_scalar !=
    # head_dim, and a window of 3 on the even layers.
    "gemma2": dict(
        cls=Gemma2ForCausalLM, seed=1011, dtype=torch.float32, window_matters=True,
        cfg=lambda: Gemma2Config(**cfg_common(
            vocab_size=88, hidden_size=32, intermediate_size=48,
            num_attention_heads=4, num_key_value_heads=2, head_dim=16,
            hidden_activation="gelu_pytorch_tanh", hidden_act="gelu_pytorch_tanh",
            query_pre_attn_scalar=24, attn_logit_softcapping=0.5, final_logit_softcapping=1.5,
            sliding_window=3, rope_theta=10000.0, rms_norm_eps=1e-6, tie_word_embeddings=True,
            cache_implementation="hybrid"))),
    # longrope on LLaMA: transformers 4.49's LlamaRotaryEmbedding computes the
    # frequencies once, with the short factors, whatever the length; the
    # top-level original context (8) sets the factor (128 / 8).
    "llama_longrope": dict(
        cls=LlamaForCausalLM, seed=1014, dtype=torch.float32, qk_scale=12.0,
        cfg=lambda: LlamaConfig(**cfg_common(
            vocab_size=64, hidden_size=32, intermediate_size=48, num_attention_heads=4, num_key_value_heads=2,
            rope_theta=10000.0, rms_norm_eps=1e-6, tie_word_embeddings=True, original_max_position_embeddings=8,
            rope_scaling={"rope_type": "longrope", "short_factor": [1.0, 1.2, 1.9, 3.1],
                          "long_factor": [1.3, 3.0, 7.0, 13.0]}))),
    # Phi-3: fused qkv_proj and gate_up_proj, a sliding window of 5.
    "phi3": dict(
        cls=Phi3ForCausalLM, seed=1012, dtype=torch.float32, window_matters=True,
        cfg=lambda: Phi3Config(**cfg_common(
            vocab_size=80, hidden_size=32, intermediate_size=48,
            num_attention_heads=4, num_key_value_heads=2,
            rope_theta=10000.0, rms_norm_eps=1e-5, tie_word_embeddings=False,
            sliding_window=5, original_max_position_embeddings=128))),
    # Phi-3's longrope ("su"): an original context of 8 tokens, so the 12-token
    # line (and the 9- and 11-token training lines) use the long factors and
    # the others the short ones; factor 128 / 8 sets the attention factor.
    "phi3_longrope": dict(
        cls=Phi3ForCausalLM, seed=1013, dtype=torch.float32, long_factors_matter=True, qk_scale=12.0,
        cfg=lambda: Phi3Config(**cfg_common(
            vocab_size=80, hidden_size=32, intermediate_size=48,
            num_attention_heads=4, num_key_value_heads=4,
            rope_theta=10000.0, rms_norm_eps=1e-5, tie_word_embeddings=False,
            original_max_position_embeddings=8,
            rope_scaling={"type": "longrope", "short_factor": [1.0, 1.3, 2.1, 3.7],
                          "long_factor": [1.1, 2.5, 6.0, 11.0]}))),
}


def fail(msg):
    raise RuntimeError(msg)


class Float64Exact:
    """Context manager that makes the HF float64 forward really float64.

    transformers computes three things in float32 whatever the model dtype:
    RMSNorm (hidden.to(float32)), RoPE cos/sin (inv_freq and positions .float())
    and the attention softmax (softmax(..., dtype=float32)). Inside this context
    those three run in float64 when the model is float64 (inv_freq recomputed
    exactly as rope_theta ** (-2i/head_dim)); float32 inputs take the original
    code paths, so nothing else about the real classes changes. Every patched
    function counts its float64 calls so a silently ineffective patch is caught.
    """

    MODULES = {"Llama": modeling_llama, "Mistral": modeling_mistral, "Qwen2": modeling_qwen2,
               "Gemma2": modeling_gemma2, "Phi3": modeling_phi3}

    def __init__(self):
        self.calls = {"rmsnorm": 0, "rope": 0, "softmax": 0}
        self.saved = []

    def __enter__(self):
        calls = self.calls
        for prefix, mod in self.MODULES.items():
            norm = getattr(mod, prefix + "RMSNorm", None)
            rope = getattr(mod, prefix + "RotaryEmbedding", None)
            if norm is None or rope is None:
                fail(f"transformers layout changed: {prefix}RMSNorm/{prefix}RotaryEmbedding not found")
            for cls, fn in ((norm, self._rmsnorm(norm.forward, calls)),
                            (rope, self._rope(rope.forward, calls))):
                self.saved.append((cls, "forward", cls.forward))
                cls.forward = fn
        orig_softmax = F.softmax

        def softmax(input, dim=None, _stacklevel=3, dtype=None):
            if input.dtype == torch.float64 and dtype == torch.float32:
                calls["softmax"] += 1
                dtype = torch.float64
            return orig_softmax(input, dim=dim, _stacklevel=_stacklevel, dtype=dtype)

        self.saved.append((F, "softmax", orig_softmax))
        F.softmax = softmax
        return self

    def __exit__(self, *exc):
        for obj, attr, val in reversed(self.saved):
            setattr(obj, attr, val)
        self.saved = []
        return False

    def check_used(self):
        if not all(self.calls.values()):
            fail(f"float64 patches not exercised: {self.calls}")

    @staticmethod
    def _rmsnorm(orig, calls):
        def forward(self, hidden_states):
            if hidden_states.dtype != torch.float64:
                return orig(self, hidden_states)
            calls["rmsnorm"] += 1
            variance = hidden_states.pow(2).mean(-1, keepdim=True)
            if isinstance(self, modeling_gemma2.Gemma2RMSNorm):  # scales by 1 + weight
                return (hidden_states * torch.rsqrt(variance + self.eps)) * (1.0 + self.weight)
            return self.weight * (hidden_states * torch.rsqrt(variance + self.variance_epsilon))
        return forward

    @staticmethod
    def _rope(orig, calls):
        @torch.no_grad()
        def forward(self, x, position_ids):
            if x.dtype != torch.float64:
                return orig(self, x, position_ids)
            if "dynamic" in self.rope_type:
                fail(f"exact RoPE not implemented for rope_type {self.rope_type}")
            if self.rope_type == "longrope" and hasattr(self, "_longrope_frequency_update"):
                # Phi-3: short or long factors by the sequence's length, as the original forward does
                self._longrope_frequency_update(position_ids, device=x.device)
            calls["rope"] += 1
            cfg = self.config
            head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
            dim = int(head_dim * getattr(cfg, "partial_rotary_factor", 1.0))
            if self.rope_type == "default":
                inv_freq = 1.0 / (float(cfg.rope_theta) ** (torch.arange(0, dim, 2, dtype=torch.float64) / dim))
            else:
                # The scaled frequencies as transformers computes them (float32,
                # modeling_rope_utils); the angles and their cos/sin in float64.
                inv_freq = self.inv_freq.to(torch.float64)
            freqs = position_ids[:, :, None].to(torch.float64) * inv_freq[None, None, :]
            emb = torch.cat((freqs, freqs), dim=-1)
            return (emb.cos() * self.attention_scaling).to(x.dtype), (emb.sin() * self.attention_scaling).to(x.dtype)
        return forward


def build_model(case):
    cfg = case["cfg"]()
    cfg._attn_implementation = "eager"  # torch 1.13 has no SDPA; be explicit
    torch.manual_seed(case["seed"])
    model = case["cls"](cfg)  # HF init: N(0, initializer_range) for linear/embedding weights
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("norm.weight"):
                # RMSNorm weights: random values around 1 instead of all ones
                # (Gemma's stored weight w scales by 1 + w: around 0).
                gemma = isinstance(model, Gemma2ForCausalLM)
                p.copy_((0.0 if gemma else 1.0) + 0.1 * torch.randn_like(p))
            elif name.endswith(".bias"):
                # HF zero-initialises biases; make them nonzero.
                p.copy_(0.1 * torch.randn_like(p))
        if case.get("qk_scale"):
            # Query and key rows scaled up, so the scores (and RoPE's angles in them) matter.
            for layer in model.model.layers:
                attn = layer.self_attn
                if hasattr(attn, "qkv_proj"):
                    rows = (attn.config.num_attention_heads + attn.config.num_key_value_heads) * attn.head_dim
                    attn.qkv_proj.weight[:rows] *= case["qk_scale"]
                else:
                    attn.q_proj.weight *= case["qk_scale"]
                    attn.k_proj.weight *= case["qk_scale"]
        if case.get("outliers"):
            # 1% of the entries of every linear weight (including lm_head) x50.
            for name, mod in model.named_modules():
                if isinstance(mod, torch.nn.Linear):
                    w = mod.weight
                    mask = torch.rand_like(w) < 0.01
                    if not mask.any():
                        mask.view(-1)[torch.randint(w.numel(), (1,))] = True
                    w[mask] *= 50.0
    return model


def make_lines(gen, vocab, lengths):
    return [torch.randint(0, vocab, (n,), generator=gen).tolist() for n in lengths]


def write_lines(path, lines):
    with open(path, "w") as f:
        for line in lines:
            f.write(" ".join(str(t) for t in line) + "\n")


def batch_loss(model, lines, keep_logits=None):
    """Mean next-token CE over all predicted positions of all lines (each its own
    batch-1 sequence starting at position 0)."""
    total = None
    count = 0
    for i, line in enumerate(lines):
        ids = torch.tensor([line], dtype=torch.long)
        logits = model(input_ids=ids, use_cache=False).logits[0]  # [n, V]
        if keep_logits is not None:
            keep_logits[f"logits.{i}"] = logits.detach().float().contiguous()
        s = F.cross_entropy(logits[:-1], ids[0, 1:], reduction="sum")
        total = s if total is None else total + s
        count += len(line) - 1
    return total / count


def load_stored(case, outdir, dtype):
    model, info = case["cls"].from_pretrained(outdir, torch_dtype=dtype, output_loading_info=True)
    bad = {k: v for k, v in info.items() if v}
    if bad:
        fail(f"from_pretrained({outdir}) loading problems: {bad}")
    model.config._attn_implementation = "eager"
    for mod in model.modules():
        if hasattr(mod, "config"):
            mod.config._attn_implementation = "eager"
    return model


class Lion:
    """Lion, written from the formula (no library implementation):
        c = b1*m + (1-b1)*g;  w -= lr*(sign(c) + wd*w);  m = b2*m + (1-b2)*g;  m0 = 0.
    Weight decay is applied uniformly to every parameter."""

    def __init__(self, params, lr, beta1, beta2, weight_decay):
        self.params = list(params)
        self.lr, self.b1, self.b2, self.wd = lr, beta1, beta2, weight_decay
        self.m = [torch.zeros_like(p) for p in self.params]

    @torch.no_grad()
    def step(self):
        for p, m in zip(self.params, self.m):
            g = p.grad
            c = self.b1 * m + (1 - self.b1) * g
            p.sub_(self.lr * (torch.sign(c) + self.wd * p))
            m.mul_(self.b2).add_((1 - self.b2) * g)

    def zero_grad(self):
        for p in self.params:
            p.grad = None


def train_losses(case, outdir, train_lines, which):
    s = TRAIN_SETTINGS
    model = load_stored(case, outdir, torch.float32)
    model.train()
    params = list(model.parameters())  # tied weights appear once
    if which == "adamw":
        h = s["adamw"]
        # Weight decay is uniform: every parameter (incl. norms, biases, embeddings).
        opt = torch.optim.AdamW(params, lr=h["lr"], betas=(h["beta1"], h["beta2"]),
                                eps=h["eps"], weight_decay=h["weight_decay"])
    else:
        h = s["lion"]
        opt = Lion(params, lr=h["lr"], beta1=h["beta1"], beta2=h["beta2"],
                   weight_decay=h["weight_decay"])
    return run_steps(model, opt, train_lines, which)


def run_steps(model, opt, train_lines, label):
    """TRAIN_SETTINGS' steps, batches and loss; the losses before each update."""
    s = TRAIN_SETTINGS
    B, n = s["batch_lines"], len(train_lines)
    losses = []
    for step in range(s["steps"]):
        lines = [train_lines[(B * step + j) % n] for j in range(B)]
        opt.zero_grad()
        loss = batch_loss(model, lines)
        if not torch.isfinite(loss):
            fail(f"{label}: non-finite loss at step {step}")
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return torch.tensor(losses, dtype=torch.float32)


def make_case(name, case, root):
    t0 = time.time()
    outdir = os.path.join(root, name)
    if os.path.isdir(outdir):
        shutil.rmtree(outdir)  # no stale shards from an earlier run
    os.makedirs(outdir)
    model = build_model(case)
    vocab = model.config.vocab_size

    # --- save the checkpoint (in the case's storage dtype) ---
    dtype = case["dtype"]
    model = model.to(dtype)
    model.config.torch_dtype = dtype
    kw = {"safe_serialization": True}
    if "shard" in case:
        kw["max_shard_size"] = case["shard"]
    model.save_pretrained(outdir, **kw)
    stored = {k: v.detach().clone() for k, v in model.state_dict().items()}
    del model

    files = sorted(os.listdir(outdir))
    if "shard" in case:
        shards = [f for f in files if f.startswith("model-") and f.endswith(".safetensors")]
        if "model.safetensors.index.json" not in files or len(shards) < 2:
            fail(f"{name}: expected a sharded checkpoint, got {files}")
    elif "model.safetensors" not in files:
        fail(f"{name}: model.safetensors not written, got {files}")
    with open(os.path.join(outdir, "config.json")) as f:
        cj = json.load(f)
    want_dtype = str(dtype).replace("torch.", "")
    if cj.get("torch_dtype") != want_dtype:
        fail(f"{name}: config torch_dtype {cj.get('torch_dtype')} != {want_dtype}")

    # --- token files ---
    gen = torch.Generator().manual_seed(case["seed"] + 7)
    lines = make_lines(gen, vocab, TOKEN_LENGTHS)
    train_lines = make_lines(gen, vocab, TRAIN_TOKEN_LENGTHS)
    write_lines(os.path.join(outdir, "tokens.txt"), lines)
    write_lines(os.path.join(outdir, "train_tokens.txt"), train_lines)

    # --- exact reference: float64 from the stored (de-quantised) weights ---
    model = load_stored(case, outdir, torch.float64)
    model.eval()
    sd = model.state_dict()
    for k, v in stored.items():
        if k not in sd:
            fail(f"{name}: stored tensor {k} missing after reload")
        if not torch.equal(sd[k], v.double()):
            fail(f"{name}: reloaded {k} differs from what was saved")
    if model.config.tie_word_embeddings:
        if model.lm_head.weight.data_ptr() != model.model.embed_tokens.weight.data_ptr():
            fail(f"{name}: embeddings not tied after reload")
    with torch.no_grad():
        hf_loss = batch_loss(model, lines).item()  # HF as shipped (float32 islands)
    logits = {}
    with Float64Exact() as exact:
        loss = batch_loss(model, lines, keep_logits=logits)
        loss.backward()
    exact.check_used()
    rel = abs(loss.item() - hf_loss) / abs(loss.item())
    if rel > 1e-5:
        fail(f"{name}: float64 loss {loss.item()} vs unpatched HF {hf_loss}: patches changed semantics")
    if case.get("window_matters"):
        # The sliding window must change the result, or this case tests nothing of it.
        def set_window(value):
            model.config.sliding_window = value
            for module in [*model.model.layers, *(layer.self_attn for layer in model.model.layers)]:
                if getattr(module, "sliding_window", None) is not None:
                    module.sliding_window = value
        window = model.config.sliding_window
        set_window(1000)
        with torch.no_grad(), Float64Exact():
            unwindowed = batch_loss(model, lines).item()
        set_window(window)
        if abs(unwindowed - loss.item()) < 1e-4 * abs(loss.item()):
            fail(f"{name}: the sliding window does not change the loss ({unwindowed} vs {loss.item()})")
    if case.get("long_factors_matter"):
        # The 12-token line must see longrope's long factors, or this case tests only the short ones.
        original = model.config.original_max_position_embeddings
        model.config.original_max_position_embeddings = 1000
        with torch.no_grad(), Float64Exact():
            short_only = batch_loss(model, lines).item()
        model.config.original_max_position_embeddings = original
        if abs(short_only - loss.item()) < 1e-4 * abs(loss.item()):
            fail(f"{name}: the long factors do not change the loss ({short_only} vs {loss.item()})")
    expected = {"loss": loss.detach().float().reshape(1)}
    for pname, p in model.named_parameters():
        if p.grad is None:
            fail(f"{name}: no gradient for {pname}")
        if not torch.isfinite(p.grad).all():
            fail(f"{name}: non-finite gradient for {pname}")
        expected["grad." + pname] = p.grad.detach().float().contiguous()
    if model.config.tie_word_embeddings and "grad.lm_head.weight" in expected:
        fail(f"{name}: tied model unexpectedly has a separate lm_head.weight parameter")
    # One metadata key only: safetensors writes a dict's keys in random order,
    # a single key keeps the files byte-for-byte reproducible.
    def meta(compute_dtype):
        return {"qft_reference": json.dumps({
            "case": name, "transformers": transformers.__version__, "torch": torch.__version__,
            "compute_dtype": compute_dtype}, sort_keys=True)}
    save_file(expected, os.path.join(outdir, "expected.safetensors"), metadata=meta("float64"))
    save_file(logits, os.path.join(outdir, "logits.safetensors"), metadata=meta("float64"))
    ref_loss = loss.item()
    del model

    # --- 10-step training runs in float32 ---
    train = {
        "adamw.losses": train_losses(case, outdir, train_lines, "adamw"),
        "lion.losses": train_losses(case, outdir, train_lines, "lion"),
    }
    save_file(train, os.path.join(outdir, "train.safetensors"), metadata=meta("float32"))
    with open(os.path.join(outdir, "train_settings.json"), "w") as f:
        json.dump(TRAIN_SETTINGS, f, indent=2)
        f.write("\n")
    print(f"{name}: loss {ref_loss:.6f} (ln V = {math.log(vocab):.4f}), "
          f"adamw {train['adamw.losses'][0]:.4f}->{train['adamw.losses'][-1]:.4f}, "
          f"lion {train['lion.losses'][0]:.4f}->{train['lion.losses'][-1]:.4f}, "
          f"|f64 - HF-as-shipped| rel {rel:.1e}, "
          f"{time.time() - t0:.1f}s")


def main(argv):
    if len(argv) < 2:
        sys.exit(f"usage: {argv[0]} OUTDIR [CASE ...]  (cases: {', '.join(CASES)})")
    root = argv[1]
    names = argv[2:] or list(CASES)
    for n in names:
        if n not in CASES:
            sys.exit(f"unknown case {n!r}; known: {', '.join(CASES)}")
    torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))
    transformers.utils.logging.disable_progress_bar()
    os.makedirs(root, exist_ok=True)
    for n in names:
        make_case(n, CASES[n], root)


if __name__ == "__main__":
    main(sys.argv)
