"""What every format reader returns (`SourceCheckpoint`), and the strict weight mapping they share.

A reader turns a source in its own layout into a `GPTCoreConfig` plus a state dict under gptcore's
names, both checked against each other; everything after that (dtype, building the model, writing
the folder) is the same for all formats and lives in `convert.py`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field

import torch
from transformers import GenerationConfig

from gptcore.modeling import GPTCoreConfig
from gptcore.modeling.gpt2_checkpoint import HF_GPT2_RULES, expected_shapes
from gptcore.modeling.weight_mapping import Rule, apply_rules, check_shapes, layer_names
from gptcore.tokenization import END_OF_TEXT_ID

logger = logging.getLogger(__name__)

# Our own layout, as a table: every name maps to itself. Derived from the GPT-2 table (whose targets
# are our names) so the list of gptcore tensors is written down once.
GPTCORE_RULES: list[Rule] = [Rule(rule.target, rule.target, "copy", rule.optional) for rule in HF_GPT2_RULES]


@dataclass
class SourceCheckpoint:
    """A source read into gptcore's layout, plus what the written folder should carry along."""

    config: GPTCoreConfig
    state_dict: dict[str, torch.Tensor]  # gptcore names; lm_head.weight absent when tied
    format: str
    source: str
    write_tokenizer: Callable[[str], None] | None = None  # writes tokenizer files into a folder
    generation_config: GenerationConfig | None = None
    license: str | None = None  # SPDX id, when the source says
    notes: list[str] = field(default_factory=list)  # sentences for the model card


@dataclass(frozen=True)
class Format:
    """One source layout: its `--from` name, one line for `--help`, and its reader."""

    name: str
    summary: str
    read: Callable[..., SourceCheckpoint]  # read(src, hub_kwargs[, model_config])
    takes_model_config: bool = False


def gpt2_sized_config(
    vocab_size: int,
    n_positions: int,
    n_embd: int,
    n_layer: int,
    n_head: int,
    dropout: float = 0.1,
    activation_function: str = "gelu_new",
    tie_word_embeddings: bool = True,
) -> GPTCoreConfig:
    """Config for a layout that records only GPT-2's sizes: LayerNorm eps 1e-5, one dropout rate, and
    `<|endoftext|>` as bos/eos when the vocabulary is GPT-2's (or a padded superset of it)."""
    token = END_OF_TEXT_ID if vocab_size > END_OF_TEXT_ID else None  # a smaller vocabulary has no such token
    return GPTCoreConfig(
        vocab_size=vocab_size,
        n_positions=n_positions,
        n_embd=n_embd,
        n_layer=n_layer,
        n_head=n_head,
        activation_function=activation_function,
        resid_pdrop=dropout,
        embd_pdrop=dropout,
        attn_pdrop=dropout,
        layer_norm_epsilon=1e-5,
        tie_word_embeddings=tie_word_embeddings,
        bos_token_id=token,
        eos_token_id=token,
    )


def as_state_dict(obj: object, description: str) -> dict[str, torch.Tensor]:
    """`obj` checked to be a name -> tensor dict, with torch.compile's `_orig_mod.` name prefix removed."""
    if not isinstance(obj, dict) or not all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items()):
        raise ValueError(f"{description} does not hold a state dict (name -> tensor) where one was expected")
    return {name.removeprefix("_orig_mod."): tensor for name, tensor in obj.items()}


def map_weights(
    state_dict: Mapping[str, torch.Tensor],
    rules: Sequence[Rule],
    config: GPTCoreConfig,
    description: str,
    ignore: Sequence[str] = (),
    zero_filled: Iterable[str] = (),
) -> dict[str, torch.Tensor]:
    """Apply `rules` strictly and check the result against the shapes `config` implies.

    `zero_filled` names targets (with `{i}`) the source layout does not store because they are
    zero by construction, e.g. the biases of a bias-free nanoGPT.
    """
    converted = apply_rules(state_dict, rules, config.n_layer, ignore=ignore, source_description=description)
    shapes = expected_shapes(config, include_lm_head=not config.tie_word_embeddings)  # a tied head is wte
    dtype = converted["transformer.wte.weight"].dtype
    for pattern in zero_filled:
        for name in layer_names(pattern, config.n_layer):
            converted[name] = torch.zeros(shapes[name], dtype=dtype)
    check_shapes(converted, shapes, description)
    return converted
