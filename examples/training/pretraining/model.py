"""The model examples/pretrain.py trains (random weights or a checkpoint), its optimizer and learning-rate schedule."""

from __future__ import annotations

import argparse
from typing import Any

import torch
from gptcore.training.arguments import ModelArguments, check_vocab_fits, load_config, load_model
from torch import nn
from transformers import get_cosine_with_min_lr_schedule_with_warmup

from gptcore.modeling import GPTCoreForCausalLM
from gptcore.modeling.compat import enable_activation_checkpointing


def pretraining_defaults(tokenizer: Any) -> dict[str, Any]:
    """Pretraining's choices for random weights, under --config_overrides: no dropout (one pass over much text
    leaves little to overfit; --config_overrides resid_pdrop=0.1,embd_pdrop=0.1,attn_pdrop=0.1 gives GPT-2's), an
    output layer as large as the tokenizer's vocabulary, and its EOS token as BOS and EOS."""
    eos = tokenizer.eos_token_id
    return {
        "resid_pdrop": 0.0, "embd_pdrop": 0.0, "attn_pdrop": 0.0,
        "vocab_size": len(tokenizer), "bos_token_id": eos, "eos_token_id": eos,
    }  # fmt: skip


def build_model(model_args: ModelArguments, args: argparse.Namespace, tokenizer: Any) -> GPTCoreForCausalLM:
    """The weights of --model_name_or_path (gptcore or GPT-2 layout), else random weights of the --config size."""
    if model_args.model_name_or_path:
        model = load_model(GPTCoreForCausalLM, model_args)
    else:  # not load_model: it warns that random weights are a smoke test, and here they are the starting point
        model = GPTCoreForCausalLM(load_config(model_args, defaults=pretraining_defaults(tokenizer)))
    check_vocab_fits(tokenizer, model.config)
    if args.block_size > model.config.n_positions:
        raise ValueError(f"--block_size {args.block_size} exceeds the model's n_positions {model.config.n_positions}; lower it")
    if args.gradient_checkpointing:
        enable_activation_checkpointing(model)
    return model


def build_optimizer(model: nn.Module, args: argparse.Namespace) -> tuple[torch.optim.Optimizer, Any]:
    """AdamW and its schedule: linear warmup to --learning_rate, then cosine decay to --min_lr_ratio of it."""
    optimizer = torch.optim.AdamW(
        parameter_groups(model, args.weight_decay), lr=args.learning_rate, betas=(args.adam_beta1, args.adam_beta2)
    )
    scheduler = get_cosine_with_min_lr_schedule_with_warmup(
        optimizer, num_warmup_steps=args.warmup_steps, num_training_steps=args.max_steps, min_lr_rate=args.min_lr_ratio
    )
    return optimizer, scheduler


def parameter_groups(model: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """Weight decay on the weight matrices of the linear layers only: biases, LayerNorms and embeddings
    (the tied output layer included) are not pulled towards zero."""
    no_decay: set[int] = set()
    for module in model.modules():
        if isinstance(module, (nn.Embedding, nn.LayerNorm)):
            no_decay.update(id(param) for param in module.parameters(recurse=False))
    for name, param in model.named_parameters():
        if name.endswith("bias"):
            no_decay.add(id(param))
    params = list(model.parameters())  # tied weights appear once
    return [
        {"params": [param for param in params if id(param) not in no_decay], "weight_decay": weight_decay},
        {"params": [param for param in params if id(param) in no_decay], "weight_decay": 0.0},
    ]
