"""Source format `llms-from-scratch`: the `GPTModel` of rasbt/LLMs-from-scratch (*Build a Large Language
Model (From Scratch)*), saved with `torch.save(model.state_dict(), ...)`.

The book's model is GPT-2 with separate query/key/value projections (concatenated here into our fused
`c_attn`, q|k|v), LayerNorm `scale`/`shift` (eps 1e-5), tanh-approximate GELU, and an output head
`out_head` that is *not* tied to `tok_emb` (kept untied: `tie_word_embeddings=False`).

The book's config dict is not saved with the weights, so it comes from `model_config`: one of the book's
model names ("gpt2-small (124M)", ...), a JSON file holding the dict, the dict itself, or a
`config.json` next to the weights.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

import torch

from gptcore.modeling import GPTCoreConfig
from gptcore.modeling.gpt2_checkpoint import read_tensor_file, torch_load_untrusted
from gptcore.modeling.presets import preset_fields
from gptcore.modeling.weight_mapping import Rule

from .checkpoint import Format, SourceCheckpoint, as_state_dict, gpt2_sized_config, map_weights
from .files import locate, read_json

_QKV = ("W_query", "W_key", "W_value")
# (book name, gptcore name, transform)
LLMS_FROM_SCRATCH_RULES: list[Rule] = [
    Rule("tok_emb.weight", "transformer.wte.weight"),
    Rule("pos_emb.weight", "transformer.wpe.weight"),
    Rule("trf_blocks.{i}.norm1.scale", "transformer.h.{i}.ln_1.weight"),
    Rule("trf_blocks.{i}.norm1.shift", "transformer.h.{i}.ln_1.bias"),
    Rule(tuple(f"trf_blocks.{{i}}.att.{w}.weight" for w in _QKV), "transformer.h.{i}.attn.c_attn.weight", "concat0"),
    Rule(tuple(f"trf_blocks.{{i}}.att.{w}.bias" for w in _QKV), "transformer.h.{i}.attn.c_attn.bias", "concat0"),
    Rule("trf_blocks.{i}.att.out_proj.weight", "transformer.h.{i}.attn.c_proj.weight"),
    Rule("trf_blocks.{i}.att.out_proj.bias", "transformer.h.{i}.attn.c_proj.bias"),
    Rule("trf_blocks.{i}.norm2.scale", "transformer.h.{i}.ln_2.weight"),
    Rule("trf_blocks.{i}.norm2.shift", "transformer.h.{i}.ln_2.bias"),
    Rule("trf_blocks.{i}.ff.layers.0.weight", "transformer.h.{i}.mlp.c_fc.weight"),
    Rule("trf_blocks.{i}.ff.layers.0.bias", "transformer.h.{i}.mlp.c_fc.bias"),
    Rule("trf_blocks.{i}.ff.layers.2.weight", "transformer.h.{i}.mlp.c_proj.weight"),
    Rule("trf_blocks.{i}.ff.layers.2.bias", "transformer.h.{i}.mlp.c_proj.bias"),
    Rule("final_norm.scale", "transformer.ln_f.weight"),
    Rule("final_norm.shift", "transformer.ln_f.bias"),
    Rule("out_head.weight", "lm_head.weight"),
]
_QKV_BIAS = "transformer.h.{i}.attn.c_attn.bias"  # only stored when qkv_bias=True
_IGNORED = ["trf_blocks.{i}.att.mask"]  # the causal-mask buffer

# The book's config key -> gpt2_sized_config argument (GPTCoreConfig's field, except for the dropout rate);
# `qkv_bias` decides which table rows apply.
_BOOK_KEYS = {
    "vocab_size": "vocab_size",
    "context_length": "n_positions",
    "emb_dim": "n_embd",
    "n_layers": "n_layer",
    "n_heads": "n_head",
    "drop_rate": "dropout",
}
_CONFIG_KEYS = (*_BOOK_KEYS, "qkv_bias")
# The book's names for GPT-2's four sizes (chapter 5) -> the preset holding those sizes.
BOOK_MODELS = {
    "gpt2-small (124M)": "gpt2",
    "gpt2-medium (355M)": "gpt2-medium",
    "gpt2-large (774M)": "gpt2-large",
    "gpt2-xl (1558M)": "gpt2-xl",
}
_WEIGHT_SUFFIXES = (".pth", ".pt", ".bin", ".safetensors")
_HELP = (
    f"pass model_config (--model-config): one of the book's model names {list(BOOK_MODELS)} or a JSON file "
    f"with the keys {list(_CONFIG_KEYS)}"
)


def book_config(
    model_config: str | os.PathLike | Mapping[str, Any] | None, src: str, hub_kwargs: dict[str, Any]
) -> dict[str, Any]:
    """The book's config dict, from a model name, a JSON file, a dict, or `config.json` beside the weights."""
    where = "model_config"
    if model_config is None:
        folder = os.path.dirname(src) if os.path.isfile(src) else src
        path = locate(folder, "config.json", hub_kwargs, required=False)
        if path is None:
            raise ValueError(f"{src} does not say how large the model is; {_HELP}")
        model_config = path
    if isinstance(model_config, (str, os.PathLike)) and os.fspath(model_config) in BOOK_MODELS:
        return book_model_config(os.fspath(model_config))
    if isinstance(model_config, (str, os.PathLike)):
        where = os.fspath(model_config)
        if not os.path.isfile(where):
            raise FileNotFoundError(f"model config {where!r} is neither a file nor one of the book's models; {_HELP}")
        model_config = read_json(where)
    if not isinstance(model_config, Mapping) or set(model_config) != set(_CONFIG_KEYS):
        found = sorted(model_config) if isinstance(model_config, Mapping) else type(model_config).__name__
        raise ValueError(
            f"{where} must hold exactly the keys {list(_CONFIG_KEYS)} (the book's GPT config), found {found}"
        )
    return dict(model_config)


def book_model_config(name: str) -> dict[str, Any]:
    """The book's config dict of its model `name`, as chapter 5 sets it to load OpenAI's weights: GPT-2's sizes,
    no dropout, and biases on the query/key/value projections."""
    fields = preset_fields(BOOK_MODELS[name])
    sizes = {theirs: fields[ours] for theirs, ours in _BOOK_KEYS.items() if ours in fields}
    return {**sizes, "drop_rate": 0.0, "qkv_bias": True}


def config_from_book(cfg: Mapping[str, Any]) -> GPTCoreConfig:
    return gpt2_sized_config(
        **{ours: cfg[theirs] for theirs, ours in _BOOK_KEYS.items()},
        activation_function="gelu_new",  # the book's GELU class is the tanh approximation
        tie_word_embeddings=False,
    )


def weights_file(src: str, hub_kwargs: dict[str, Any]) -> str:
    """SRC itself, or the one weights file in the folder SRC (`model.pth` on the Hub)."""
    if os.path.isfile(src):
        return src
    if not os.path.isdir(src):
        return locate(src, "model.pth", hub_kwargs)
    candidates = sorted(f for f in os.listdir(src) if f.endswith(_WEIGHT_SUFFIXES))
    if len(candidates) != 1:
        raise FileNotFoundError(
            f"{src} should hold exactly one weights file ({', '.join(_WEIGHT_SUFFIXES)}), found {candidates}; "
            "pass the file itself as SRC"
        )
    return os.path.join(src, candidates[0])


def read_state_dict(path: str) -> dict[str, torch.Tensor]:
    state = read_tensor_file(path) if path.endswith(".safetensors") else torch_load_untrusted(path)
    if isinstance(state, dict) and "model_state_dict" in state:  # the book's model-and-optimizer checkpoint
        state = state["model_state_dict"]
    return as_state_dict(state, f"{path} (the book's GPTModel weights)")


def read(src: str, hub_kwargs: dict[str, Any], model_config: Any = None) -> SourceCheckpoint:
    path = weights_file(src, hub_kwargs)
    cfg = book_config(model_config, src, hub_kwargs)
    config = config_from_book(cfg)
    rules = (
        LLMS_FROM_SCRATCH_RULES if cfg["qkv_bias"] else [r for r in LLMS_FROM_SCRATCH_RULES if r.target != _QKV_BIAS]
    )
    weights = map_weights(
        read_state_dict(path),
        rules,
        config,
        f"LLMs-from-scratch checkpoint {path}",
        ignore=_IGNORED,
        zero_filled=[] if cfg["qkv_bias"] else [_QKV_BIAS],
    )
    return SourceCheckpoint(
        config=config,
        state_dict=weights,
        format=FORMAT.name,
        source=src,
        notes=["The book's separate W_query/W_key/W_value are fused into c_attn (q|k|v); out_head stays untied."],
    )


FORMAT = Format(
    name="llms-from-scratch",
    summary="the GPTModel state dict of rasbt/LLMs-from-scratch (.pth; tok_emb, trf_blocks.*, out_head) plus its "
    "config via --model-config: a book model name such as 'gpt2-small (124M)' or a JSON file",
    read=read,
    takes_model_config=True,
)
