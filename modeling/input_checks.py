"""Checks of the model's inputs that turn an index error deep inside an embedding into a message saying what
was wrong and what to do. Reading a value back costs nothing on CPU but stalls an accelerator's queue, so on
a device the checks run there and fail at the next synchronisation instead.

Imports nothing but torch, like the core.
"""

from __future__ import annotations

from typing import Any

import torch


def _read_back(tensor: torch.Tensor) -> bool:
    """Whether a value check may read `tensor` back to Python. On CPU that is free; on an accelerator it
    would stall the device queue on every decoding step, so there the checks run on the device
    (`_check_on_device`) and fail at the next synchronisation instead. Compiled graphs contain neither."""
    return tensor.device.type == "cpu" and not torch.compiler.is_compiling()


def _check_on_device(ok: torch.Tensor, message: str) -> None:
    if ok.device.type != "meta" and not torch.compiler.is_compiling():  # meta tensors hold no values
        torch._assert_async(ok, message)


def check_token_ids(input_ids: torch.Tensor | None, vocab_size: int) -> None:
    if input_ids is None:
        raise ValueError("pass either input_ids or inputs_embeds")
    if input_ids.dtype not in (torch.int64, torch.int32):  # what nn.Embedding takes
        raise ValueError(
            f"input_ids must be an integer tensor of dtype int64 or int32 (what nn.Embedding takes), got dtype "
            f"{input_ids.dtype}; convert it with .long()"
        )
    if input_ids.dim() != 2:
        raise ValueError(f"input_ids must have shape (batch, seq_len), got {tuple(input_ids.shape)}")
    if input_ids.numel() == 0:
        raise ValueError(f"input_ids is empty (shape {tuple(input_ids.shape)}); pass at least one token")
    message = (
        f"input_ids contains token id {{}}, outside the vocabulary [0, {vocab_size}); check that the tokenizer "
        "matches the model (or resize the token embeddings)"
    )
    if _read_back(input_ids):
        low, high = (int(bound) for bound in torch.aminmax(input_ids))  # one pass for both
        if low < 0 or high >= vocab_size:
            raise ValueError(message.format(high if high >= vocab_size else low))
    else:
        _check_on_device(((input_ids >= 0) & (input_ids < vocab_size)).all(), message.format("(on device)"))


def check_positions(position_ids: torch.Tensor, n_positions: int, cached_len: Any = None) -> None:
    """Every position must have an embedding, and after cached tokens, cached + new tokens must fit the context.
    The length of a first chunk is not compared with `n_positions`: a packed row of several documents
    (positions restarting at 0 for each) may be longer than the context."""
    message = (
        f"sequence length {{}} (cached + new tokens) exceeds n_positions={n_positions}, the longest context this "
        "model has position embeddings for; truncate the input or use a sliding window"
    )
    if cached_len is not None and (not torch.is_tensor(cached_len) or _read_back(cached_len)):
        if not torch.compiler.is_compiling() and 0 < cached_len and cached_len + position_ids.size(-1) > n_positions:
            raise ValueError(message.format(int(cached_len + position_ids.size(-1))))
    if position_ids.numel() == 0:
        return
    if _read_back(position_ids):
        low, high = (int(bound) for bound in torch.aminmax(position_ids))
        if high >= n_positions:
            raise ValueError(f"position_ids contains {high}, outside [0, {n_positions}): " + message.format(high + 1))
        if low < 0:
            raise ValueError(f"position_ids contains {low}; positions must lie in [0, {n_positions})")
    else:
        _check_on_device(((position_ids >= 0) & (position_ids < n_positions)).all(), message.format("(on device)"))
