"""One optimizer step of pretraining: gradients of the global-batch mean loss, then the update (or a skip)."""

from __future__ import annotations

import math
from contextlib import nullcontext
from dataclasses import dataclass

import torch
from gptcore.training.pretraining.state import TrainingRun


@dataclass
class GradientStep:
    train_loss: float  # mean over the global batch: the same number on every process
    grad_norm: float | None  # before clipping; None without clipping (--max_grad_norm 0) or for a non-finite loss
    finite: bool  # whether the update may be applied
    stop_requested: bool  # a signal reached one of the processes


def compute_gradients(run: TrainingRun, step_batches: list[dict], signal_received: bool) -> GradientStep:
    """Accumulate the gradients of one optimizer step over `step_batches` (its micro-batches) and clip them."""
    accelerator = run.accelerator
    loss_contribution = forward_backward(run, step_batches)
    # One all-reduce gives every process the same loss and the same decision to stop.
    stop_flag = torch.tensor(float(signal_received), device=loss_contribution.device)
    reduced = accelerator.reduce(torch.stack([loss_contribution, stop_flag]))
    train_loss, stop_requested = reduced[0].item(), bool(reduced[1].item())
    grad_norm = None
    if math.isfinite(train_loss) and run.args.max_grad_norm > 0:
        grad_norm = accelerator.clip_grad_norm_(run.model.parameters(), run.args.max_grad_norm).item()
    # With fp16 the gradient scaler itself skips steps with inf gradients.
    gradients_finite = grad_norm is None or math.isfinite(grad_norm) or accelerator.mixed_precision == "fp16"
    return GradientStep(train_loss, grad_norm, math.isfinite(train_loss) and gradients_finite, stop_requested)


def forward_backward(run: TrainingRun, step_batches: list[dict]) -> torch.Tensor:
    """Accumulate the gradient of the global-batch mean loss; return this process's contribution to that mean."""
    accelerator, model = run.accelerator, run.model
    # Every token but a block's first is a target. Dividing each micro-batch's summed loss by the global
    # count makes the sum over micro-batches and processes exactly the mean over the global batch.
    n_targets = accelerator.reduce(sum((batch["input_ids"][:, 1:] != -100).sum() for batch in step_batches), "sum")
    loss_contribution = torch.zeros((), device=accelerator.device)
    for index, batch in enumerate(step_batches):
        input_ids = batch["input_ids"]
        last = index == len(step_batches) - 1
        with nullcontext() if last else accelerator.no_sync(model):  # gradients are all-reduced once, after the last
            loss = model(
                input_ids=input_ids, labels=input_ids, position_ids=run.position_ids(input_ids),
                use_cache=False,  # the packed-document mask comes from position_ids only when there is no cache
                num_items_in_batch=n_targets,
            ).loss  # fmt: skip
            accelerator.backward(loss * accelerator.num_processes)  # DDP/FSDP average gradients over processes
        loss_contribution += loss.detach()
    return loss_contribution


def apply_update(run: TrainingRun, step: GradientStep) -> float:
    """The optimizer step (skipped when `step` is not finite) and the schedule's; returns the learning rate used."""
    learning_rate = run.scheduler.get_last_lr()[0]
    if step.finite:
        run.optimizer.step()
    else:
        run.accelerator.print(f"Skipping step {run.progress.step + 1}: loss {step.train_loss}, gradient norm {step.grad_norm}")
    run.scheduler.step()
    run.optimizer.zero_grad(set_to_none=True)
    return learning_rate
