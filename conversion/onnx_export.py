"""gptcore -> ONNX for ONNX Runtime: one decoder graph that takes and returns the KV cache.

Why `torch.onnx.export` of gptcore itself rather than optimum's exporter on the exported GPT-2 folder: optimum's
ONNX exporter lives in `optimum-onnx`, whose newest release (0.1.0) requires transformers<4.58, and gptcore
needs transformers 5. The core's KV-cache seam keeps the export short: the past keys/values come in as graph
inputs, the core's own `KVCache` appends the new ones, and the results go out.

The graph follows optimum's decoder layout (names and shapes), so optimum's `ORTModelForCausalLM` loads the folder
and generates with the cache (checked with optimum-onnx 0.1.0, in an environment with transformers 4.57):

    inputs   input_ids       (batch, seq)                       int64
             attention_mask  (batch, past + seq)                int64, 1 = real token, 0 = padding
             position_ids    (batch, seq)                       int64
             past_key_values.{i}.key / .value  (batch, n_head, past, head_dim)   the model's float dtype
    outputs  logits          (batch, seq, vocab)
             present.{i}.key / .value          (batch, n_head, past + seq, head_dim)

The first step passes past tensors of length 0. `greedy_generate` below is a complete decoding loop.
"""

from __future__ import annotations

import logging
import os
import warnings
from typing import Any

import numpy as np
import torch
from torch import nn

from gptcore.modeling import GPTCoreForCausalLM, KVCache
from gptcore.modeling.core import GPTTransformer, sdpa_attention

from .export import gpt2_config_from_gptcore

logger = logging.getLogger(__name__)

ONNX_FILE = "model.onnx"
# protobuf cannot hold a file over 2 GiB; above that the weights go to model.onnx.data beside the graph.
_SINGLE_FILE_LIMIT = 2**31 - 2**26


def input_names(n_layer: int) -> list[str]:
    return ["input_ids", "attention_mask", "position_ids"] + _cache_names("past_key_values", n_layer)


def output_names(n_layer: int) -> list[str]:
    return ["logits"] + _cache_names("present", n_layer)


def _cache_names(prefix: str, n_layer: int) -> list[str]:
    return [f"{prefix}.{i}.{kv}" for i in range(n_layer) for kv in ("key", "value")]


class DecoderWithPast(nn.Module):
    """GPTCoreForCausalLM as a function of plain tensors (what ONNX export traces): the core's transformer and
    LM head, fed through the core's seams (attention function, KV cache), without transformers' wrapper."""

    def __init__(self, model: GPTCoreForCausalLM) -> None:
        super().__init__()
        self.model = model

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        position_ids: torch.Tensor,
        past_key_values: list[torch.Tensor],  # key, value of layer 0, key, value of layer 1, ...
    ) -> tuple[torch.Tensor, ...]:
        cache = KVCache()
        cache.keys, cache.values = list(past_key_values[0::2]), list(past_key_values[1::2])
        mask = self.additive_mask(attention_mask, input_ids.size(1))
        hidden = GPTTransformer.forward(  # the core's forward, as GPTCoreModel calls it
            self.model.transformer,
            input_ids=input_ids,
            position_ids=position_ids,
            attention_mask=mask,
            cache=cache,
            attention_fn=sdpa_attention,
        )
        presents = [t for kv in zip(cache.keys, cache.values) for t in kv]
        return (self.model.lm_head(hidden), *presents)

    def additive_mask(self, attention_mask: torch.Tensor, seq_len: int) -> torch.Tensor:
        """(batch, 1, seq, past + seq): 0 where a query may attend (earlier or same position, not padding), else the
        dtype's lowest value. Not -inf: a padding query that may attend nowhere then gets uniform weights instead of
        NaN, which would reach the real tokens through the cached keys and values."""
        total = attention_mask.size(1)
        queries = torch.arange(seq_len, device=attention_mask.device)[:, None] + (total - seq_len)
        causal = torch.arange(total, device=attention_mask.device)[None, :] <= queries  # (seq, total)
        allowed = causal[None, None] & attention_mask[:, None, None, :].bool()
        dtype = self.model.lm_head.weight.dtype
        mask = torch.zeros(allowed.shape, dtype=dtype, device=allowed.device)
        return mask.masked_fill(~allowed, torch.finfo(dtype).min)


def export_onnx(
    model: GPTCoreForCausalLM,
    out_dir: str | os.PathLike,
    tokenizer: Any = None,
    opset_version: int | None = None,
) -> str:
    """Write `out_dir/model.onnx` (the decoder with past key values described above), `config.json` (the plain
    GPT-2 config, as `export_hf_gpt2` writes it), `generation_config.json` and, when given, the tokenizer's files.

    The graph is traced where the model is, in its dtype; float32 is what ONNX Runtime's CPU kernels cover fully.
    Returns the path of model.onnx.
    """
    if not isinstance(model, GPTCoreForCausalLM):
        raise ValueError(f"ONNX export needs a GPTCoreForCausalLM, got {type(model).__name__}")
    try:
        import onnx  # noqa: F401  torch.onnx.export needs onnx and onnxscript
        import onnxscript  # noqa: F401
    except ImportError as err:  # optional dependencies
        raise ImportError(f"ONNX export needs onnx and onnxscript: pip install 'gptcore[deploy]' ({err})") from err
    config = model.config
    os.makedirs(out_dir, exist_ok=True)
    path = os.path.join(out_dir, ONNX_FILE)

    # Example inputs only fix the graph's structure: batch, seq and past are dynamic. Sizes of 0 or 1 would be
    # specialised by torch.export, so the example uses 2, 3 and 4.
    batch, seq, past = 2, 3, 4
    device, dtype = model.device, model.dtype
    kv_shape = (batch, config.n_head, past, config.n_embd // config.n_head)
    past_kv = [torch.zeros(kv_shape, dtype=dtype, device=device) for _ in range(2 * config.n_layer)]
    args = (
        torch.zeros(batch, seq, dtype=torch.long, device=device),
        torch.ones(batch, past + seq, dtype=torch.long, device=device),
        torch.arange(past, past + seq, device=device).expand(batch, seq),
        past_kv,
    )
    token_axes = {0: "batch_size", 1: "sequence_length"}
    dynamic_shapes = (
        token_axes,
        {0: "batch_size", 1: "total_sequence_length"},
        token_axes,
        [{0: "batch_size", 2: "past_sequence_length"}] * len(past_kv),
    )
    weight_bytes = sum(p.numel() * p.element_size() for p in model.parameters())
    with torch.no_grad(), warnings.catch_warnings():
        # Naming one axis on several inputs is how they are meant to share it; torch says it keeps one of the names.
        warnings.filterwarnings("ignore", message="# The axis name")
        warnings.filterwarnings("ignore", message=".*treespec, LeafSpec", category=FutureWarning)  # torch 2.13's own
        torch.onnx.export(
            DecoderWithPast(model).eval(),
            args,
            path,
            input_names=input_names(config.n_layer),
            output_names=output_names(config.n_layer),
            dynamic_shapes=dynamic_shapes,
            opset_version=opset_version,
            external_data=weight_bytes > _SINGLE_FILE_LIMIT,
            dynamo=True,
            verbose=False,
        )
    gpt2_config_from_gptcore(config).save_pretrained(out_dir)
    model.generation_config.save_pretrained(out_dir)
    if tokenizer is not None:
        tokenizer.save_pretrained(out_dir)
    logger.debug("wrote ONNX model %s", path)
    return path


def empty_past(session: Any, batch: int) -> dict[str, np.ndarray]:
    """Length-0 past keys/values for the first step, shaped and typed as `session`'s inputs say."""
    feeds = {}
    for node in session.get_inputs():
        if node.name.startswith("past_key_values."):
            _, n_head, _, head_dim = node.shape
            dtype = np.float16 if node.type == "tensor(float16)" else np.float32
            feeds[node.name] = np.zeros((batch, n_head, 0, head_dim), dtype=dtype)
    return feeds


def greedy_generate(
    session: Any, input_ids: np.ndarray, max_new_tokens: int, attention_mask: np.ndarray | None = None
) -> np.ndarray:
    """Greedy decoding with an `onnxruntime.InferenceSession` of `export_onnx`'s graph: the prompt once, then one
    token per step with the cache. Left-padded batches take their `attention_mask`; positions then count real
    tokens only, as in transformers' `generate()`. Prompt plus new tokens must fit the model's n_positions.
    Returns the prompt followed by the new tokens, (batch, seq + max_new_tokens)."""
    input_ids = np.asarray(input_ids, dtype=np.int64)
    mask = np.ones_like(input_ids) if attention_mask is None else np.asarray(attention_mask, dtype=np.int64)
    past = empty_past(session, input_ids.shape[0])
    out, new = input_ids, input_ids
    for _ in range(max_new_tokens):
        positions = np.maximum(mask.cumsum(-1) - 1, 0)[:, -new.shape[1] :]
        outputs = session.run(None, {"input_ids": new, "attention_mask": mask, "position_ids": positions, **past})
        named = dict(zip((node.name for node in session.get_outputs()), outputs))
        past = {name: named[name.replace("past_key_values.", "present.")] for name in past}
        new = named["logits"][:, -1].argmax(-1, keepdims=True).astype(np.int64)
        out = np.concatenate([out, new], axis=1)
        mask = np.concatenate([mask, np.ones_like(new)], axis=1)
    return out
