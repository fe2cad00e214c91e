"""The oracle every parity test compares with: transformers' own GPT-2, built tiny and random (no network)."""

from __future__ import annotations

from pathlib import Path

import torch
from transformers import GPT2Config, GPT2LMHeadModel

# Tiny configs, including odd sizes (head_dim 12 and 5, vocab not a power of two, explicit n_inner).
TINY_GPT2_CONFIGS = {
    "base": dict(vocab_size=101, n_positions=64, n_embd=48, n_layer=2, n_head=4),
    "odd": dict(vocab_size=77, n_positions=33, n_embd=15, n_layer=3, n_head=3, n_inner=23),
    "deep": dict(vocab_size=128, n_positions=48, n_embd=32, n_layer=4, n_head=1, layer_norm_epsilon=1e-6),
}


def gpt2_config(**overrides) -> GPT2Config:
    """A tiny GPT2Config with dropout off (so outputs are deterministic in train mode too)."""
    fields = dict(TINY_GPT2_CONFIGS["base"], resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0)
    fields.update(overrides)
    return GPT2Config(**fields)


def save_random_gpt2(path: Path, config: GPT2Config, seed: int = 0, **save_kwargs) -> GPT2LMHeadModel:
    """A randomly initialised transformers GPT-2, saved in the layout published on the Hub."""
    torch.manual_seed(seed)
    model = GPT2LMHeadModel(config).eval()
    with torch.no_grad():  # LayerNorms start at (1, 0); perturb them so a swapped weight/bias would show
        for name, p in model.named_parameters():
            if ".ln_" in name:
                p.add_(torch.randn_like(p) * 0.1)
    model.save_pretrained(path, **save_kwargs)
    return model
