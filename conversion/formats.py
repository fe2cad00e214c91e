"""The source formats `convert` reads, by `--from` name, and how SRC's format is recognised."""

from __future__ import annotations

import os
import textwrap
from typing import Any

from safetensors import safe_open

from gptcore.modeling.gpt2_checkpoint import torch_load_untrusted

from . import gptcore_folder, hf_gpt2, llms_from_scratch, nanogpt, openai_tf
from .checkpoint import Format
from .files import hub_file_names, locate, read_json, require_source

FORMATS: dict[str, Format] = {
    f.name: f
    for f in (hf_gpt2.FORMAT, openai_tf.FORMAT, nanogpt.FORMAT, llms_from_scratch.FORMAT, gptcore_folder.FORMAT)
}

_DECISIVE_FILES = ("config.json", "hparams.json", "ckpt.pt")


def get_format(name: str) -> Format:
    if name not in FORMATS:
        raise ValueError(f"unknown source format {name!r}; choose one of: {', '.join(FORMATS)}")
    return FORMATS[name]


def formats_help() -> str:
    """One indented, wrapped entry per format, for `--help` and error messages (names such as
    `llms-from-scratch` are never broken at their hyphens)."""
    return "\n".join(
        textwrap.fill(
            f.summary, 100, initial_indent=f"  {f.name:<19}", subsequent_indent=" " * 21, break_on_hyphens=False
        )
        for f in FORMATS.values()
    )


def detect_format(src: str, hub_kwargs: dict[str, Any] | None = None) -> str:
    """The `--from` name of SRC (a folder, a file, or a Hub repo id), from its files and keys."""
    hub_kwargs = hub_kwargs or {}
    require_source(src)
    if os.path.isfile(src):
        return _detect_file(src)
    names = os.listdir(src) if os.path.isdir(src) else hub_file_names(src, hub_kwargs)
    if names is None:  # offline: look for the files that decide in the Hub cache
        names = [n for n in _DECISIVE_FILES if locate(src, n, hub_kwargs, required=False) is not None]
        if not names:
            raise FileNotFoundError(
                f"none of {list(_DECISIVE_FILES)} of Hub repo {src!r} is in the local cache, and Hub access is off "
                "(HF_HUB_OFFLINE / local_files_only); download the repo first, or pass --from"
            )
    if "config.json" in names:
        return _detect_config(locate(src, "config.json", hub_kwargs))
    if "checkpoint" in names or "hparams.json" in names or any(n.endswith(".ckpt.index") for n in names):
        return openai_tf.FORMAT.name
    if "ckpt.pt" in names:
        return nanogpt.FORMAT.name
    weights = [n for n in names if n.endswith((".pth", ".pt", ".bin", ".safetensors"))]
    if len(weights) == 1 and os.path.isdir(src):
        return _detect_file(os.path.join(src, weights[0]))
    raise ValueError(f"cannot tell the format of {src}; pass --from with one of:\n{formats_help()}")


def _detect_config(path: str) -> str:
    config = read_json(path)
    model_type = config.get("model_type") if isinstance(config, dict) else None
    if model_type == "gpt2":
        return hf_gpt2.FORMAT.name
    if model_type == "gptcore":
        return gptcore_folder.FORMAT.name
    if isinstance(config, dict) and "emb_dim" in config:  # the book's config dict next to its weights
        return llms_from_scratch.FORMAT.name
    raise ValueError(
        f"{path} has model_type {model_type!r}; gptcore converts GPT-2-architecture checkpoints only. "
        f"If this is one, pass --from with one of:\n{formats_help()}"
    )


def _detect_file(path: str) -> str:
    if path.endswith(".index") or ".ckpt.data-" in os.path.basename(path):
        return openai_tf.FORMAT.name
    if path.endswith(".safetensors"):
        with safe_open(path, "pt") as f:
            keys: Any = list(f.keys())
    else:
        state = torch_load_untrusted(path)
        if isinstance(state, dict) and "model" in state and "model_args" in state:
            return nanogpt.FORMAT.name
        if isinstance(state, dict) and "model_state_dict" in state:
            state = state["model_state_dict"]
        keys = list(state) if isinstance(state, dict) else []
    keys = [str(k).removeprefix("_orig_mod.") for k in keys]
    if "tok_emb.weight" in keys:
        return llms_from_scratch.FORMAT.name
    if any(k.startswith(("transformer.h.", "h.0.")) for k in keys):
        raise ValueError(
            f"{path} looks like a transformers GPT-2 state dict, which needs its config: put it in a folder with "
            "the model's config.json (as model.safetensors or pytorch_model.bin) and convert the folder"
        )
    raise ValueError(f"cannot tell the format of {path}; pass --from with one of:\n{formats_help()}")
