"""The oracle every parity test compares with, transformers' own GPT-2, and the one factory of tiny test models.

Every tiny model of the tests comes from here: a GPT2Config or GPTCoreConfig from one table of sizes with
overrides, a random GPT2LMHeadModel (the oracle) or gptcore model, and a folder with the GPT-2 tokenizer where a
test needs a checkpoint as a user saves one. No network anywhere.
"""

from __future__ import annotations

import re
from pathlib import Path

import torch
from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedModel

from gptcore.modeling import GPTCoreConfig, GPTCoreForCausalLM

# fp32 tolerance on logits, losses, hidden states and attentions when gptcore is compared with GPT2LMHeadModel on
# identical weights: the two compute the same sums, in orders that differ only by matmul layout (Linear against
# Conv1D, fused against split QKV), which moves a tiny model's float32 results by a few 1e-7.
TOL = 1e-5
# ONNX Runtime fuses the graph's operations and reorders float32 sums more freely than PyTorch's kernels do, so its
# logits move by up to a few 1e-5 from PyTorch's on the same weights.
ORT_TOL = 10 * TOL

# Tiny sizes, including odd ones (head_dim 12 and 5, vocab not a power of two, explicit n_inner, one layer). "base"
# is the default of every builder below; a test names only the fields its assertions depend on.
TINY_GPT2_CONFIGS = {
    "base": dict(vocab_size=101, n_positions=64, n_embd=48, n_layer=2, n_head=4),
    "odd": dict(vocab_size=77, n_positions=33, n_embd=15, n_layer=3, n_head=3, n_inner=23),
    "deep": dict(vocab_size=128, n_positions=48, n_embd=32, n_layer=4, n_head=1, layer_norm_epsilon=1e-6),
    "shallow": dict(vocab_size=50, n_positions=16, n_embd=16, n_layer=1, n_head=2),
}
# Dropout off, so that outputs are deterministic in train mode too.
NO_DROPOUT = dict(resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0)
# The GPT-2 vocabulary's size, for models that read text through the GPT-2 tokenizer.
GPT2_VOCAB_SIZE = 50257


def tiny_fields(**overrides) -> dict:
    """The "base" sizes with dropout off, updated by `overrides`: the fields of both config classes."""
    return {**TINY_GPT2_CONFIGS["base"], **NO_DROPOUT, **overrides}


def gpt2_config(**overrides) -> GPT2Config:
    return GPT2Config(**tiny_fields(**overrides))


def gptcore_config(**overrides) -> GPTCoreConfig:
    return GPTCoreConfig(**tiny_fields(**overrides))


def randomize(model: torch.nn.Module, seed: int, scale: float = 0.2) -> torch.nn.Module:
    """`model` with every parameter drawn from N(0, scale^2) (biases and LayerNorms too, so that a tensor dropped
    or swapped anywhere shows), in eval mode."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for param in model.parameters():
            param.copy_(torch.randn(param.shape, generator=generator) * scale)
    return model.eval()


def random_gpt2(
    seed: int = 0,
    config: GPT2Config | None = None,
    model_class: type[PreTrainedModel] = GPT2LMHeadModel,
    every_tensor: bool = False,
    **overrides,
) -> PreTrainedModel:
    """A random transformers GPT-2 (`model_class` over `config`, or over `gpt2_config(**overrides)`), eval mode.

    By default transformers' own initialisation (std `initializer_range`) with the LayerNorms moved off their
    (1, 0) start, so that a swapped LayerNorm weight and bias would show; `every_tensor`: `randomize`."""
    config = config if config is not None else gpt2_config(**overrides)
    torch.manual_seed(seed)
    model = model_class(config)
    if every_tensor:
        return randomize(model, seed)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if ".ln_" in name:
                param.add_(torch.randn_like(param) * 0.1)
    return model.eval()


def save_random_gpt2(path: Path, config: GPT2Config, seed: int = 0, **save_kwargs) -> GPT2LMHeadModel:
    """`random_gpt2(seed, config)`, saved in the layout published on the Hub."""
    model = random_gpt2(seed, config)
    model.save_pretrained(path, **save_kwargs)
    return model


def random_gptcore(
    seed: int = 0,
    model_class: type[PreTrainedModel] = GPTCoreForCausalLM,
    every_tensor: bool = False,
    **overrides,
) -> PreTrainedModel:
    """A random gptcore model (`model_class` over `gptcore_config(**overrides)`), eval mode: gptcore's own
    initialisation drawn after `torch.manual_seed(seed)`, or with `every_tensor`, `randomize`."""
    torch.manual_seed(seed)
    model = model_class(gptcore_config(**overrides))
    return randomize(model, seed) if every_tensor else model.eval()


def gptcore_twin(gpt2_folder: Path, **kwargs) -> GPTCoreForCausalLM:
    """gptcore loaded from a saved GPT-2 folder (`from_pretrained` reads GPT-2 checkpoints), eval mode."""
    return GPTCoreForCausalLM.from_pretrained(gpt2_folder, **kwargs).eval()


def gpt2_and_twin(
    folder: Path, seed: int = 0, attn_implementation: str | None = None, **overrides
) -> tuple[GPT2LMHeadModel, GPTCoreForCausalLM]:
    """(random GPT2LMHeadModel over `gpt2_config(**overrides)` saved in `folder`, gptcore loaded from `folder` with
    `attn_implementation` where given)."""
    ref = save_random_gpt2(folder, gpt2_config(**overrides), seed)
    kwargs = {} if attn_implementation is None else {"attn_implementation": attn_implementation}
    return ref, gptcore_twin(folder, **kwargs)


# GPT-2's four Conv1D projections hold their weights as (in, out); gptcore's nn.Linear as (out, in).
CONV1D_WEIGHT = re.compile(r"\.(attn\.c_attn|attn\.c_proj|mlp\.c_fc|mlp\.c_proj)\.weight$")


def in_gpt2_layout(name: str, tensor: torch.Tensor) -> torch.Tensor:
    """A gptcore parameter (or its gradient) as GPT2LMHeadModel holds the tensor of the same name."""
    return tensor.t() if CONV1D_WEIGHT.search(name) else tensor


def save_with_gpt2_tokenizer(model: PreTrainedModel, folder: Path) -> Path:
    """`model` saved in `folder` with the GPT-2 tokenizer (and its chat template), as a user saves a checkpoint."""
    from gptcore.tokenization import gpt2_tokenizer

    model.save_pretrained(folder)
    gpt2_tokenizer().save_pretrained(folder)
    return folder
