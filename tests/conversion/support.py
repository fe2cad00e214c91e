"""Shared pieces of the conversion tests: fixed inputs, the parity check, and the source layouts built by hand.

The nanoGPT and LLMs-from-scratch layouts are written from their documented key names and shapes (no
foreign code is vendored), and each comes with a reference forward pass written for that layout, so
the converted model is checked against the source's own computation rather than against gptcore.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from tests.oracle import TINY_GPT2_CONFIGS, TOL, random_gpt2

OPENAI_TF_TINY = Path(__file__).parent / "fixtures" / "openai_tf_tiny"
N_LAYER, N_HEAD, N_EMBD, VOCAB, N_POS = (
    TINY_GPT2_CONFIGS["base"][k] for k in ("n_layer", "n_head", "n_embd", "vocab_size", "n_positions")
)
# The last token id stands for <|endoftext|>: the tiny vocabulary has no id 50256.
END_OF_TEXT = dict(bos_token_id=VOCAB - 1, eos_token_id=VOCAB - 1)
# The hf-gpt2 sources: every tensor random (`every_tensor`), so that a tensor the conversion drops shows.
SOURCE_GPT2 = dict(every_tensor=True, **END_OF_TEXT)


def token_ids(vocab_size: int = VOCAB, seed: int = 0) -> torch.Tensor:
    return torch.randint(0, vocab_size, (2, 11), generator=torch.Generator().manual_seed(seed))


def logits_of(model: torch.nn.Module, ids: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model(ids).logits.float()


def assert_parity(converted: torch.nn.Module, reference: torch.Tensor, ids: torch.Tensor) -> None:
    diff = (logits_of(converted, ids) - reference).abs().max().item()
    assert diff <= TOL, f"max abs logit difference {diff:.3g} > {TOL}"


def random_tensor(shape: tuple[int, ...], generator: torch.Generator, scale: float = 0.2) -> torch.Tensor:
    return torch.randn(shape, generator=generator) * scale


@dataclass
class Source:
    """A checkpoint written in a source layout, and the logits the source's own computation gives."""

    path: Path  # SRC
    reference: Callable[[torch.Tensor], torch.Tensor]  # token ids -> logits
    vocab_size: int = VOCAB


def hf_gpt2_source(folder: Path) -> Source:
    gpt2 = random_gpt2(**SOURCE_GPT2)
    gpt2.save_pretrained(folder)
    return Source(folder, lambda ids: logits_of(gpt2, ids))


# --- the shared maths of the two hand-written reference models ----------------------------------


def causal_self_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, n_head: int) -> torch.Tensor:
    """(B, T, C) queries/keys/values -> (B, T, C), softmax(QK^T/sqrt(d) masked) V per head."""
    B, T, C = q.shape
    q, k, v = (t.view(B, T, n_head, C // n_head).transpose(1, 2) for t in (q, k, v))  # (B, H, T, D)
    scores = q @ k.transpose(-2, -1) / math.sqrt(C // n_head)
    scores = scores.masked_fill(torch.triu(torch.ones(T, T, dtype=torch.bool), diagonal=1), float("-inf"))
    return (torch.softmax(scores, dim=-1) @ v).transpose(1, 2).reshape(B, T, C)


# --- karpathy/nanoGPT ---------------------------------------------------------------------------


def nanogpt_state_dict(bias: bool = True, mask_buffers: bool = False, seed: int = 0) -> dict[str, torch.Tensor]:
    """nanoGPT's GPT.state_dict(): GPT-2 names, nn.Linear (out, in) weights, lm_head tied to wte."""
    g = torch.Generator().manual_seed(seed)
    C = N_EMBD
    sd = {
        "transformer.wte.weight": random_tensor((VOCAB, C), g),
        "transformer.wpe.weight": random_tensor((N_POS, C), g),
    }
    shapes = {
        "ln_1": [(C,)],
        "attn.c_attn": [(3 * C, C)],
        "attn.c_proj": [(C, C)],
        "ln_2": [(C,)],
        "mlp.c_fc": [(4 * C, C)],
        "mlp.c_proj": [(C, 4 * C)],
    }
    for i in range(N_LAYER):
        for module, (weight_shape,) in shapes.items():
            sd[f"transformer.h.{i}.{module}.weight"] = random_tensor(weight_shape, g) + (1.0 if "ln" in module else 0.0)
            if bias:
                sd[f"transformer.h.{i}.{module}.bias"] = random_tensor(weight_shape[:1], g)
        if mask_buffers:  # older nanoGPT registers its causal mask as a (persistent) buffer
            sd[f"transformer.h.{i}.attn.bias"] = torch.tril(torch.ones(N_POS, N_POS)).view(1, 1, N_POS, N_POS)
    sd["transformer.ln_f.weight"] = random_tensor((C,), g) + 1.0
    if bias:
        sd["transformer.ln_f.bias"] = random_tensor((C,), g)
    sd["lm_head.weight"] = sd["transformer.wte.weight"]  # weight tying: one tensor under two names
    return sd


def nanogpt_model_args(bias: bool = True) -> dict:
    return dict(
        n_layer=N_LAYER, n_head=N_HEAD, n_embd=N_EMBD, block_size=N_POS, bias=bias, vocab_size=VOCAB, dropout=0.0
    )


def nanogpt_forward(sd: dict[str, torch.Tensor], ids: torch.Tensor) -> torch.Tensor:
    """nanoGPT's GPT.forward written out: pre-LN blocks, exact GELU, LayerNorm eps 1e-5, optional biases."""
    C = N_EMBD

    def ln(x: torch.Tensor, name: str) -> torch.Tensor:
        return F.layer_norm(x, (C,), sd[f"{name}.weight"], sd.get(f"{name}.bias"), 1e-5)

    def linear(x: torch.Tensor, name: str) -> torch.Tensor:
        return F.linear(x, sd[f"{name}.weight"], sd.get(f"{name}.bias"))

    x = sd["transformer.wte.weight"][ids] + sd["transformer.wpe.weight"][: ids.size(1)]
    for i in range(N_LAYER):
        p = f"transformer.h.{i}"
        q, k, v = linear(ln(x, f"{p}.ln_1"), f"{p}.attn.c_attn").split(C, dim=2)
        x = x + linear(causal_self_attention(q, k, v, N_HEAD), f"{p}.attn.c_proj")
        x = x + linear(F.gelu(linear(ln(x, f"{p}.ln_2"), f"{p}.mlp.c_fc")), f"{p}.mlp.c_proj")
    return F.linear(ln(x, "transformer.ln_f"), sd["lm_head.weight"])


def nanogpt_checkpoint(sd: dict[str, torch.Tensor], bias: bool = True) -> dict:
    """What nanoGPT's train.py saves: weights, model_args, optimizer state, run config, progress."""
    params = [torch.nn.Parameter(t.clone()) for t in sd.values()]
    optimizer = torch.optim.AdamW(params, lr=1e-3, betas=(0.9, 0.95))
    for p in params:
        p.grad = torch.ones_like(p)
    optimizer.step()
    return {
        "model": sd,
        "model_args": nanogpt_model_args(bias),
        "optimizer": optimizer.state_dict(),
        "iter_num": 5000,
        "best_val_loss": torch.tensor(1.4697),
        "config": {"dataset": "shakespeare_char", "batch_size": 64, "learning_rate": 1e-3, "compile": True},
    }


def nanogpt_source(folder: Path) -> Source:
    """nanoGPT's `ckpt.pt` in `folder`."""
    sd = nanogpt_state_dict()
    folder.mkdir(parents=True, exist_ok=True)
    torch.save(nanogpt_checkpoint(sd), folder / "ckpt.pt")
    return Source(folder / "ckpt.pt", lambda ids: nanogpt_forward(sd, ids))


# --- rasbt/LLMs-from-scratch ---------------------------------------------------------------------


def book_config(qkv_bias: bool = True) -> dict:
    return {
        "vocab_size": VOCAB,
        "context_length": N_POS,
        "emb_dim": N_EMBD,
        "n_heads": N_HEAD,
        "n_layers": N_LAYER,
        "drop_rate": 0.0,
        "qkv_bias": qkv_bias,
    }


def book_state_dict(qkv_bias: bool = True, seed: int = 0) -> dict[str, torch.Tensor]:
    """The book's GPTModel.state_dict(): separate W_query/W_key/W_value, scale/shift, untied out_head."""
    g = torch.Generator().manual_seed(seed)
    C = N_EMBD
    sd = {"tok_emb.weight": random_tensor((VOCAB, C), g), "pos_emb.weight": random_tensor((N_POS, C), g)}
    for i in range(N_LAYER):
        p = f"trf_blocks.{i}"
        for name in ("W_query", "W_key", "W_value"):
            sd[f"{p}.att.{name}.weight"] = random_tensor((C, C), g)
            if qkv_bias:
                sd[f"{p}.att.{name}.bias"] = random_tensor((C,), g)
        sd[f"{p}.att.out_proj.weight"] = random_tensor((C, C), g)
        sd[f"{p}.att.out_proj.bias"] = random_tensor((C,), g)
        sd[f"{p}.att.mask"] = torch.triu(torch.ones(N_POS, N_POS), diagonal=1)  # a persistent buffer
        sd[f"{p}.ff.layers.0.weight"] = random_tensor((4 * C, C), g)
        sd[f"{p}.ff.layers.0.bias"] = random_tensor((4 * C,), g)
        sd[f"{p}.ff.layers.2.weight"] = random_tensor((C, 4 * C), g)
        sd[f"{p}.ff.layers.2.bias"] = random_tensor((C,), g)
        for norm in ("norm1", "norm2"):
            sd[f"{p}.{norm}.scale"] = random_tensor((C,), g) + 1.0
            sd[f"{p}.{norm}.shift"] = random_tensor((C,), g)
    sd["final_norm.scale"] = random_tensor((C,), g) + 1.0
    sd["final_norm.shift"] = random_tensor((C,), g)
    sd["out_head.weight"] = random_tensor((VOCAB, C), g)
    return sd


def book_forward(sd: dict[str, torch.Tensor], ids: torch.Tensor) -> torch.Tensor:
    """The book's GPTModel.forward written out, with its own LayerNorm and tanh-approximate GELU."""

    def layer_norm(x: torch.Tensor, name: str) -> torch.Tensor:
        mean = x.mean(dim=-1, keepdim=True)
        var = x.var(dim=-1, keepdim=True, unbiased=False)
        return sd[f"{name}.scale"] * (x - mean) / torch.sqrt(var + 1e-5) + sd[f"{name}.shift"]

    def gelu(x: torch.Tensor) -> torch.Tensor:
        return 0.5 * x * (1 + torch.tanh(torch.sqrt(torch.tensor(2.0 / torch.pi)) * (x + 0.044715 * torch.pow(x, 3))))

    def linear(x: torch.Tensor, name: str) -> torch.Tensor:
        return F.linear(x, sd[f"{name}.weight"], sd.get(f"{name}.bias"))

    x = sd["tok_emb.weight"][ids] + sd["pos_emb.weight"][torch.arange(ids.size(1))]
    for i in range(N_LAYER):
        p = f"trf_blocks.{i}"
        h = layer_norm(x, f"{p}.norm1")
        q, k, v = (linear(h, f"{p}.att.{w}") for w in ("W_query", "W_key", "W_value"))
        x = x + linear(causal_self_attention(q, k, v, N_HEAD), f"{p}.att.out_proj")
        x = x + linear(gelu(linear(layer_norm(x, f"{p}.norm2"), f"{p}.ff.layers.0")), f"{p}.ff.layers.2")
    return F.linear(layer_norm(x, "final_norm"), sd["out_head.weight"])


def book_source(folder: Path, config_name: str = "config.json") -> Source:
    """The book's `model.pth` in `folder`, its config dict beside it as `config_name` (found without
    --model-config when it is config.json)."""
    sd = book_state_dict()
    folder.mkdir(parents=True, exist_ok=True)
    torch.save(sd, folder / "model.pth")
    (folder / config_name).write_text(json.dumps(book_config()))
    return Source(folder / "model.pth", lambda ids: book_forward(sd, ids))
