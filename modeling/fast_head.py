"""Two speed-ups for the language-model head, beside the model in core.py; both compute exactly what
`nn.Linear` (and `F.cross_entropy`) would.

- `lm_head_cross_entropy`: the head's product and the training loss in one autograd step, which never builds
  the softmax or d(loss)/d(logits) of the whole batch at once (the largest tensors of a small model's step).
- `lm_head_logits`: the head's product laid out the way a CPU computes fastest when there are few rows.

Imports nothing but torch, like the core.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

# The backward pass works on the logits in slices of about this many elements (16 MB in fp32): a bounded
# temporary the allocator can reuse from one slice and one step to the next, instead of one as large as the logits.
_CHUNK_ELEMENTS = 2**22


class LMHeadCrossEntropy(torch.autograd.Function):
    """`logits = x @ weight.T` and the *summed* cross-entropy of `targets`, without the big temporaries.

    `F.cross_entropy(logits, targets)` keeps the log-softmax of every logit for the backward pass and then
    builds d(loss)/d(logits) of the same size: at batch 4 x 256 with GPT-2's 50257-token vocabulary that is
    two more 206 MB tensors (plus a zero-filled one) per step, and several passes over them. Here the
    forward pass keeps only the logits (which the caller returns anyway) and one log-sum-exp per position;
    the backward pass rebuilds `softmax - one_hot` a slice of the vocabulary at a time and multiplies each
    slice straight into the gradients of `x` and `weight`. A gradient that reaches the returned logits
    through some other use of them is added slice by slice, so the logits stay an ordinary output, in
    `nn.Linear`'s layout.

    x: (N, C); weight: (V, C); targets: (N,) with `ignore_index` for positions without a target.
    Returns logits (N, V) in x's dtype and the loss summed over the positions with a target.
    """

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor, ignore_index: int) -> Any:
        ctx.set_materialize_grads(False)  # a None gradient means "the logits were not used"
        logits = x @ weight.t()  # (N, V)
        acc = torch.promote_types(logits.dtype, torch.float32)  # softmax in fp32 even for bf16 logits
        width = _slice_width(*logits.shape[::-1])
        top = logits.amax(dim=1).to(acc)  # (N,) log-sum-exp = top + log(sum(exp(logits - top)))
        total = sum((part.to(acc) - top[:, None]).exp_().sum(dim=1) for part in logits.split(width, dim=1))
        lse = top + torch.log(total)  # (N,)
        has_target = targets != ignore_index
        safe_targets = targets.masked_fill(~has_target, 0)
        target_logits = logits.gather(1, safe_targets[:, None]).squeeze(1).to(acc)  # (N,)
        loss = torch.where(has_target, lse - target_logits, 0.0).sum()
        ctx.save_for_backward(x, weight, logits, lse, safe_targets, has_target)
        return logits, loss

    @staticmethod
    def backward(ctx: Any, grad_logits: torch.Tensor | None, grad_loss: torch.Tensor | None) -> Any:
        x, weight, logits, lse, safe_targets, has_target = ctx.saved_tensors
        n, vocab = logits.shape
        # d(loss)/d(logit) = grad_loss * (softmax - one_hot) on positions with a target, else 0.
        scale = (has_target * (grad_loss.to(lse.dtype) if grad_loss is not None else 0.0))[:, None]  # (N, 1)
        grad_x = torch.zeros_like(x) if ctx.needs_input_grad[0] else None
        grad_weight = torch.empty_like(weight) if ctx.needs_input_grad[1] else None
        width = _slice_width(vocab, n)
        for start in range(0, vocab, width):
            end = min(vocab, start + width)
            g = (logits[:, start:end].to(lse.dtype) - lse[:, None]).exp_().mul_(scale)  # (N, width) scaled softmax
            in_slice = ((safe_targets >= start) & (safe_targets < end))[:, None]
            column = (safe_targets - start).clamp(0, end - start - 1)[:, None]
            g.scatter_add_(1, column, -(scale * in_slice))  # minus the one_hot
            if grad_logits is not None:
                g += grad_logits[:, start:end]
            g = g.to(weight.dtype)
            if grad_x is not None:
                grad_x.addmm_(g, weight[start:end])  # (N, C)
            if grad_weight is not None:
                torch.mm(g.t(), x, out=grad_weight[start:end])  # (width, C)
        return grad_x, grad_weight, None, None


def _slice_width(vocab: int, n: int) -> int:
    """Vocabulary entries per slice: about _CHUNK_ELEMENTS logits, but at least 1024 entries per matmul."""
    return min(vocab, max(1024, _CHUNK_ELEMENTS // n))


def lm_head_logits(x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """`F.linear(x, weight)` for the language-model head, computed on CPU as `(weight @ x.T).T` for few
    rows: the same product, but CPU BLAS libraries run a skinny product faster with the long vocabulary axis
    first (a decode step's (batch, n_embd) x (n_embd, vocab) product above all). Returned contiguous, like
    F.linear's result; for many rows that copy costs more than the faster product gains, so those go through
    F.linear."""
    rows = x.numel() // x.size(-1)
    if x.device.type != "cpu" or rows > x.size(-1) // 2:
        return F.linear(x, weight)
    logits_t = weight @ x.reshape(-1, x.size(-1)).t()  # (V, N)
    return logits_t.t().contiguous().view(*x.shape[:-1], weight.size(0))


def lm_head_cross_entropy(
    x: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor, ignore_index: int = -100
) -> tuple[torch.Tensor, torch.Tensor]:
    """(logits, summed cross-entropy) = what `F.linear(x, weight)` and `F.cross_entropy(..., reduction="sum")`
    give, computed by `LMHeadCrossEntropy`. x: (..., C); targets: x's leading shape; logits: (..., V)."""
    lead = x.shape[:-1]
    if torch.is_autocast_enabled(x.device.type):  # cast as autocast would cast F.linear's inputs
        dtype = torch.get_autocast_dtype(x.device.type)
        x, weight = x.to(dtype), weight.to(dtype)
    with torch.autocast(x.device.type, enabled=False):
        logits, loss = LMHeadCrossEntropy.apply(x.reshape(-1, x.size(-1)), weight, targets.reshape(-1), ignore_index)
    return logits.view(*lead, -1), loss
