"""The step loop of pretraining: optimizer steps until --max_steps, evaluating and saving checkpoints as scheduled."""

from __future__ import annotations

import signal
import sys
import time
from dataclasses import dataclass

from gptcore.training.pretraining.checkpoints import StopOnSignal, save_checkpoint
from gptcore.training.pretraining.data import micro_batches
from gptcore.training.pretraining.evaluation import Evaluation, evaluate_and_sample
from gptcore.training.pretraining.report import plot_loss_curve
from gptcore.training.pretraining.state import TrainingRun
from gptcore.training.pretraining.step import GradientStep, apply_update, compute_gradients
from tqdm.auto import tqdm


@dataclass
class TrainingEnd:
    exit_code: int  # 0: --max_steps reached; 1: stopped by a non-finite loss; 128 + N: stopped by signal N
    last_evaluation: Evaluation | None = None  # that of the last step, unless the run had no step left to do


def train(run: TrainingRun) -> TrainingEnd:
    """Train from where `run.progress` stands. SIGINT/SIGTERM end the run after the current step, with a
    checkpoint; a non-finite loss ends it at once, unless --skip_nonfinite_steps."""
    args, progress = run.args, run.progress
    announce(run)
    batches = micro_batches(run.train_loader, progress, run.accelerator)
    bar = tqdm(total=args.max_steps, initial=progress.step, desc="Pretraining", disable=not run.accelerator.is_local_main_process)
    evaluation, started = None, time.perf_counter()
    with StopOnSignal() as stop:
        while progress.step < args.max_steps:
            step_batches = [next(batches) for _ in range(args.gradient_accumulation_steps)]
            step = compute_gradients(run, step_batches, signal_received=stop.signum is not None)
            if not step.finite and not args.skip_nonfinite_steps:
                bar.close()
                report_nonfinite_loss(run, step)
                return TrainingEnd(exit_code=1)
            learning_rate = apply_update(run, step)
            record_step(run, step, learning_rate, time.perf_counter() - started)
            bar.update(1)
            bar.set_postfix(loss=f"{step.train_loss:.3f}")
            if progress.step % args.eval_steps == 0 or progress.step == args.max_steps:
                evaluation = evaluate_and_sample(run)
                record_evaluation(run, evaluation, bar)
            if (args.save_steps and progress.step % args.save_steps == 0) or step.stop_requested:
                save_checkpoint(run.accelerator, run.checkpoints_dir, progress, args.save_total_limit)
            if step.stop_requested:
                bar.close()
                report_stop(run)
                return TrainingEnd(exit_code=128 + (stop.signum or signal.SIGTERM))  # the signal may have reached another process
    bar.close()
    return TrainingEnd(exit_code=0, last_evaluation=evaluation)


def announce(run: TrainingRun) -> None:
    accelerator, args = run.accelerator, run.args
    processes = f"1 process ({accelerator.device})"
    if accelerator.num_processes > 1:
        processes = f"{accelerator.num_processes} processes ({accelerator.distributed_type.value}, {accelerator.device.type})"
    accelerator.print(
        f"Training {run.num_parameters / 1e6:.1f}M parameters: {args.max_steps} steps of {args.batch_size} x {args.block_size} "
        f"tokens, {processes}, mixed precision {accelerator.mixed_precision}"
    )


def record_step(run: TrainingRun, step: GradientStep, learning_rate: float, elapsed_s: float) -> None:
    progress = run.progress
    progress.step += 1
    progress.tokens_seen += run.args.batch_size * run.args.block_size
    run.metrics.write(
        step=progress.step, train_loss=step.train_loss, lr=learning_rate, grad_norm=step.grad_norm, skipped=not step.finite,
        tokens_seen=progress.tokens_seen, elapsed_s=round(elapsed_s, 3),
    )  # fmt: skip


def record_evaluation(run: TrainingRun, evaluation: Evaluation, bar: tqdm) -> None:
    run.metrics.write(step=evaluation.step, val_loss=evaluation.val_loss, val_perplexity=evaluation.perplexity)
    if run.accelerator.is_local_main_process:
        bar.write(
            f"step {evaluation.step}: validation loss {evaluation.val_loss:.3f} (perplexity {evaluation.perplexity:.1f}); "
            f"sample: {evaluation.sample!r}"
        )


def report_nonfinite_loss(run: TrainingRun, step: GradientStep) -> None:
    run.accelerator.print(
        f"Stopping: the training loss is {step.train_loss} (gradient norm {step.grad_norm}) at step {run.progress.step + 1}. "
        "Lower --learning_rate, use --mixed_precision bf16 or no instead of fp16, or pass "
        f"--skip_nonfinite_steps; the newest complete checkpoint is in {run.checkpoints_dir}",
        file=sys.stderr,
    )  # fmt: skip


def report_stop(run: TrainingRun) -> None:
    if run.accelerator.is_main_process:
        plot_loss_curve(run.metrics.records(), run.output_dir / "loss_curve.png", run.unigram_baseline)
    run.accelerator.print(
        f"Stopped by a signal after step {run.progress.step}; checkpoint saved in {run.checkpoints_dir}. "
        "Continue with --resume_from_checkpoint latest"
    )
