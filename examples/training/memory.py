"""Parameters, FLOPs and memory of a GPT-2-architecture model, from its config alone (no weights built).

Activation memory is counted tensor by tensor: for each operation of a block, the tensors autograd keeps
for the backward pass (what `torch.autograd.graph.saved_tensors_hooks` reports for gptcore's modules in
PyTorch 2.x), with the dtype each one has under the chosen precision. Nothing here is fitted to
measurements; `memory_measurement` runs real steps to compare against (`estimate.py --measure`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

PRECISIONS = ("fp32", "bf16-mixed", "fp16-mixed", "bf16")


@dataclass(frozen=True)
class TrainingSetup:
    """How one optimizer step runs, as far as its memory goes: what the estimate assumes and a measurement runs."""

    batch: int
    seq_len: int
    precision: str = "fp32"  # one of PRECISIONS
    gradient_checkpointing: bool = False
    device: str = "cpu"  # "cuda", or anything else for PyTorch's CPU kernels, which keep other tensors
    attention: str = "sdpa"  # or "eager"


def format_bytes(n: float) -> str:
    """`n` bytes in GiB, or in MiB below a quarter GiB, where GiB would show too few digits."""
    return f"{n / 2**30:.3f} GiB" if n >= 2**28 else f"{n / 2**20:.1f} MiB"


@dataclass(frozen=True)
class Dtypes:
    """Bytes per element of each kind of tensor under one precision mode."""

    param: int  # weights, gradients and AdamW states (which are created like the weights)
    compute: int  # matmul inputs/outputs, attention, MLP activations
    residual: int  # the residual stream: under autocast, fp32 + bf16 stays fp32


def dtypes(precision: str) -> Dtypes:
    if precision == "fp32":
        return Dtypes(param=4, compute=4, residual=4)
    if precision in ("bf16-mixed", "fp16-mixed"):  # torch.autocast: fp32 weights, 16-bit matmuls
        return Dtypes(param=4, compute=2, residual=4)
    if precision == "bf16":  # model.to(torch.bfloat16): everything 16-bit, AdamW states too
        return Dtypes(param=2, compute=2, residual=2)
    raise ValueError(f"unknown precision {precision!r}; use one of {', '.join(PRECISIONS)}")


@dataclass(frozen=True)
class Shape:
    n_layer: int
    n_head: int
    n_embd: int
    n_inner: int
    vocab_size: int
    n_positions: int
    tied: bool
    attn_pdrop: float
    resid_pdrop: float
    embd_pdrop: float

    @classmethod
    def from_config(cls, config: Any) -> Shape:
        return cls(
            n_layer=config.n_layer,
            n_head=config.n_head,
            n_embd=config.n_embd,
            n_inner=config.n_inner or 4 * config.n_embd,
            vocab_size=config.vocab_size,
            n_positions=config.n_positions,
            tied=getattr(config, "tie_word_embeddings", True),
            attn_pdrop=config.attn_pdrop,
            resid_pdrop=config.resid_pdrop,
            embd_pdrop=config.embd_pdrop,
        )

    @property
    def block_params(self) -> int:
        C, I = self.n_embd, self.n_inner
        return 2 * 2 * C + (C * 3 * C + 3 * C) + (C * C + C) + (C * I + I) + (I * C + C)

    @property
    def matmul_params(self) -> int:
        """Weights that go through a matrix product (the ones autocast copies to 16 bits), LM head included."""
        C, I = self.n_embd, self.n_inner
        return self.n_layer * (3 * C * C + C * C + 2 * C * I) + self.vocab_size * C

    @property
    def params(self) -> int:
        C, V = self.n_embd, self.vocab_size
        embeddings = V * C + self.n_positions * C
        return embeddings + self.n_layer * self.block_params + 2 * C + (0 if self.tied else V * C)


def flops_per_token(shape: Shape, seq_len: int) -> dict[str, int]:
    """Matmul FLOPs (2 per multiply-add) per token at context `seq_len`, as Kaplan et al. (2020) count them,
    plus the LM head; attention counts the full T x T product, as the kernels compute it."""
    C, I, L = shape.n_embd, shape.n_inner, shape.n_layer
    per_layer = 2 * (3 * C * C + C * C + 2 * C * I) + 2 * 2 * seq_len * C
    forward = L * per_layer + 2 * C * shape.vocab_size
    return {
        "forward": forward,
        "train": 3 * forward,  # backward costs two forwards: gradients w.r.t. inputs and w.r.t. weights
        "train_with_checkpointing": 4 * forward,  # plus one recomputed forward
    }


def _attention_is_fused(shape: Shape, attention: str, device: str) -> bool:
    if attention == "eager":
        return False
    if attention != "sdpa":
        raise ValueError(f"attention must be 'sdpa' or 'eager', got {attention!r}")
    # PyTorch's CPU flash kernel has no dropout, so SDPA falls back to its math path (which materialises
    # the T x T probabilities) when training with attn_pdrop > 0; the CUDA kernels apply dropout inside.
    return device == "cuda" or shape.attn_pdrop == 0


def _materialized_bytes(d: Dtypes, attention: str) -> int:
    """Element size of the q/k/v copies and T x T tensors of attention computed without a fused kernel."""
    # PyTorch's SDPA math path upcasts 16-bit inputs to fp32 (unless allow_fp16_bf16_reduction_math_sdp);
    # gptcore's eager attention computes in the input's dtype.
    return 4 if attention == "sdpa" else d.compute


def block_activation_bytes(shape: Shape, setup: TrainingSetup) -> dict[str, int]:
    """Bytes one transformer block keeps for its backward pass, for its attention half and its MLP half."""
    d, device, attention, batch, seq_len = dtypes(setup.precision), setup.device, setup.attention, setup.batch, setup.seq_len
    N, C, I, H = batch * seq_len, shape.n_embd, shape.n_inner, shape.n_head
    scores = batch * H * seq_len * seq_len
    # CPU dropout multiplies by a noise tensor of the input's dtype and keeps it; CUDA keeps a bool mask.
    mask = 1 if device == "cuda" else d.compute
    stats = 2 * d.residual * N  # LayerNorm's mean and 1/std per position
    residual_dropout = mask * N * C if shape.resid_pdrop > 0 else 0

    attn = d.residual * N * C + stats  # ln_1 input (the residual stream)
    attn += d.compute * N * C  # ln_1 output = c_attn input
    if _attention_is_fused(shape, attention, device):
        # The kernel keeps q, k, v (views of the fused c_attn output), its output (which is also the
        # c_proj input) and the log-sum-exp per query.
        attn += d.compute * 3 * N * C + d.compute * N * C + 4 * batch * H * seq_len
    else:
        # Contiguous copies of q, k^T, v for the batched matmuls, the softmax probabilities, and the c_proj input.
        a = _materialized_bytes(d, attention)
        attn += a * 3 * N * C + a * scores + d.compute * N * C
        if shape.attn_pdrop > 0:
            attn += (1 if device == "cuda" else a) * scores + a * scores  # the dropout mask, the dropped probabilities
    attn += residual_dropout

    mlp = d.residual * N * C + stats  # ln_2 input
    mlp += d.compute * N * C  # ln_2 output = c_fc input
    mlp += 2 * d.compute * N * I  # c_fc output (GELU input) and GELU output (c_proj input)
    mlp += residual_dropout
    return {"attention": attn, "mlp": mlp, "total": attn + mlp}


def block_backward_peak_bytes(shape: Shape, setup: TrainingSetup) -> int:
    """The most one block holds during its own backward pass: what it saved and has not freed yet, plus the
    gradients alive at once. The MLP half runs first and frees what it saved, then the attention half.

    Each node frees its saved tensors once it has run, so in a chain of elementwise ops (GELU; softmax then
    dropout) at most three tensors of that size are alive at once: a saved input, the incoming gradient
    and the outgoing one.
    """
    d, device, attention, batch, seq_len = dtypes(setup.precision), setup.device, setup.attention, setup.batch, setup.seq_len
    N, C, I = batch * seq_len, shape.n_embd, shape.n_inner
    saved = block_activation_bytes(shape, setup)
    residual_grads = 2 * d.residual * N * C  # the gradient flowing down the residual stream, and its update
    # GELU's input and output are saved; backward holds GELU's input, the gradient w.r.t. its output, and w.r.t. its input.
    mlp = saved["total"] - 2 * d.compute * N * I + 3 * d.compute * N * I
    if _attention_is_fused(shape, attention, device):
        attn = saved["attention"] + 4 * d.compute * N * C  # gradients w.r.t. the kernel output, q, k and v
    else:
        a = _materialized_bytes(d, attention)
        scores = a * batch * shape.n_head * seq_len * seq_len
        kept_scores = scores  # the probabilities, and with dropout its mask and the dropped probabilities
        if shape.attn_pdrop > 0:
            kept_scores += scores + (scores // a if device == "cuda" else scores)
        # The product with v adds one gradient of that size to all of them; softmax's backward then holds three.
        attn = saved["attention"] - kept_scores + max(kept_scores + scores, 3 * scores) + a * N * C
    return residual_grads + max(mlp, attn)


def training_memory(shape: Shape, setup: TrainingSetup) -> dict[str, int]:
    """Bytes for one optimizer step of AdamW (gradients set to None between steps, as Trainer does).

    The peak is the largest of the moments a step goes through: the backward pass through the LM head (all
    activations still kept), through the last block, and the end (all gradients, then the optimizer update).
    """
    precision, gradient_checkpointing, seq_len = setup.precision, setup.gradient_checkpointing, setup.seq_len
    if seq_len > shape.n_positions:
        raise ValueError(f"seq_len {seq_len} exceeds n_positions={shape.n_positions}; pass a shorter --seq_len")
    d = dtypes(precision)
    N, C, V, L = setup.batch * seq_len, shape.n_embd, shape.vocab_size, shape.n_layer
    P = shape.params
    weights = d.param * P
    gradients = d.param * P
    optimizer = 2 * d.param * P  # AdamW's exp_avg and exp_avg_sq
    # Autocast caches the 16-bit copy of each weight it casts; the copies stay alive, saved for backward.
    autocast_weights = 2 * shape.matmul_params if precision.endswith("-mixed") else 0

    block = block_activation_bytes(shape, setup)["total"]
    mask = 1 if setup.device == "cuda" else d.residual  # the embedding output has the weights' dtype
    # Outside the blocks: token and position ids (int64) for the embedding backward, the embedding dropout
    # mask, ln_f's input and statistics, and the LM head's input.
    outer = 8 * N + 8 * seq_len + (mask * N * C if shape.embd_pdrop > 0 else 0)
    outer += d.residual * N * C + 2 * d.residual * N + d.compute * N * C
    # gptcore computes the LM head and the cross-entropy in one step (core.LMHeadCrossEntropy): it keeps the
    # logits, one fp32 log-sum-exp per position and the targets, and never builds the softmax or its
    # gradient for the whole batch, only for slices of the vocabulary of about 2**22 elements.
    head = d.compute * N * V + 4 * N + 8 * N + N
    slice_elements = min(V, max(1024, 2**22 // N)) * N
    head_backward = (
        d.compute * V * C  # the LM-head (tied: token-embedding) weight gradient, filled slice by slice
        + d.compute * N * C  # the gradient w.r.t. its input
        # softmax - one_hot of a slice in fp32 (+ its 16-bit cast); the next slice is built while the
        # previous one is still referenced, so two are alive at once
        + 2 * slice_elements * (4 + (d.compute if d.compute != 4 else 0))
    )
    if gradient_checkpointing:
        kept_blocks = L * d.residual * N * C  # each block keeps only its input and recomputes the rest
        # The last block's activations are rebuilt during its backward (its input is already counted as kept).
        last_block = block_backward_peak_bytes(shape, setup) - d.residual * N * C
    else:
        kept_blocks = L * block
        last_block = block_backward_peak_bytes(shape, setup)
    activations = kept_blocks + outer + head

    head_grads = d.param * (V * C + 2 * C)  # LM-head (tied: token-embedding) and ln_f gradients exist by then
    phases = {
        "backward_head": activations + head_backward + autocast_weights,
        "backward_last_block": kept_blocks - (0 if gradient_checkpointing else block) + last_block + outer
        + head_grads + autocast_weights,
        # The embedding backward builds a dense (V, C) gradient before adding it to the existing one.
        "backward_end": gradients + d.param * V * C,
        # Single-tensor AdamW (PyTorch's default on CPU) makes ~2 temporaries the size of one weight.
        "optimizer_step": gradients + 2 * d.param * V * C,
    }
    phase = max(phases, key=phases.get)
    peak = weights + optimizer + phases[phase]
    return {
        "params": P,
        "weights": weights,
        "gradients": gradients,
        "optimizer_states": optimizer,
        "activations": activations,
        "activations_per_block": block,
        "autocast_weight_copies": autocast_weights,
        "peak": peak,
        "peak_phase": phase,
    }


def inference_memory(
    shape: Shape, batch: int, context: int, precision: str = "fp32", device: str = "cpu", attention: str = "sdpa"
) -> dict[str, int]:
    """Bytes to generate with a KV cache up to `context` tokens (prompt + new tokens), batch `batch`."""
    if context > shape.n_positions:
        raise ValueError(f"context {context} exceeds n_positions={shape.n_positions}; generate fewer tokens")
    # Inference has no master weights: 16-bit modes keep the weights and cache in 16 bits.
    width = 4 if precision == "fp32" else 2
    N, C, I, H = batch * context, shape.n_embd, shape.n_inner, shape.n_head
    weights = width * shape.params
    kv_cache = 2 * shape.n_layer * N * C * width  # keys and values, every layer, every position
    # Prefill runs the whole prompt through one block at a time without keeping anything for backward: the
    # residual stream plus the widest intermediate (the MLP hidden pair or attention's q, k, v, output).
    fused = attention == "sdpa"
    attention_live = 4 * N * C + (0 if fused else 2 * batch * H * context * context)
    prefill = width * (N * C + max(2 * N * I, attention_live))
    logits = 4 * batch * shape.vocab_size  # generate() asks for the last position's logits only, upcast to fp32
    return {
        "params": shape.params,
        "weights": weights,
        "kv_cache": kv_cache,
        "kv_cache_per_token": 2 * shape.n_layer * C * width,
        "prefill_activations": prefill,
        "peak": weights + kv_cache + prefill + logits,
    }
