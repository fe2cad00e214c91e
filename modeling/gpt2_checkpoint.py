"""transformers' own GPT-2 checkpoint layout (`model_type: "gpt2"`), read into gptcore and written back.

Our names are GPT-2's, so the table is short: the four Conv1D weights per block are transposed
(Conv1D stores (in, out), nn.Linear stores (out, in)), and the legacy `attn.bias`/`attn.masked_bias`
buffers (pre-computed causal masks) are dropped. `gptcore.conversion` reuses this table.
"""

from __future__ import annotations

import json
import logging
import os
from typing import Any

import torch
from safetensors.torch import load_file

from .weight_mapping import Rule

logger = logging.getLogger(__name__)

# (GPT2LMHeadModel name, GPTCoreForCausalLM name, transform)
HF_GPT2_RULES: list[Rule] = [
    Rule("transformer.wte.weight", "transformer.wte.weight"),
    Rule("transformer.wpe.weight", "transformer.wpe.weight"),
    Rule("transformer.h.{i}.ln_1.weight", "transformer.h.{i}.ln_1.weight"),
    Rule("transformer.h.{i}.ln_1.bias", "transformer.h.{i}.ln_1.bias"),
    Rule("transformer.h.{i}.attn.c_attn.weight", "transformer.h.{i}.attn.c_attn.weight", "transpose"),
    Rule("transformer.h.{i}.attn.c_attn.bias", "transformer.h.{i}.attn.c_attn.bias"),
    Rule("transformer.h.{i}.attn.c_proj.weight", "transformer.h.{i}.attn.c_proj.weight", "transpose"),
    Rule("transformer.h.{i}.attn.c_proj.bias", "transformer.h.{i}.attn.c_proj.bias"),
    Rule("transformer.h.{i}.ln_2.weight", "transformer.h.{i}.ln_2.weight"),
    Rule("transformer.h.{i}.ln_2.bias", "transformer.h.{i}.ln_2.bias"),
    Rule("transformer.h.{i}.mlp.c_fc.weight", "transformer.h.{i}.mlp.c_fc.weight", "transpose"),
    Rule("transformer.h.{i}.mlp.c_fc.bias", "transformer.h.{i}.mlp.c_fc.bias"),
    Rule("transformer.h.{i}.mlp.c_proj.weight", "transformer.h.{i}.mlp.c_proj.weight", "transpose"),
    Rule("transformer.h.{i}.mlp.c_proj.bias", "transformer.h.{i}.mlp.c_proj.bias"),
    Rule("transformer.ln_f.weight", "transformer.ln_f.weight"),
    Rule("transformer.ln_f.bias", "transformer.ln_f.bias"),
    Rule("lm_head.weight", "lm_head.weight", optional=True),  # absent when tied to wte
]
HF_GPT2_IGNORED = ["transformer.h.{i}.attn.bias", "transformer.h.{i}.attn.masked_bias"]

# GPT-2 config options that change the computation and that gptcore does not implement.
_UNSUPPORTED_GPT2_OPTIONS = {"scale_attn_weights": True, "scale_attn_by_inverse_layer_idx": False, "add_cross_attention": False}
# Keys that describe the file rather than the model, or only matter to GPT2DoubleHeadsModel.
_DROPPED_GPT2_KEYS = {
    "model_type", "architectures", "auto_map", "transformers_version", "n_ctx", "reorder_and_upcast_attn",
    "summary_type", "summary_use_proj", "summary_activation", "summary_proj_to_labels", "dtype", "torch_dtype",
    *_UNSUPPORTED_GPT2_OPTIONS,
}  # fmt: skip

WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin", "pytorch_model.bin.index.json")


def gptcore_config_kwargs_from_gpt2(gpt2_config: dict[str, Any]) -> dict[str, Any]:
    """GPTCoreConfig keyword arguments for a GPT-2 `config.json`; refuses options we do not implement."""
    for key, supported in _UNSUPPORTED_GPT2_OPTIONS.items():
        if gpt2_config.get(key, supported) != supported:
            raise ValueError(
                f"this GPT-2 checkpoint sets {key}={gpt2_config[key]!r}; gptcore only implements "
                f"{key}={supported!r} (the setting of every published GPT-2 model)"
            )
    return {k: v for k, v in gpt2_config.items() if k not in _DROPPED_GPT2_KEYS}


def add_transformer_prefix(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """GPT2Model checkpoints (and some old uploads) store keys without `transformer.`; add it."""
    if any(k.startswith("transformer.") for k in state_dict):
        return state_dict
    return {k if k.startswith("lm_head.") else f"transformer.{k}": v for k, v in state_dict.items()}


def load_weight_files(folder_or_repo: str, **hub_kwargs: Any) -> dict[str, torch.Tensor]:
    """All tensors of a transformers-format checkpoint: single or sharded, safetensors or pickle.

    `folder_or_repo` is a local folder or a Hub repo id (downloaded through transformers' cache).
    Pickle files are read with `weights_only=True`, so a file carrying code is refused, never run.
    """
    from transformers.utils import cached_file  # the wrapper layer may use transformers

    for name in WEIGHT_FILES:
        path = cached_file(folder_or_repo, name, _raise_exceptions_for_missing_entries=False, **hub_kwargs)
        if path is None:
            continue
        if not name.endswith(".index.json"):
            return read_tensor_file(path)
        with open(path, encoding="utf-8") as f:
            index = json.load(f)
        state_dict: dict[str, torch.Tensor] = {}
        for shard in sorted(set(index["weight_map"].values())):
            shard_path = cached_file(folder_or_repo, shard, **hub_kwargs)
            state_dict.update(read_tensor_file(shard_path))
        return state_dict
    raise FileNotFoundError(
        f"no weights found in {folder_or_repo!r}: expected one of {', '.join(WEIGHT_FILES)}"
    )


def read_tensor_file(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """One safetensors or pickle weight file; errors name the file."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"weight file {path} does not exist")
    try:
        if path.endswith(".safetensors"):
            return load_file(path)
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # the libraries' messages do not name the file
        raise ValueError(
            f"could not read weight file {path}: {err}. The file is truncated, corrupt, or (for pickle files) "
            "contains objects other than tensors, which are refused for safety"
        ) from err
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError(f"{path} does not hold a flat name -> tensor state dict")
    return state
