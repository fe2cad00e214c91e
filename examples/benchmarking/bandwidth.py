"""The memory limit of batch-1 decoding: each token step reads every weight of the model once (plus the cached keys
and values), so no implementation can step faster than those bytes divided by the memory's read bandwidth. The
benchmark measures that bandwidth itself, in the same run, and reports decoding as a fraction of the limit.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from benchmarking.timing import Timer


def tensor_bytes(tensor: torch.Tensor) -> int:
    """Bytes `tensor` occupies. A tensor subclass that stores its data in parts (torchao's quantised weights: int8
    values plus per-row scales) counts its parts: its own dtype and element size are those of the float it stands
    for."""
    flatten = getattr(tensor, "__tensor_flatten__", None)
    if flatten is not None:
        names, _ = flatten()
        return sum(tensor_bytes(getattr(tensor, name)) for name in names)
    return tensor.numel() * tensor.element_size()


def decode_bytes_per_step(model: nn.Module, context: float) -> int:
    """Bytes one batch-1 decoding step reads: every parameter once, except embedding tables, of which it reads the one
    row it looks up, unless the table is also the output head (tied), which reads it whole; plus the keys and values
    of `context` cached tokens in every layer, in the model's dtype. Works for gptcore and transformers' GPT-2."""
    head = model.get_output_embeddings().weight
    embeddings = {id(module.weight) for module in model.modules() if isinstance(module, nn.Embedding)}
    total = 0
    for parameter in model.parameters():  # a tied matrix is listed once
        whole = tensor_bytes(parameter)
        total += whole // parameter.shape[0] if id(parameter) in embeddings and parameter is not head else whole
    config = model.config
    kv_element = torch.finfo(model.dtype).bits // 8
    return total + int(2 * config.n_layer * context * config.n_embd * kv_element)


def mean_context(prompt: int, new_tokens: int) -> float:
    """Mean number of cached tokens over the decoding steps the benchmark times: the step that produces new token
    i (i = 2..new_tokens; the first comes from the prompt's forward pass) attends over prompt + i - 1 tokens."""
    return prompt + new_tokens / 2 if new_tokens > 1 else float(prompt)


def read_bandwidth(timer: Timer, mib: int = 512, repeats: int = 5) -> dict[str, Any]:
    """The best rate at which `sum()` reads a filled fp32 tensor of `mib` MiB (far larger than any cache), over
    `repeats` tries. Filled, because an untouched allocation reads the operating system's shared zero page, from
    cache."""
    buffer = torch.ones(mib * 2**20 // 4, device=timer.device)
    best = min(timer.time(buffer.sum) for _ in range(repeats))
    what = f"sum() of a filled {mib} MiB fp32 tensor, best of {repeats}"
    return {"bytes_per_s": buffer.numel() * 4 / best, "what": what}


def streaming_limit(bytes_per_step: int, bandwidth: dict[str, Any]) -> dict[str, Any]:
    """The fastest a decoding step can be: its bytes over the measured read bandwidth."""
    limit_s = bytes_per_step / bandwidth["bytes_per_s"]
    return {"bytes_per_step": bytes_per_step, "limit_ms_per_step": 1e3 * limit_s, "limit_tokens_per_s": 1 / limit_s}
