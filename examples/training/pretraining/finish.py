"""The end of a pretraining run that reached --max_steps: the final model, its card, the loss curve, a summary."""

from __future__ import annotations

import math
import time
from dataclasses import asdict

from gptcore.training.pretraining.evaluation import Evaluation, evaluate_and_sample
from gptcore.training.pretraining.report import plot_loss_curve, write_training_card
from gptcore.training.pretraining.state import TrainingRun


def finish(run: TrainingRun, evaluation: Evaluation | None, started: float) -> None:
    """Save `final/` and report; `started` is when the run began (time.perf_counter), for the wall time."""
    if evaluation is None:  # resumed from a run that had already finished: no step was left to evaluate
        evaluation = evaluate_and_sample(run)
    save_final_model(run)
    if run.accelerator.is_main_process:
        report(run, evaluation, started)
    run.accelerator.end_training()


def save_final_model(run: TrainingRun) -> None:
    """save_pretrained (safetensors) plus the tokenizer, loadable with AutoModelForCausalLM.from_pretrained."""
    accelerator, model, final_dir = run.accelerator, run.unwrapped_model, run.output_dir / "final"
    accelerator.wait_for_everyone()
    state_dict = accelerator.get_state_dict(run.model)  # gathers FSDP shards; every process takes part
    model.save_pretrained(final_dir, is_main_process=accelerator.is_main_process, state_dict=state_dict)
    if accelerator.is_main_process:
        run.tokenizer.model_max_length = model.config.n_positions
        run.tokenizer.save_pretrained(final_dir)


def report(run: TrainingRun, evaluation: Evaluation, started: float) -> None:
    """Model card, loss curve and the closing lines; on the main process."""
    records, baseline, log = run.metrics.records(), run.unigram_baseline, run.accelerator.print
    final_metrics = {
        "steps": run.progress.step,
        "tokens seen": run.progress.tokens_seen,
        "final train loss": next((record["train_loss"] for record in reversed(records) if "train_loss" in record), float("nan")),
        "final validation loss": evaluation.val_loss,
        "final validation perplexity": evaluation.perplexity,
        "unigram baseline (validation)": baseline,
        "wall time (s)": round(time.perf_counter() - started, 1),
    }
    settings = {
        **asdict(run.model_args), **vars(run.args),
        "num_processes": run.accelerator.num_processes, "mixed_precision": run.accelerator.mixed_precision,
    }  # fmt: skip
    final_dir = run.output_dir / "final"
    write_training_card(final_dir, run.unwrapped_model.config.to_dict(), run.num_parameters, settings, final_metrics)
    plot_loss_curve(records, run.output_dir / "loss_curve.png", baseline)
    log(f"\nValidation loss {evaluation.val_loss:.3f} nats/token (perplexity {evaluation.perplexity:.1f}) "
        f"vs unigram baseline {baseline:.3f} (perplexity {math.exp(baseline):.1f})")  # fmt: skip
    log(f"Sample after {run.progress.step} steps: {evaluation.sample!r}")
    outputs = "final/ (model, tokenizer, model card), metrics.jsonl, loss_curve.png"
    if run.checkpoints_dir.is_dir():
        outputs += ", checkpoints/ (training state for --resume_from_checkpoint)"
    log(f"Done in {time.perf_counter() - started:.0f} s. Outputs in {run.output_dir}/: {outputs}")
