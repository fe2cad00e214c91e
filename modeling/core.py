"""The GPT-2 architecture in plain PyTorch: one file, read top to bottom.

Reading order (the same as a from-scratch book): token and position embeddings -> causal multi-head
self-attention -> MLP -> pre-LayerNorm transformer block -> the stack of blocks -> language-model head
-> a tiny generation loop with a KV cache.

Names follow GPT-2's checkpoints (`wte`, `wpe`, `h.{i}.ln_1`, `attn.c_attn`, `mlp.c_fc`, `ln_f`,
`lm_head`) so that weights published for GPT-2 load with a copy plus a transpose of four matrices.
If you learned with *Build a Large Language Model (From Scratch)*, the names map as:

    tok_emb -> wte             pos_emb -> wpe              trf_blocks -> h
    norm1/norm2 -> ln_1/ln_2   att.W_query/W_key/W_value -> attn.c_attn (fused, q|k|v)
    att.out_proj -> attn.c_proj  ff.layers[0]/[2] -> mlp.c_fc/mlp.c_proj
    final_norm -> ln_f         out_head -> lm_head

The speed-ups the transformers wrapper uses for the LM head live beside this file (`fast_head.py`),
and so do the checks that turn bad inputs into clear errors (`input_checks.py`).

This file imports nothing but torch and those checks. Two seams let a host library plug in without this file knowing
about it: the *attention function* (any callable with the signature of `sdpa_attention` below) and
the *KV cache* (any object with `update(key, value, layer_idx)` and `get_seq_length()`, which
transformers' `Cache` classes satisfy). `modeling_gptcore.py` fills both from transformers.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .input_checks import check_positions, check_token_ids


@dataclass
class GPTConfig:
    """The hyper-parameters of a GPT-2 model (defaults: the 124M model).

    Any object with these attributes works wherever a config is expected; `GPTCoreConfig` is one.
    """

    vocab_size: int = 50257
    n_positions: int = 1024
    n_embd: int = 768
    n_layer: int = 12
    n_head: int = 12
    n_inner: int | None = None  # MLP width; None means 4 * n_embd
    activation_function: str = "gelu_new"
    resid_pdrop: float = 0.1
    embd_pdrop: float = 0.1
    attn_pdrop: float = 0.1
    layer_norm_epsilon: float = 1e-5
    initializer_range: float = 0.02
    tie_word_embeddings: bool = True


# GPT-2 uses the tanh approximation of GELU ("gelu_new"); exact GELU changes every logit slightly.
# nanoGPT checkpoints were trained with exact GELU, hence the table.
ACTIVATIONS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "gelu_new": partial(F.gelu, approximate="tanh"),
    "gelu_pytorch_tanh": partial(F.gelu, approximate="tanh"),
    "gelu": F.gelu,
    "relu": F.relu,
    "silu": F.silu,
}


# ---------------------------------------------------------------------------------------------
# Attention functions. Signature: (module, query, key, value, attention_mask, dropout, scaling)
# with query/key/value shaped (B, n_head, T, head_dim); they return ((B, T, n_head, head_dim), weights).
# `attention_mask` is None (plain causal), a bool mask (True = may attend) or an additive float mask,
# broadcastable to (B, n_head, T_query, T_key).
# ---------------------------------------------------------------------------------------------


def causal_mask(query_len: int, key_len: int, device: torch.device) -> torch.Tensor:
    """Bool (query_len, key_len) mask; the queries are the *last* query_len of key_len positions."""
    offset = key_len - query_len
    rows = torch.arange(query_len, device=device)[:, None] + offset
    return rows >= torch.arange(key_len, device=device)[None, :]


def eager_attention(
    module: nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    dropout: float = 0.0,
    scaling: float | None = None,
    **kwargs: Any,
) -> tuple[torch.Tensor, torch.Tensor]:
    """softmax(Q K^T / sqrt(d) + mask) V, written out; returns the attention weights too."""
    scaling = query.size(-1) ** -0.5 if scaling is None else scaling
    # Scores and softmax in fp32 even for fp16/bf16 inputs: q.k overflows fp16's range (65504) long before
    # the model is broken, and bf16's 8-bit mantissa blurs attention weights (the fused kernels do the same).
    upcast = query.dtype in (torch.float16, torch.bfloat16)
    q, k = (query.float(), key.float()) if upcast else (query, key)
    scores = torch.matmul(q, k.transpose(-1, -2)) * scaling  # (B, H, Tq, Tk)
    if attention_mask is None:
        attention_mask = causal_mask(query.size(-2), key.size(-2), query.device)
    if attention_mask.dtype == torch.bool:
        scores = scores.masked_fill(~attention_mask, torch.finfo(scores.dtype).min)
    else:
        scores = scores + attention_mask
    weights = torch.softmax(scores, dim=-1).to(value.dtype)
    weights = F.dropout(weights, p=dropout, training=module.training)
    return torch.matmul(weights, value).transpose(1, 2), weights  # (B, Tq, H, D)


def sdpa_attention(
    module: nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    dropout: float = 0.0,
    scaling: float | None = None,
    **kwargs: Any,
) -> tuple[torch.Tensor, None]:
    """The same computation through PyTorch's fused scaled_dot_product_attention (no weights)."""
    q_len, k_len = query.size(-2), key.size(-2)
    is_causal = attention_mask is None and q_len == k_len and q_len > 1
    if attention_mask is None and 1 < q_len < k_len:  # a chunk of queries after cached keys
        attention_mask = causal_mask(q_len, k_len, query.device)
    out = F.scaled_dot_product_attention(
        query, key, value, attn_mask=attention_mask, dropout_p=dropout, is_causal=is_causal, scale=scaling
    )
    return out.transpose(1, 2), None


class KVCache:
    """The simplest KV cache: per layer, keys and values concatenated along the sequence axis."""

    def __init__(self) -> None:
        self.keys: list[torch.Tensor] = []
        self.values: list[torch.Tensor] = []

    def update(self, key: torch.Tensor, value: torch.Tensor, layer_idx: int) -> tuple[torch.Tensor, torch.Tensor]:
        if layer_idx == len(self.keys):
            self.keys.append(key)
            self.values.append(value)
        else:
            self.keys[layer_idx] = torch.cat([self.keys[layer_idx], key], dim=-2)
            self.values[layer_idx] = torch.cat([self.values[layer_idx], value], dim=-2)
        return self.keys[layer_idx], self.values[layer_idx]

    def get_seq_length(self, layer_idx: int = 0) -> int:
        return self.keys[layer_idx].size(-2) if len(self.keys) > layer_idx else 0


# ---------------------------------------------------------------------------------------------
# The model
# ---------------------------------------------------------------------------------------------


class CausalSelfAttention(nn.Module):
    """Multi-head self-attention with one fused projection for queries, keys and values."""

    is_causal = True  # read by transformers' attention functions

    def __init__(self, config: Any, layer_idx: int) -> None:
        super().__init__()
        self.n_head = config.n_head
        self.head_dim = config.n_embd // config.n_head
        self.scaling = self.head_dim**-0.5
        self.layer_idx = layer_idx  # the KV cache stores one entry per layer
        self.c_attn = nn.Linear(config.n_embd, 3 * config.n_embd)  # W_query | W_key | W_value
        self.c_proj = nn.Linear(config.n_embd, config.n_embd)  # out_proj
        self.attn_dropout = nn.Dropout(config.attn_pdrop)
        self.resid_dropout = nn.Dropout(config.resid_pdrop)

    def forward(
        self,
        x: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        cache: Any = None,
        attention_fn: Callable | None = None,
        **attn_kwargs: Any,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        q, k, v = self.project_qkv(x, cache)  # 3 x (B, H, T, D); k, v also hold the cached tokens
        attention_fn = attention_fn or sdpa_attention
        y, weights = attention_fn(
            self,
            q,
            k,
            v,
            attention_mask,
            dropout=self.attn_dropout.p if self.training else 0.0,
            scaling=self.scaling,
            **attn_kwargs,
        )  # (B, T, H, D)
        return self.project_out(y, x.shape), weights

    def project_qkv(self, x: torch.Tensor, cache: Any = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Queries, keys and values, one slice of the channels per head: (B, T, C) -> 3 x (B, H, T, D)."""
        B, T, C = x.shape
        q, k, v = self.c_attn(x).split(C, dim=2)  # 3 x (B, T, C)
        q = q.view(B, T, self.n_head, self.head_dim).transpose(1, 2)  # (B, H, T, D)
        k = k.view(B, T, self.n_head, self.head_dim).transpose(1, 2)
        v = v.view(B, T, self.n_head, self.head_dim).transpose(1, 2)
        if cache is not None:  # keys/values of earlier tokens come back from the cache
            k, v = cache.update(k, v, self.layer_idx)  # (B, H, T_past + T, D)
        return q, k, v

    def project_out(self, y: torch.Tensor, input_shape: torch.Size) -> torch.Tensor:
        """The heads side by side again, through the output projection: (B, T, H, D) -> (B, T, C), the shape of
        the attention's input (an attention function may also return its heads already merged)."""
        return self.resid_dropout(self.c_proj(y.reshape(input_shape)))


class MLP(nn.Module):
    """Position-wise feed-forward network: widen (4x), GELU, project back."""

    def __init__(self, config: Any) -> None:
        super().__init__()
        inner = config.n_inner or 4 * config.n_embd
        if config.activation_function not in ACTIVATIONS:
            raise ValueError(
                f"activation_function={config.activation_function!r} is not supported; use one of {sorted(ACTIVATIONS)}"
            )
        self.c_fc = nn.Linear(config.n_embd, inner)
        self.act = ACTIVATIONS[config.activation_function]
        self.c_proj = nn.Linear(inner, config.n_embd)
        self.dropout = nn.Dropout(config.resid_pdrop)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dropout(self.c_proj(self.act(self.c_fc(x))))  # (B, T, C)


class Block(nn.Module):
    """Pre-LayerNorm transformer block: x + attn(ln_1(x)), then x + mlp(ln_2(x))."""

    attention_class: type[CausalSelfAttention] = CausalSelfAttention  # a host library may use a subclass

    def __init__(self, config: Any, layer_idx: int) -> None:
        super().__init__()
        self.ln_1 = nn.LayerNorm(config.n_embd, eps=config.layer_norm_epsilon)
        self.attn = self.attention_class(config, layer_idx)
        self.ln_2 = nn.LayerNorm(config.n_embd, eps=config.layer_norm_epsilon)
        self.mlp = MLP(config)

    def forward(
        self,
        x: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        cache: Any = None,
        attention_fn: Callable | None = None,
        **attn_kwargs: Any,
    ) -> torch.Tensor:
        x = x + self.attn(self.ln_1(x), attention_mask, cache, attention_fn, **attn_kwargs)[0]
        return x + self.mlp(self.ln_2(x))  # (B, T, C)


class GPTTransformer(nn.Module):
    """Embeddings, the stack of blocks and the final LayerNorm: token ids in, hidden states out.

    `block_class` lets a host library use its own subclass of `Block` (transformers' wrapper adds its
    gradient-checkpointing base class that way); the computation is the same. The wrapper's `GPTCoreModel`
    is a subclass of this class: the same modules, this forward, transformers' arguments around it.
    """

    def __init__(self, config: Any, block_class: type[Block] = Block) -> None:
        super().__init__()
        self.build(config, block_class)

    def build(self, config: Any, block_class: type[Block]) -> None:
        """Create the modules. Separate from `__init__` so that a subclass which is also another library's
        model class (transformers' wrapper is) can initialise that base first, then build the same modules."""
        self.config = config
        self.wte = nn.Embedding(config.vocab_size, config.n_embd)  # token embedding
        self.wpe = nn.Embedding(config.n_positions, config.n_embd)  # learned absolute positions
        self.drop = nn.Dropout(config.embd_pdrop)
        self.h = nn.ModuleList(block_class(config, i) for i in range(config.n_layer))
        self.ln_f = nn.LayerNorm(config.n_embd, eps=config.layer_norm_epsilon)

    def forward(
        self,
        input_ids: torch.Tensor | None = None,
        inputs_embeds: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        cache: Any = None,
        attention_fn: Callable | None = None,
        **attn_kwargs: Any,
    ) -> torch.Tensor:
        if inputs_embeds is None:
            check_token_ids(input_ids, self.config.vocab_size)
            inputs_embeds = self.wte(input_ids)  # (B, T, C)
        past_len = cache.get_seq_length() if cache is not None else 0
        if position_ids is None:
            position_ids = torch.arange(inputs_embeds.size(1), device=inputs_embeds.device) + past_len
            position_ids = position_ids.unsqueeze(0)  # (1, T)
        check_positions(position_ids, self.config.n_positions, past_len if cache is not None else None)
        x = self.drop(inputs_embeds + self.wpe(position_ids))  # (B, T, C)
        for block in self.h:
            # The hidden states go in by position: gradient checkpointing (in a host library) needs that.
            x = block(x, attention_mask, cache=cache, attention_fn=attention_fn, **attn_kwargs)
        return self.ln_f(x)  # (B, T, C)


class GPT(nn.Module):
    """GPTTransformer plus the language-model head, with a plain-PyTorch `generate`."""

    def __init__(self, config: Any) -> None:
        super().__init__()
        self.config = config
        self.transformer = GPTTransformer(config)
        self.lm_head = nn.Linear(config.n_embd, config.vocab_size, bias=False)
        if config.tie_word_embeddings:
            self.lm_head.weight = self.transformer.wte.weight  # one matrix for both ends
        self.apply(partial(init_weights, config=config))

    def forward(
        self,
        input_ids: torch.Tensor,
        targets: torch.Tensor | None = None,
        cache: Any = None,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Logits (B, T, vocab); with `targets` (B, T) also the mean cross-entropy of logits[:, t] against
        targets[:, t]. Targets are the *next* tokens, already shifted, as in nanoGPT and the book:
        `model(ids[:, :-1], targets=ids[:, 1:])`. Positions whose target is -100 are not counted."""
        logits = self.lm_head(self.transformer(input_ids, cache=cache))
        loss = None
        if targets is not None:
            loss = F.cross_entropy(logits.flatten(0, 1).float(), targets.flatten(), ignore_index=-100)
        return logits, loss

    @torch.no_grad()
    def generate(
        self,
        input_ids: torch.Tensor,
        max_new_tokens: int,
        temperature: float = 1.0,
        top_k: int | None = None,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """Append `max_new_tokens` tokens; temperature 0 means greedy. Uses a KV cache."""
        if input_ids.size(1) + max_new_tokens > self.config.n_positions:
            raise ValueError(
                f"prompt ({input_ids.size(1)} tokens) + max_new_tokens ({max_new_tokens}) exceeds "
                f"n_positions={self.config.n_positions}; shorten the prompt or generate fewer tokens"
            )
        cache = KVCache()
        out, new = input_ids, input_ids  # `new`: the tokens the model has not seen yet
        for _ in range(max_new_tokens):
            logits, _ = self(new, cache=cache)  # only the new tokens go through; the rest is cached
            next_logits = logits[:, -1, :]  # (B, vocab)
            if temperature == 0:
                new = next_logits.argmax(dim=-1, keepdim=True)
            else:
                next_logits = next_logits / temperature
                if top_k is not None:
                    kth = torch.topk(next_logits, min(top_k, next_logits.size(-1))).values[:, -1:]
                    next_logits = next_logits.masked_fill(next_logits < kth, float("-inf"))
                new = torch.multinomial(torch.softmax(next_logits, dim=-1), 1, generator=generator)
            out = torch.cat([out, new], dim=1)
        return out


# ---------------------------------------------------------------------------------------------
# Initialisation
# ---------------------------------------------------------------------------------------------


def init_weights(module: nn.Module, config: Any) -> None:
    """GPT-2's scheme: N(0, 0.02) everywhere, LayerNorm at (1, 0), and the two projections that write
    into the residual stream scaled by 1/sqrt(2 * n_layer) so its variance does not grow with depth."""
    std = config.initializer_range
    if isinstance(module, nn.Linear):
        nn.init.normal_(module.weight, mean=0.0, std=std)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.Embedding):
        nn.init.normal_(module.weight, mean=0.0, std=std)
    elif isinstance(module, nn.LayerNorm):
        nn.init.ones_(module.weight)
        nn.init.zeros_(module.bias)
    if isinstance(module, (CausalSelfAttention, MLP)):
        nn.init.normal_(module.c_proj.weight, mean=0.0, std=std / math.sqrt(2 * config.n_layer))
