"""Perplexity of a causal language model on a long text, with a sliding window (as transformers' guide
"Perplexity of fixed-length models"): every token after the first is predicted exactly once, with as much
context as the window allows."""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm


@torch.no_grad()
def sliding_window_nll(model: Any, input_ids: torch.Tensor, max_length: int, stride: int) -> tuple[float, int, int]:
    """Summed negative log-likelihood (nats) of input_ids[1:], the number of tokens scored, and windows used.

    Window k reads the tokens [k * stride, k * stride + max_length); the logits at its positions predict the
    tokens one position later, and the window scores those the previous window did not: all of them in the
    first window, then the last `stride` (fewer in the last window, which stops at the end of the text).
    """
    last = input_ids.size(1) - 1  # the last token to predict; it is never an input
    n_windows = 1 + max(0, -(-(last - max_length) // stride))  # until a window reaches `last`
    nll_sum, scored, next_target = 0.0, 0, 1  # tokens [1, next_target) are scored
    for begin in tqdm(range(0, n_windows * stride, stride), desc="Scoring windows"):
        end = min(begin + max_length, last)  # inputs [begin, end) predict the tokens [begin + 1, end + 1)
        new = end + 1 - next_target  # the last `new` positions predict tokens no earlier window scored
        window = input_ids[:, begin:end].to(model.device)
        logits = model(window, logits_to_keep=new).logits  # (1, new, vocab)
        targets = input_ids[:, next_target : end + 1].to(model.device)
        nll_sum += F.cross_entropy(logits.flatten(0, 1).float(), targets.flatten(), reduction="sum").item()
        scored += new
        next_target = end + 1
    assert scored == last, (scored, last)  # every token after the first, once
    return nll_sum, scored, n_windows


def perplexity(
    model: Any, input_ids: torch.Tensor, max_length: int | None = None, stride: int | None = None
) -> dict[str, Any]:
    """Perplexity of (1, T) `input_ids` and how it was computed. Windows of `max_length` tokens (default: the
    model's n_positions) advance by `stride` (default: half a window): stride = max_length gives disjoint
    windows (fast, pessimistic), stride = 1 gives every token full context."""
    n_positions = model.config.n_positions
    max_length = max_length or n_positions
    stride = stride or max(1, max_length // 2)
    if not 2 <= max_length <= n_positions:
        raise ValueError(f"--max_length must be in [2, {n_positions}] (the model's n_positions), got {max_length}")
    if not 1 <= stride <= max_length:
        raise ValueError(f"--stride must be in [1, --max_length={max_length}], got {stride}")
    if input_ids.size(1) < 2:
        raise ValueError("the text has fewer than 2 tokens; there is nothing to predict")
    nll_sum, scored, windows = sliding_window_nll(model, input_ids, max_length, stride)
    return {
        "perplexity": math.exp(nll_sum / scored),
        "nll_per_token": nll_sum / scored,
        "tokens": input_ids.size(1),
        "tokens_scored": scored,
        "windows": windows,
        "max_length": max_length,
        "stride": stride,
    }
