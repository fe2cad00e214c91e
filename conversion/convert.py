"""`convert`: any supported GPT-2 checkpoint in, a gptcore (or plain transformers GPT-2) folder out.

Nothing appears at DST unless the whole conversion succeeded: the folder is written under a temporary
name next to DST and renamed into place at the end.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import uuid
from collections.abc import Iterator, Mapping
from typing import Any

import torch
from transformers import PreTrainedModel

from gptcore.modeling import GPTCoreForCausalLM

from .checkpoint import SourceCheckpoint
from .export import to_hf_gpt2
from .files import require_source
from .formats import detect_format, get_format
from .model_card import write_model_card

logger = logging.getLogger(__name__)

TARGETS = ("gptcore", "hf-gpt2")
DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


def convert(
    src: str | os.PathLike,
    dst: str | os.PathLike | None = None,
    *,
    from_format: str | None = None,
    to: str = "gptcore",
    dtype: str | torch.dtype | None = None,
    max_shard_size: int | str | None = None,
    overwrite: bool = False,
    model_config: str | os.PathLike | Mapping[str, Any] | None = None,
    **hub_kwargs: Any,
) -> PreTrainedModel:
    """Convert the checkpoint at `src` and, if `dst` is given, write it there as a `save_pretrained` folder.

    Args:
        src: a local folder or file, or a Hub repo id (used when no such local path exists).
        dst: the folder to write; must not exist or be empty unless `overwrite`. None: only return the model.
        from_format: one of `FORMATS` ("hf-gpt2", "openai-tf", "nanogpt", "llms-from-scratch", "gptcore");
            detected from the files when None.
        to: "gptcore" (a GPTCoreForCausalLM folder) or "hf-gpt2" (a plain GPT2LMHeadModel folder).
        dtype: "float32", "float16", "bfloat16" (or the torch dtype); None keeps the source's dtype.
        max_shard_size: passed to `save_pretrained`, e.g. "2GB".
        model_config: llms-from-scratch only: the book's model name ("gpt2-small (124M)", ...), a JSON
            file with its config dict, or the dict.
        hub_kwargs: `revision`, `token`, `cache_dir`, ... for Hub downloads.

    Returns the converted model as written: GPTCoreForCausalLM, or GPT2LMHeadModel for `to="hf-gpt2"`.
    """
    src = os.fspath(src)
    if to not in TARGETS:
        raise ValueError(f"unknown target format {to!r}; choose one of: {', '.join(TARGETS)}")
    target_dtype = parse_dtype(dtype)
    if dst is not None:
        dst = os.fspath(dst)
        if os.path.abspath(dst) == os.path.abspath(src):
            raise ValueError(f"destination {dst} is the source itself; write to another folder")
        check_destination(dst, overwrite)
    require_source(src)
    fmt = get_format(from_format if from_format is not None else detect_format(src, hub_kwargs))
    extra: dict[str, Any] = {}
    if model_config is not None:
        if not fmt.takes_model_config:
            raise ValueError(f"model_config (--model-config) only applies to llms-from-scratch, not to {fmt.name}")
        extra["model_config"] = model_config
    logger.info("reading %s as %s", src, fmt.name)
    checkpoint = fmt.read(src, hub_kwargs, **extra)
    model = build_model(checkpoint, target_dtype)
    result: PreTrainedModel = model if to == "gptcore" else to_hf_gpt2(model)
    if dst is not None:
        save_kwargs = {} if max_shard_size is None else {"max_shard_size": max_shard_size}
        dtype_name = str(result.dtype).removeprefix("torch.")
        with staged_folder(dst, overwrite) as folder:
            result.save_pretrained(folder, **save_kwargs)
            if checkpoint.write_tokenizer is not None:
                checkpoint.write_tokenizer(folder)
            write_model_card(folder, os.path.basename(os.path.normpath(dst)), checkpoint, to, dtype_name)
        logger.info("wrote %s (%s, %s)", dst, to, dtype_name)
    return result


def parse_dtype(dtype: str | torch.dtype | None) -> torch.dtype | None:
    if dtype is None or (isinstance(dtype, torch.dtype) and dtype in DTYPES.values()):
        return dtype
    if isinstance(dtype, str) and dtype in DTYPES:
        return DTYPES[dtype]
    raise ValueError(f"unsupported dtype {dtype!r}; choose one of: {', '.join(DTYPES)}")


def build_model(checkpoint: SourceCheckpoint, dtype: torch.dtype | None = None) -> GPTCoreForCausalLM:
    """A GPTCoreForCausalLM holding the checkpoint's weights, cast to `dtype` (default: the source's)."""
    state = checkpoint.state_dict
    dtype = dtype or state["transformer.wte.weight"].dtype
    mixed = sorted({str(t.dtype) for t in state.values() if t.is_floating_point() and t.dtype != dtype})
    if mixed:
        logger.info("casting tensors stored as %s to %s", mixed, dtype)
    state = {k: t.to(dtype) if t.is_floating_point() else t for k, t in state.items()}
    model, info = GPTCoreForCausalLM.from_pretrained(
        None, config=checkpoint.config, state_dict=state, dtype=dtype, output_loading_info=True
    )
    problems = {k: sorted(v) for k, v in info.items() if v}
    if problems:  # shapes were checked already; anything here is a bug, but never silent
        raise ValueError(f"{checkpoint.source}: the converted weights did not load: {problems}")
    if checkpoint.generation_config is not None:
        model.generation_config = checkpoint.generation_config
    return model.eval()


def check_destination(dst: str, overwrite: bool) -> None:
    if os.path.exists(dst) and not os.path.isdir(dst):
        raise ValueError(f"destination {dst} is a file; pass a folder path")
    if os.path.isdir(dst) and os.listdir(dst) and not overwrite:
        raise ValueError(f"destination {dst} exists and is not empty; pass --overwrite (overwrite=True) to replace it")


@contextlib.contextmanager
def staged_folder(dst: str, overwrite: bool) -> Iterator[str]:
    """Yield a temporary folder beside `dst`; on success it replaces `dst`, on failure it is removed."""
    parent = os.path.dirname(os.path.abspath(dst))
    os.makedirs(parent, exist_ok=True)
    # os.mkdir (unlike tempfile.mkdtemp, which makes it private) gives DST the permissions the umask says.
    staging = os.path.join(parent, f".{os.path.basename(os.path.normpath(dst))}.{uuid.uuid4().hex[:12]}.partial")
    os.mkdir(staging)
    try:
        yield staging
        check_destination(dst, overwrite)  # again: something may have appeared at dst meanwhile
        if os.path.isdir(dst):
            previous = staging + ".old"
            os.rename(dst, previous)
            try:
                os.rename(staging, dst)
            except OSError:
                os.rename(previous, dst)
                raise
            shutil.rmtree(previous)
        else:
            os.rename(staging, dst)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
