"""The model examples/pretrain.py trains: sizes, random or pretrained weights, and AdamW's parameter groups."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from gptcore.training.arguments import check_vocab_fits, load_model, parse_config_overrides
from torch import nn

from gptcore.modeling import GPTCoreConfig, GPTCoreForCausalLM

# Model sizes for --config. "cpu-small" is the embedded default: on 2 CPU cores the 50257-token output
# layer costs more than the four blocks, so the width stays small. Dropout is 0 for all of them (the
# usual choice for pretraining; --config_overrides resid_pdrop=0.1,embd_pdrop=0.1,attn_pdrop=0.1 for GPT-2's).
PRESETS: dict[str, dict[str, int]] = {
    "cpu-small": {"n_layer": 4, "n_head": 4, "n_embd": 128, "n_positions": 256},
    "gpt2": {"n_layer": 12, "n_head": 12, "n_embd": 768, "n_positions": 1024},
    "gpt2-medium": {"n_layer": 24, "n_head": 16, "n_embd": 1024, "n_positions": 1024},
    "gpt2-large": {"n_layer": 36, "n_head": 20, "n_embd": 1280, "n_positions": 1024},
    "gpt2-xl": {"n_layer": 48, "n_head": 25, "n_embd": 1600, "n_positions": 1024},
}


def build_model(args: argparse.Namespace, tokenizer: Any) -> GPTCoreForCausalLM:
    """Random weights of the --config size, or the weights of --model_name_or_path (gptcore or GPT-2 layout)."""
    if args.model_name_or_path:
        model = load_model(GPTCoreForCausalLM, args)
    else:
        model = GPTCoreForCausalLM(build_config(args, tokenizer))
    check_vocab_fits(tokenizer, model.config)
    if args.block_size > model.config.n_positions:
        raise ValueError(f"--block_size {args.block_size} exceeds the model's n_positions {model.config.n_positions}; lower it")
    if args.gradient_checkpointing:
        # named activation_checkpointing_enable since transformers 5.23 (the old name is deprecated there)
        (getattr(model, "activation_checkpointing_enable", None) or model.gradient_checkpointing_enable)()
    return model


def build_config(args: argparse.Namespace, tokenizer: Any) -> GPTCoreConfig:
    name = args.config
    if name in PRESETS:
        dropout = {"resid_pdrop": 0.0, "embd_pdrop": 0.0, "attn_pdrop": 0.0}
        special = {"bos_token_id": tokenizer.eos_token_id, "eos_token_id": tokenizer.eos_token_id}
        base = GPTCoreConfig(vocab_size=len(tokenizer), **PRESETS[name], **dropout, **special)
    elif Path(name).is_file():
        base = GPTCoreConfig.from_json_file(name)
    else:
        raise FileNotFoundError(f"--config {name!r} is neither a model size ({', '.join(PRESETS)}) nor an existing JSON file")
    overrides = parse_config_overrides(args.config_overrides) if args.config_overrides else {}
    return GPTCoreConfig.from_dict({**base.to_dict(), **overrides})  # validates the fields, overrides included


def parameter_groups(model: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """Weight decay on the weight matrices of the linear layers only: biases, LayerNorms and embeddings
    (the tied output layer included) are not pulled towards zero."""
    no_decay: set[int] = set()
    for module in model.modules():
        if isinstance(module, (nn.Embedding, nn.LayerNorm)):
            no_decay.update(id(p) for p in module.parameters(recurse=False))
    for name, param in model.named_parameters():
        if name.endswith("bias"):
            no_decay.add(id(param))
    params = list(model.parameters())  # tied weights appear once
    return [
        {"params": [p for p in params if id(p) not in no_decay], "weight_decay": weight_decay},
        {"params": [p for p in params if id(p) in no_decay], "weight_decay": 0.0},
    ]
