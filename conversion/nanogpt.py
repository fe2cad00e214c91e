"""Source format `nanogpt`: a karpathy/nanoGPT training checkpoint, `ckpt.pt`.

The file is `{'model': state_dict, 'model_args': {...}, 'optimizer': ..., 'config': ..., 'iter_num': ...,
'best_val_loss': ...}`, read with `weights_only=True` (dicts, numbers, strings and tensors only).
nanoGPT keeps GPT-2's names in nn.Linear orientation, so the table is gptcore's own; what differs:

- `torch.compile` prefixes every key with `_orig_mod.`; it is stripped.
- `bias=False` models store no biases at all (Linear and LayerNorm); they are exactly zero.
- older nanoGPT saves the causal-mask buffers `attn.bias`; they are ignored.
- nanoGPT's MLP uses *exact* GELU (`nn.GELU()`), GPT-2 the tanh approximation (`gelu_new`). The
  difference is small (< 1e-3 per activation) but changes every logit, so the converted config records
  `activation_function="gelu"` and reproduces nanoGPT's outputs. A nanoGPT model initialised from
  OpenAI's GPT-2 weights therefore differs slightly from GPT-2 itself, exactly as it does in nanoGPT.
"""

from __future__ import annotations

import os
from typing import Any

from gptcore.modeling import GPTCoreConfig
from gptcore.modeling.gpt2_checkpoint import torch_load_untrusted
from gptcore.modeling.weight_mapping import head_is_tied

from .checkpoint import (
    GPTCORE_RULES,
    Format,
    SourceCheckpoint,
    as_state_dict,
    gpt2_sized_config,
    map_weights,
)
from .files import locate

# model_args key -> gpt2_sized_config argument
_ARG_NAMES = {
    "vocab_size": "vocab_size",
    "block_size": "n_positions",
    "n_embd": "n_embd",
    "n_layer": "n_layer",
    "n_head": "n_head",
    "dropout": "dropout",
}
_OPTIONAL_ARGS = {"bias": True, "dropout": 0.0}  # older nanoGPT had no `bias` option: biases always on
_REQUIRED_ARGS = [k for k in _ARG_NAMES if k not in _OPTIONAL_ARGS]
_BIAS_TARGETS = [rule.target for rule in GPTCORE_RULES if rule.target.endswith(".bias")]
_IGNORED = ["transformer.h.{i}.attn.bias"]  # pre-computed causal mask of older versions


def config_from_model_args(model_args: Any, path: str) -> GPTCoreConfig:
    if not isinstance(model_args, dict):
        raise ValueError(
            f"{path}: 'model_args' should be a dict of nanoGPT's GPTConfig fields, found {type(model_args).__name__}"
        )
    missing = [k for k in _REQUIRED_ARGS if k not in model_args]
    unknown = sorted(set(model_args) - set(_REQUIRED_ARGS) - set(_OPTIONAL_ARGS))
    if missing or unknown:
        raise ValueError(
            f"{path}: model_args must have {_REQUIRED_ARGS} (and optionally {list(_OPTIONAL_ARGS)}); "
            f"missing {missing}, not understood {unknown}. A nanoGPT variant with other options is a different "
            "architecture, which gptcore does not convert"
        )
    args = {**_OPTIONAL_ARGS, **model_args}
    return gpt2_sized_config(
        **{ours: args[theirs] for theirs, ours in _ARG_NAMES.items()},
        activation_function="gelu",  # nn.GELU(): exact, see the module docstring
    )


def read(src: str, hub_kwargs: dict[str, Any]) -> SourceCheckpoint:
    path = src if os.path.isfile(src) else locate(src, "ckpt.pt", hub_kwargs)
    ckpt = torch_load_untrusted(path)
    if not isinstance(ckpt, dict) or "model" not in ckpt or "model_args" not in ckpt:
        found = sorted(map(str, ckpt))[:10] if isinstance(ckpt, dict) else type(ckpt).__name__
        raise ValueError(
            f"{path} is not a nanoGPT checkpoint: expected a dict with 'model' and 'model_args', found {found}"
        )
    config = config_from_model_args(ckpt["model_args"], path)
    bias = bool(ckpt["model_args"].get("bias", _OPTIONAL_ARGS["bias"]))
    state = as_state_dict(ckpt["model"], f"{path} ['model']")
    # nanoGPT always ties lm_head to wte and stores both names; keep an untied head if someone changed that.
    config.tie_word_embeddings = head_is_tied(state, "lm_head.weight", "transformer.wte.weight")
    if config.tie_word_embeddings:
        state.pop("lm_head.weight", None)
    rules = GPTCORE_RULES if bias else [r for r in GPTCORE_RULES if r.target not in _BIAS_TARGETS]
    weights = map_weights(
        state, rules, config, f"nanoGPT checkpoint {path}", ignore=_IGNORED, zero_filled=[] if bias else _BIAS_TARGETS
    )
    return SourceCheckpoint(
        config=config,
        state_dict=weights,
        format=FORMAT.name,
        source=src,
        notes=[
            "nanoGPT's MLP uses exact GELU, so the config sets activation_function='gelu' (GPT-2 uses the tanh "
            "approximation, 'gelu_new'); this reproduces nanoGPT's outputs."
        ]
        + ([] if bias else ["The source was trained with bias=False; its biases are stored here as zeros."]),
    )


FORMAT = Format(
    name="nanogpt",
    summary="a karpathy/nanoGPT checkpoint: ckpt.pt or a folder holding it ('model' + 'model_args'; "
    "torch.compile's _orig_mod. prefix and bias=False handled; exact GELU kept)",
    read=read,
)
