"""Parameters, FLOPs and memory of a GPT-2-architecture model, from its config alone (no weights built).

Activation memory is counted tensor by tensor: for each operation of a block, the tensors autograd keeps
for the backward pass (what `torch.autograd.graph.saved_tensors_hooks` reports for gptcore's modules in
PyTorch 2.x), with the dtype each one has under the chosen precision. Nothing here is fitted to
measurements; examples/benchmarking/memory_measurement.py runs real steps to compare against
(`estimate.py --measure`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

PRECISIONS = ("fp32", "bf16-mixed", "fp16-mixed", "bf16")
# What trains and how the base is stored (gptcore.training.memory_saving's flags): all weights with AdamW; LoRA adapters
# on a float base, on a bitsandbytes 4-bit (nf4) or 8-bit base, or on a torchao int8 base; all weights with GaLore.
FINETUNING_MODES = ("full", "lora", "qlora-4bit", "qlora-8bit", "int8-lora", "galore")
LORA_BASES = ("lora", "qlora-4bit", "qlora-8bit", "int8-lora")  # a frozen base under LoRA adapters


@dataclass(frozen=True)
class TrainingSetup:
    """How one optimizer step runs, as far as its memory goes: what the estimate assumes and a measurement runs."""

    batch: int
    seq_len: int
    precision: str = "fp32"  # one of PRECISIONS
    gradient_checkpointing: bool = False
    device: str = "cpu"  # "cuda", or anything else for PyTorch's CPU kernels, which keep other tensors
    attention: str = "sdpa"  # or "eager"
    finetuning: str = "full"  # one of FINETUNING_MODES
    lora_r: int = 16  # LoRA's rank, and its dropout (the scripts' defaults: gptcore.training.lora)
    lora_dropout: float = 0.05
    galore_rank: int = 128  # GaLore's rank (the scripts' default: gptcore.training.memory_saving)


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


def block_matrices(shape: Shape) -> list[tuple[int, int]]:
    """(out, in) of each block's matrices: attn.c_attn, attn.c_proj, mlp.c_fc, mlp.c_proj (what LoRA adapts, what
    the quantising modes quantise and GaLore projects)."""
    C, I = shape.n_embd, shape.n_inner
    return [(3 * C, C), (C, C), (I, C), (C, I)]


def quantized_matrix_bytes(out_features: int, in_features: int, finetuning: str) -> int:
    """Bytes of one (out, in) weight matrix as the mode stores the frozen base."""
    n = out_features * in_features
    if finetuning == "qlora-4bit":
        # nf4: two weights a byte; double quantisation: one 8-bit scale per block of 64 weights and one fp32 scale per
        # 256 of those blocks.
        blocks = -(-n // 64)
        return n // 2 + blocks + 4 * -(-blocks // 256)
    if finetuning == "qlora-8bit":  # bitsandbytes LLM.int8: int8 weights and an fp32 scale per output row
        return n + 4 * out_features
    if finetuning == "int8-lora":  # torchao int8 weight-only: int8 weights, an fp32 scale and an int8 zero point a row
        return n + 5 * out_features
    return 4 * n


def trainable_params(shape: Shape, setup: TrainingSetup) -> int:
    """Parameters that get gradients and optimizer states: all of them, or the LoRA adapters (A: r x in, B: out x r
    on every block matrix)."""
    if setup.finetuning in LORA_BASES:
        return shape.n_layer * setup.lora_r * sum(o + i for o, i in block_matrices(shape))
    return shape.params


def galore_state_elements(shape: Shape, rank: int) -> int:
    """GaLore AdamW's state for the blocks' matrices: for an (m, n) matrix and k = min(rank, m, n), the two moments of
    the projected gradient (max(m, n) x k each) and the projection (min(m, n) x k)."""
    total = 0
    for m, n in block_matrices(shape):
        k = min(rank, m, n)
        total += 2 * max(m, n) * k + min(m, n) * k
    return shape.n_layer * total


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
    d, device, attention = dtypes(setup.precision), setup.device, setup.attention
    batch, seq_len = setup.batch, setup.seq_len
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
    d, device, attention = dtypes(setup.precision), setup.device, setup.attention
    batch, seq_len = setup.batch, setup.seq_len
    N, C, I = batch * seq_len, shape.n_embd, shape.n_inner
    saved = block_activation_bytes(shape, setup)
    residual_grads = 2 * d.residual * N * C  # the gradient flowing down the residual stream, and its update
    # GELU's input and output are saved; backward holds GELU's input, the gradient w.r.t. its output, and w.r.t. its
    # input.
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
    """Bytes for one optimizer step of AdamW (gradients set to None between steps, as Trainer does), on what
    `setup.finetuning` trains: weights in the size the mode stores them, gradients and AdamW states for what trains
    only (GaLore: low-rank states for the blocks' matrices).

    The peak is the largest of the moments a step goes through: the backward pass through the LM head (all
    activations still kept), through the last block, and the end (all gradients, then the optimizer update).
    """
    precision, gradient_checkpointing, seq_len = setup.precision, setup.gradient_checkpointing, setup.seq_len
    mode = setup.finetuning
    if seq_len > shape.n_positions:
        raise ValueError(f"seq_len {seq_len} exceeds n_positions={shape.n_positions}; pass a shorter --seq_len")
    if mode not in FINETUNING_MODES:
        raise ValueError(f"unknown fine-tuning mode {mode!r}; use one of {', '.join(FINETUNING_MODES)}")
    if mode != "full" and precision != "fp32":
        raise ValueError(f"the estimate of {mode} fine-tuning covers fp32 training only; pass --precision fp32")
    d = dtypes(precision)
    N, C, V, L, I = setup.batch * seq_len, shape.n_embd, shape.vocab_size, shape.n_layer, shape.n_inner
    P = shape.params
    frozen = mode in LORA_BASES  # the base is frozen; only the adapters train
    matrices = L * sum(o * i for o, i in block_matrices(shape))
    trainable = trainable_params(shape, setup)
    weights = d.param * P
    if frozen:
        base_matrices = L * sum(quantized_matrix_bytes(o, i, mode) for o, i in block_matrices(shape))
        weights += base_matrices - d.param * matrices + d.param * trainable
    gradients = d.param * trainable
    optimizer = 2 * d.param * trainable  # AdamW's exp_avg and exp_avg_sq
    if mode == "galore":  # full states for what is outside the blocks' matrices (the tied head among it)
        optimizer = 2 * d.param * (P - matrices) + d.param * galore_state_elements(shape, setup.galore_rank)
    # Autocast caches the 16-bit copy of each weight it casts; the copies stay alive, saved for backward.
    autocast_weights = 2 * shape.matmul_params if precision.endswith("-mixed") else 0

    block = block_activation_bytes(shape, setup)["total"]
    mask = 1 if setup.device == "cuda" else d.residual  # the embedding output has the weights' dtype
    # Outside the blocks: token and position ids (int64) for the embedding backward, the embedding dropout
    # mask, ln_f's input and statistics, and the LM head's input.
    embedding_mask = mask * N * C if shape.embd_pdrop > 0 else 0
    outer = 8 * N + 8 * seq_len + embedding_mask
    outer += d.residual * N * C + 2 * d.residual * N + d.compute * N * C
    first_block_saving = 0  # what the first block need not keep when nothing before it trains
    if frozen:
        # A frozen layer keeps no input (autograd saves what a weight gradient needs only when one is computed); each
        # adapter keeps its input after its dropout and the dropout's mask (CPU: of the input's dtype), and its
        # rank-r middle. The inputs of the four adapted layers: 3 of width C, the MLP's c_proj's of width I.
        inputs = d.compute * N * (3 * C + I)
        dropout = setup.lora_dropout > 0
        block += inputs * (2 if dropout else 1) + d.compute * N * 4 * setup.lora_r - inputs
        if mode == "int8-lora":
            # torchao's int8 linear keeps the dequantised float weight for the gradient w.r.t. its input.
            block += d.compute * sum(o * i for o, i in block_matrices(shape))
        if mode == "qlora-8bit":  # bitsandbytes' 8-bit layer keeps its input, which the frozen float one does not
            block += inputs
        # Up to the first adapter nothing needs a gradient: no embedding dropout mask, and the first block's ln_1 and
        # c_attn keep nothing (its LoRA dropout mask, its int8 weight copy).
        outer -= embedding_mask
        first_block_saving = d.residual * N * C + 2 * d.residual * N + (mask * N * C if dropout else 0)
        if mode == "int8-lora":
            first_block_saving += d.compute * 3 * C * C
        if mode == "qlora-8bit":
            first_block_saving += d.compute * N * C
    # gptcore computes the LM head and the cross-entropy in one step (core.LMHeadCrossEntropy): it keeps the
    # logits, one fp32 log-sum-exp per position and the targets, and never builds the softmax or its
    # gradient for the whole batch, only for slices of the vocabulary of about 2**22 elements.
    head = d.compute * N * V + 4 * N + 8 * N + N
    slice_elements = min(V, max(1024, 2**22 // N)) * N
    head_backward = (
        (0 if frozen else d.compute * V * C)  # the LM-head (tied: token-embedding) weight gradient, slice by slice
        + d.compute * N * C  # the gradient w.r.t. its input
        # softmax - one_hot of a slice in fp32 (+ its 16-bit cast); the next slice is built while the
        # previous one is still referenced, so two are alive at once
        + 2 * slice_elements * (4 + (d.compute if d.compute != 4 else 0))
    )
    block_peak = block_backward_peak_bytes(shape, setup) + (block - block_activation_bytes(shape, setup)["total"])
    if gradient_checkpointing:
        kept_blocks = L * d.residual * N * C  # each block keeps only its input and recomputes the rest
        # The last block's activations are rebuilt during its backward (its input is already counted as kept).
        last_block = block_peak - d.residual * N * C
    else:
        kept_blocks = L * block - first_block_saving
        last_block = block_peak
    activations = kept_blocks + outer + head
    # bitsandbytes dequantises a frozen matrix into a float copy for each product, one layer at a time.
    dequantized = 4 * max(o * i for o, i in block_matrices(shape)) if mode in ("qlora-4bit", "qlora-8bit") else 0

    # LM-head (tied: token-embedding) and ln_f gradients exist by then; with a frozen base, some adapters' ones.
    head_grads = gradients if frozen else d.param * (V * C + 2 * C)
    # The largest tensor the optimizer updates: single-tensor AdamW (PyTorch's default on CPU; GaLore's AdamW alike)
    # makes ~2 temporaries its size.
    largest = setup.lora_r * max(I, 3 * C) if frozen else V * C
    phases = {
        "backward_head": activations + head_backward + autocast_weights,
        "backward_last_block": kept_blocks
        - (0 if gradient_checkpointing else block)
        + last_block
        + outer
        + head_grads
        + autocast_weights
        + dequantized,
        # The embedding backward builds a dense (V, C) gradient before adding it to the existing one.
        "backward_end": gradients + (0 if frozen else d.param * V * C),
        "optimizer_step": gradients + 2 * d.param * largest,
    }
    phase = max(phases, key=phases.get)
    peak = weights + optimizer + phases[phase]
    return {
        "params": P,
        "trainable_params": trainable,
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
