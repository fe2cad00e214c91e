"""transformers' own GPT-2 checkpoint layout (`model_type: "gpt2"`), read into gptcore and written back.

Our names are GPT-2's, so the table is short: the four Conv1D weights per block are transposed
(Conv1D stores (in, out), nn.Linear stores (out, in)), and the legacy `attn.bias`/`attn.masked_bias`
buffers (pre-computed causal masks) are dropped. `gptcore.conversion` reuses this table.
"""

from __future__ import annotations

import json
import logging
import os
import re
import zipfile
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from safetensors.torch import load_file

from .compat import optional_cached_file
from .core import GPT
from .weight_mapping import Rule, apply_rules, check_shapes, head_is_tied

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
# Task heads: GPT2LMHeadModel's `lm_head` (above) and GPT2ForSequenceClassification's `score`, named alike in gptcore.
HEADS = ("lm_head.weight", "score.weight")

# Keys of a saved config.json that describe the file (its format, the classes and library that wrote it, the
# dtype it was stored in) rather than the model; a config read into another class leaves them behind.
FILE_KEYS = ("model_type", "architectures", "auto_map", "transformers_version", "dtype", "torch_dtype")
# GPT-2 config options that change the computation and that gptcore does not implement.
_UNSUPPORTED_GPT2_OPTIONS = {
    "scale_attn_weights": True,
    "scale_attn_by_inverse_layer_idx": False,
    "add_cross_attention": False,
}
# Dropped from a GPT-2 config: the file keys, options only GPT2DoubleHeadsModel reads, and the unsupported options
# (checked first, so only their supported values are dropped).
_DROPPED_GPT2_KEYS = {
    *FILE_KEYS,
    "n_ctx",
    "reorder_and_upcast_attn",
    "summary_type",
    "summary_use_proj",
    "summary_activation",
    "summary_proj_to_labels",
    *_UNSUPPORTED_GPT2_OPTIONS,
}

WEIGHT_FILES = (
    "model.safetensors",
    "model.safetensors.index.json",
    "pytorch_model.bin",
    "pytorch_model.bin.index.json",
)


def gptcore_config_kwargs_from_gpt2(gpt2_config: dict[str, Any]) -> dict[str, Any]:
    """GPTCoreConfig keyword arguments for a GPT-2 `config.json`; refuses options we do not implement."""
    for key, supported in _UNSUPPORTED_GPT2_OPTIONS.items():
        if gpt2_config.get(key, supported) != supported:
            raise ValueError(
                f"this GPT-2 checkpoint sets {key}={gpt2_config[key]!r}; gptcore only implements "
                f"{key}={supported!r} (the setting of every published GPT-2 model)"
            )
    return {k: v for k, v in gpt2_config.items() if k not in _DROPPED_GPT2_KEYS}


def expected_shapes(config: Any, include_lm_head: bool = True) -> dict[str, tuple[int, ...]]:
    """Name -> shape of every tensor of GPTCoreForCausalLM for `config`, without allocating weights."""
    with torch.device("meta"):
        model = GPT(config)
    shapes = {name: tuple(t.shape) for name, t in model.state_dict().items()}
    if not include_lm_head:
        shapes.pop("lm_head.weight")
    return shapes


def gpt2_state_to_gptcore(
    state_dict: Mapping[str, torch.Tensor], config: Any, description: str, heads: Sequence[str] = ("lm_head.weight",)
) -> dict[str, torch.Tensor]:
    """A transformers GPT-2 state dict (GPT2Model, GPT2LMHeadModel or GPT2ForSequenceClassification) in
    gptcore's names and layout, for a model with `config` and the task `heads` (names from `HEADS`).

    Strict about the transformer: every tensor consumed, layers 0 .. n_layer-1, shapes checked. Heads: a
    stored head the target has not got is dropped (a classifier from a language model's folder, or the
    reverse); a head the target has but the folder lacks is new (left to be initialised) — except an untied
    `lm_head`, whose absence from a language model's own folder would silently give a random head."""
    state = add_transformer_prefix(dict(state_dict))
    if config.tie_word_embeddings and "lm_head.weight" in state:
        # GPT2LMHeadModel ties the head to wte and never reads a stored copy; do the same.
        if not head_is_tied(state, "lm_head.weight", "transformer.wte.weight"):
            logger.warning("%s: lm_head.weight differs from wte but the config ties them; using wte", description)
        state.pop("lm_head.weight")
    for head in HEADS:
        if head in state and head not in heads:
            logger.info("%s: not loading %s, which the model being built has no use for", description, head)
            state.pop(head)
    rules = [rule for rule in HF_GPT2_RULES if rule.target not in HEADS]
    rules += [Rule(head, head, optional=True) for head in heads]
    converted = apply_rules(state, rules, config.n_layer, ignore=HF_GPT2_IGNORED, source_description=description)
    shapes = expected_shapes(config, include_lm_head="lm_head.weight" in heads and not config.tie_word_embeddings)
    if "score.weight" in converted:
        shapes["score.weight"] = (config.num_labels, config.n_embd)
    check_shapes(converted, shapes, description)
    return converted


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
    for name in WEIGHT_FILES:
        path = optional_cached_file(folder_or_repo, name, **hub_kwargs)
        if path is None:
            continue
        if not name.endswith(".index.json"):
            return read_tensor_file(path)
        with open(path, encoding="utf-8") as f:
            index = json.load(f)
        state_dict: dict[str, torch.Tensor] = {}
        for shard in sorted(set(index["weight_map"].values())):
            shard_path = optional_cached_file(folder_or_repo, shard, **hub_kwargs)
            if shard_path is None:
                raise FileNotFoundError(
                    f"weights of {folder_or_repo} are incomplete: {shard}, listed in {name}, is missing"
                )
            state_dict.update(read_tensor_file(shard_path))
        return state_dict
    raise FileNotFoundError(f"no weights found in {folder_or_repo!r}: expected one of {', '.join(WEIGHT_FILES)}")


def read_tensor_file(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """One safetensors or pickle weight file holding a flat name -> tensor dict; errors name the file."""
    path = os.fspath(path)
    if path.endswith(".safetensors"):
        _require_file(path)
        try:
            state = load_file(path)
        except Exception as err:  # the library's message does not name the file
            raise _damaged(path, err, "safetensors") from err
    else:
        state = torch_load_untrusted(path)
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError(f"{path} does not hold a flat name -> tensor state dict")
    return state


def torch_load_untrusted(path: str | os.PathLike) -> Any:
    """A pickle-based file (what `torch.save` writes) read with `weights_only=True`: tensors, dicts, lists,
    numbers and strings only, so a file carrying code is refused, never run. Errors are ValueErrors naming the file."""
    path = os.fspath(path)
    _require_file(path)
    try:
        # torch's zip format can be memory-mapped, which keeps a large checkpoint out of memory until its
        # tensors are used; the legacy (pre-zip) format cannot, and is read whole.
        return torch.load(path, map_location="cpu", weights_only=True, mmap=zipfile.is_zipfile(path))
    except Exception as err:  # torch's and pickle's messages do not name the file
        raise unpickling_error(path, err) from err


def unpickling_error(source: str, err: Exception) -> ValueError:
    """The error to raise when `torch.load(..., weights_only=True)` fails on the pickle file (or checkpoint) `source`:
    for an object that is not plain data, its type and why it is refused; otherwise that the file is damaged."""
    message = str(err)
    # A refused class is named as pickle's GLOBAL opcode names it: `GLOBAL module.name`.
    refused = re.search(r"GLOBAL ([\w.]+)", message)
    if refused is None:
        # torch may put the unpickler's own complaint after a generic preamble; the complaint is the useful part.
        return _damaged(source, err, "torch.save", message.partition("WeightsUnpickler error:")[2] or message)
    # Not torch's advice (weights_only=False, i.e. run whatever the file says): that is exactly what must not happen.
    return ValueError(
        f"refused to load {source}: it holds a pickled Python object of type {refused.group(1)} (GLOBAL "
        f"{refused.group(1)}); unpickling it could run arbitrary code, and gptcore never executes code from a file: "
        "pickles are read with weights_only=True, so anything but tensors, dicts, lists, numbers and strings is "
        "refused. If you trust the file, load it where that class exists and re-save only such data (safetensors "
        "preferred)"
    )


def _damaged(path: str, err: Exception, writer: str, detail: str | None = None) -> ValueError:
    """`path` could not be read: says so with the first line of the library's complaint (`detail`, else `err`)."""
    lines = [line.strip() for line in (str(err) if detail is None else detail).splitlines() if line.strip()]
    complaint = lines[0].rstrip(".") if lines else type(err).__name__
    return ValueError(
        f"could not read {path}: {complaint}. The file is truncated or corrupt (or was not written by {writer}); "
        "re-download or re-save it"
    )


def _require_file(path: str) -> None:
    if not os.path.isfile(path):
        raise FileNotFoundError(f"weight file {path} does not exist")
